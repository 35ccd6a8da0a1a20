"""Resume: an interrupted run (an exception mid-epoch, or SIGKILL) resumes to exactly the weights of an
uninterrupted one on the CPU with --workers 0; a failed checkpoint write leaves the previous one intact."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import satnet.io.checkpoints
import satnet.training.loop
from satnet.contracts import atomic_write
from satnet.errors import ConfigError
from satnet.io.checkpoints import load_checkpoint
from satnet.training.options import TrainOptions
from satnet.training.trainer import fold_dir_of, train
from tests.training.trainer_work_dir import RUN, assert_same_run, make_work_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]


def test_resume_after_an_interruption_mid_epoch_ends_with_identical_weights(uninterrupted, tmp_path, monkeypatch):
    work_dir = make_work_dir(tmp_path)
    real_step, steps = satnet.training.loop.train_step, []

    def step_then_stop(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2 * RUN["iterations_per_epoch"] + 2:  # the second step of the third epoch
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(satnet.training.loop, "train_step", step_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(work_dir, "3d", 0, TrainOptions(**RUN), progress_bar=False)
    monkeypatch.setattr(satnet.training.loop, "train_step", real_step)
    latest = load_checkpoint(fold_dir_of(work_dir, "3d", 0) / "checkpoint_latest.pt")
    assert latest["epoch"] == 2  # only the epoch in progress was lost
    result = train(work_dir, "3d", 0, TrainOptions(**RUN), resume=True, progress_bar=False)
    assert_same_run(load_checkpoint(result.checkpoint_final), uninterrupted)


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_identical_weights(uninterrupted, tmp_path):
    work_dir = make_work_dir(tmp_path)
    latest = fold_dir_of(work_dir, "3d", 0) / "checkpoint_latest.pt"
    command = [sys.executable, "-m", "satnet.cli", "train", str(work_dir), "3d", "0", "--device", "cpu", "-q"]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in RUN.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not latest.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # during epoch 2, or while writing its checkpoint
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    assert not (latest.parent / "checkpoint_final.pt").exists(), "the run finished before it was killed"
    assert load_checkpoint(latest)["epoch"] >= 1
    result = train(work_dir, "3d", 0, TrainOptions(**RUN), resume=True, progress_bar=False)
    assert_same_run(load_checkpoint(result.checkpoint_final), uninterrupted)


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    work_dir = make_work_dir(tmp_path)
    train(work_dir, "3d", 0, TrainOptions(**{**RUN, "epochs": 1}), progress_bar=False)
    fold_dir = fold_dir_of(work_dir, "3d", 0)
    before = {p.name: p.read_bytes() for p in fold_dir.glob("checkpoint_*.pt")}

    def half_then_fail(path, write):
        def write_half(f):
            f.write(b"\0" * 4096)  # part of the new file is on disk when the process dies
            raise OSError(28, "No space left on device")
        return atomic_write(path, write_half)

    monkeypatch.setattr(satnet.io.checkpoints, "atomic_write", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        train(work_dir, "3d", 0, TrainOptions(**RUN), resume=True, progress_bar=False)
    assert {p.name: p.read_bytes() for p in fold_dir.glob("checkpoint_*.pt")} == before
    assert not list(fold_dir.glob(".*tmp"))
    assert load_checkpoint(fold_dir / "checkpoint_latest.pt")["epoch"] == 1


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path):
    work_dir = make_work_dir(tmp_path)
    train(work_dir, "3d", 0, TrainOptions(**{**RUN, "epochs": 2}), progress_bar=False)
    (fold_dir_of(work_dir, "3d", 0) / "checkpoint_final.pt").unlink()  # as if stopped before the end
    with pytest.raises(ConfigError, match="--epochs 1 is fewer than the 2 epochs"):
        train(work_dir, "3d", 0, TrainOptions(**{**RUN, "epochs": 1}), resume=True, progress_bar=False, given=["epochs"])
