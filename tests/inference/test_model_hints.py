"""The hints of the commands that load trained models name what the user gave and that command's own
flags: a raw dataset or an exported model where a work folder was expected, a fold that splits.json
does not have, and how to use the trained folds instead (predict's -f is optional, visualize's is
required, train takes FOLD)."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.cli import main
from satnet.io.workdir import EXPORT_FILE
from satnet.planning.splits import make_splits, save_splits
from satnet.synthetic import make_dataset_3d
from tests.inference.fakes import add_checkpoint, make_work_dir, tiny_plans


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


def test_a_folder_of_a_raw_dataset_given_as_the_model_names_the_dataset(raw, tmp_path, capsys):
    error = error_of(["export", "-m", str(raw / "imagesTr"), "-c", "3d", "-o", str(tmp_path / "out")], capsys)
    assert (f"{raw / 'imagesTr'} is the imagesTr folder of the raw dataset {raw}: -m expects a work folder made by "
            f"plan-and-preprocess, not the raw dataset; make one with `satnet plan-and-preprocess {raw} -o WORK_DIR`"
            ) in error


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


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Four folds in splits.json; folds 0 and 1 of 3d trained."""
    work_dir = make_work_dir(tmp_path_factory.mktemp("hints_work"))
    save_splits(make_splits([f"case_{i}" for i in range(8)], num_folds=4), work_dir)
    add_checkpoint(work_dir, "3d", 0, seed=0)
    add_checkpoint(work_dir, "3d", 1, seed=1)
    return work_dir


def test_a_fold_beyond_splits_json_names_the_valid_folds_not_a_train_command(work, raw, tmp_path, capsys):
    error = error_of(["predict", "-i", str(raw / "imagesTs"), "-o", str(tmp_path / "out"), "-m", str(work), "-c", "3d",
                      "-f", "0", "7", "--no-tta"], capsys)
    assert (f"fold 7: {work / 'splits.json'} has no fold 7, only folds 0..3 (and all, trained on every case); "
            f"choose one of those") in error
    assert "satnet train" not in error and "(trained folds: 0, 1; leave out -f to use them)" in error
    error = error_of(["train", str(work), "3d", "7", "--validation-only"], capsys)
    assert "has no fold 7, only folds 0..3" in error


def test_the_trained_folds_hint_speaks_the_commands_language(work, raw, tmp_path, capsys):
    scan = str(raw / "imagesTs" / "case_002_0000.nii.gz")
    error = error_of(["visualize", "-m", str(work), "-c", "3d", "-f", "3", "-i", scan, "-o", str(tmp_path / "p")],
                     capsys)
    assert f"fold 3: {work / 'results' / '3d' / 'fold_3' / 'checkpoint_final.pt'} not found; train it with " \
           f"`satnet train {work} 3d 3`" in error
    assert error.rstrip().endswith("(trained folds: 0, 1; give one of them with -f)")
    error = error_of(["train", str(work), "3d", "3", "--validation-only"], capsys)
    assert error.rstrip().endswith("(trained folds: 0, 1; give one of them as FOLD)") and "leave out -f" not in error
    error = error_of(["export", "-m", str(work), "-c", "3d", "-f", "3", "-o", str(tmp_path / "model")], capsys)
    assert error.rstrip().endswith("(trained folds: 0, 1; leave out -f to use them)")
