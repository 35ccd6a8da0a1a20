"""The hints of the commands that load trained models name what the user gave and that command's own
flags: a raw dataset or an exported model where a work folder was expected."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.cli import main
from satnet.io.workdir import EXPORT_FILE
from satnet.synthetic import make_dataset_3d


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return make_dataset_3d(tmp_path_factory.mktemp("hints") / "raw", num_cases=2, num_test=1)


@pytest.fixture
def exported(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / EXPORT_FILE).write_text("{}")
    return model


def error_of(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 1
    return capsys.readouterr().err


def test_a_raw_dataset_given_as_the_model_says_what_m_expects(raw, tmp_path, capsys):
    error = error_of(["predict", "-i", str(raw / "imagesTs"), "-o", str(tmp_path / "out"), "-m", str(raw)], capsys)
    assert (f"{raw} is a raw dataset (it holds dataset.json): -m expects a work folder made by plan-and-preprocess, "
            f"not the raw dataset; make one with `satnet plan-and-preprocess {raw} -o WORK_DIR`") in error
    assert f"-o {raw}` first" not in error and not (tmp_path / "out").exists()
    error = error_of(["train", str(raw), "3d", "0", "--validation-only"], capsys)
    assert "WORK_DIR must be a work folder made by plan-and-preprocess, not the raw dataset" in error


def test_an_exported_model_given_where_a_work_folder_is_needed_names_the_command_that_takes_it(
        exported, raw, tmp_path, capsys):
    takes = f"{exported} is a model exported by `satnet export` (it holds {EXPORT_FILE}), not a work folder: only " \
            f"`satnet predict -m {exported}` takes it;"
    for argv in (["export", "-m", str(exported), "-c", "3d", "-o", str(tmp_path / "again")],
                 ["visualize", "-m", str(exported), "-c", "3d", "-f", "0", "-i",
                  str(raw / "imagesTs" / "case_002_0000.nii.gz"), "-o", str(tmp_path / "pictures")]):
        error = error_of(argv, capsys)
        assert f"{takes} -m expects the work folder the model was trained in" in error, argv
        assert "plan-and-preprocess" not in error
    error = error_of(["find-best", str(exported)], capsys)
    assert f"{takes} WORK_DIR must be the work folder the model was trained in" in error
    assert not (tmp_path / "again").exists() and not (tmp_path / "pictures").exists()
