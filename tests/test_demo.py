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
