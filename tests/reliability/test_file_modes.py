"""Every output gets the mode the umask gives an ordinary new file (0o666 & ~umask), not mkstemp's 0600.

Plans, splits, fingerprint, preprocessed cases, checkpoints, training_log.json, progress.png, the
validation summary, predictions, evaluation summaries and pictures: a colleague in the group must be
able to read them. The umask here is 027, so the expected mode 0640 differs from both 0600 and 0644.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from satnet.cli import main
from satnet.contracts import atomic_write_json, new_file_mode
from satnet.synthetic import make_dataset_3d

UMASK = 0o027


@pytest.fixture
def umask():
    old = os.umask(UMASK)
    try:
        yield 0o666 & ~UMASK
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_new_file_mode_follows_the_umask(umask, tmp_path):
    assert new_file_mode() == umask == 0o640
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640


@pytest.mark.slow
def test_every_output_of_the_pipeline_gets_the_umasks_mode(umask, tmp_path, capsys):
    raw = make_dataset_3d(tmp_path / "raw", num_cases=3, num_test=1)
    work, masks, pictures = tmp_path / "work", tmp_path / "masks", tmp_path / "pictures"
    for argv in (
        ["plan-and-preprocess", raw, "-o", work, "-j", "1", "--configs", "3d", "-q"],
        ["train", work, "3d", "0", "--epochs", "1", "--iterations-per-epoch", "1", "--val-iterations", "1",
         "--workers", "0", "-q"],
        ["predict", "-i", raw / "imagesTr", "-o", masks, "-m", work, "-c", "3d", "-f", "0", "-q"],
        ["evaluate", raw / "labelsTr", masks, "-q"],
        ["visualize", "-m", work, "-c", "3d", "-f", "0", "-i", next((raw / "imagesTs").iterdir()), "-o", pictures,
         "-q"],
    ):
        assert main([str(a) for a in argv]) == 0, argv
    capsys.readouterr()
    outputs = {**_modes(work), **{f"masks/{k}": v for k, v in _modes(masks).items()},
               **{f"pictures/{k}": v for k, v in _modes(pictures).items()}}
    kinds = {Path(name).suffix for name in outputs}
    assert {".json", ".pt", ".png", ".npy", ".gz"} <= kinds, kinds
    wrong = {name: oct(mode) for name, mode in outputs.items() if mode != umask}
    assert not wrong, wrong
