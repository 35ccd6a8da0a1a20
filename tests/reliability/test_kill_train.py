"""SIGKILL inside checkpoint and log writes, twice, then `--resume`: training continues from the last complete
checkpoint and ends with exactly the weights of an uninterrupted run (tests/training/test_trainer_resume.py
kills at a random moment; these kill inside the writes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from satnet.io.checkpoints import load_checkpoint
from satnet.training.options import TrainOptions
from satnet.training.trainer import fold_dir_of, train
from tests.reliability.faults import run_killed, stray_temporaries
from tests.training.trainer_work_dir import RUN, assert_same_run, make_work_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def logged_epochs(fold_dir: Path) -> int:
    return len(json.loads((fold_dir / "training_log.json").read_text())["epochs"])


def train_argv(work_dir, *extra: str) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RUN.items()]
    return ["train", str(work_dir), "3d", "0", "--device", "cpu", "--no-validation", "-q", *flags, *extra]


@pytest.mark.slow
def test_killed_in_checkpoint_and_log_writes_resumes_to_identical_weights(uninterrupted, tmp_path):
    work_dir = make_work_dir(tmp_path)
    fold_dir = fold_dir_of(work_dir, "3d", 0)
    latest = fold_dir / "checkpoint_latest.pt"

    run_killed(train_argv(work_dir), kill="checkpoint_latest.pt:2")  # epoch 2's checkpoint, half written
    assert load_checkpoint(latest)["epoch"] == 1
    assert [p.split(".")[1] for p in stray_temporaries(fold_dir)] == ["checkpoint_latest"]

    run_killed(train_argv(work_dir, "--resume"), kill="training_log.json:1")  # epoch 2 saved, its log not yet
    assert load_checkpoint(latest)["epoch"] == 2
    assert logged_epochs(fold_dir) == 1  # the log on disk lags; the checkpoint holds the true one
    assert [p.split(".")[1] for p in stray_temporaries(fold_dir)] == ["training_log"]

    result = train(work_dir, "3d", 0, TrainOptions(**RUN), resume=True, progress_bar=False)
    assert_same_run(load_checkpoint(result.checkpoint_final), uninterrupted)
    assert logged_epochs(fold_dir) == RUN["epochs"]
    assert stray_temporaries(fold_dir) == []
