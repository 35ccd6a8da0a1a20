from __future__ import annotations

import json

import pytest

from satnet.cli import main
from satnet.demo import DemoSettings, run_demo


@pytest.mark.slow
def test_demo_runs_every_step_end_to_end(tmp_path):
    # the real demo trains 20 epochs x 25 iterations (about 3 minutes); this checks the flow at a tiny size
    settings = DemoSettings(num_train=5, num_test=2, shape=(8, 24, 24), epochs=1, iterations_per_epoch=2,
                            val_iterations=1)
    assert run_demo(tmp_path, main, settings) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_cases"] == 2 and summary["labels"] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "predictions").glob("*.nii.gz")) == ["case_005.nii.gz", "case_006.nii.gz"]
    # a second run reuses the dataset and the trained fold
    assert run_demo(tmp_path, main, settings) == 0


@pytest.mark.slow
def test_an_interrupted_demo_continues_its_training_when_rerun(tmp_path, monkeypatch):
    from satnet.training import trainer

    settings = DemoSettings(num_train=5, num_test=2, shape=(8, 24, 24), epochs=2, iterations_per_epoch=2,
                            val_iterations=1, time_budget_minutes=None)
    finish = trainer._finish_epoch

    def interrupted_after_the_first_epoch(run, o, ctx, state, record):
        finish(run, o, ctx, state, record)
        if state.epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C in the second epoch

    monkeypatch.setattr(trainer, "_finish_epoch", interrupted_after_the_first_epoch)
    assert run_demo(tmp_path, main, settings) != 0
    monkeypatch.setattr(trainer, "_finish_epoch", finish)
    assert run_demo(tmp_path, main, settings) == 0  # before: "already holds a training run: add --resume"
    log = json.loads((tmp_path / "work" / "results" / "3d" / "fold_0" / "training_log.json").read_text())
    assert len(log["epochs"]) == 2
