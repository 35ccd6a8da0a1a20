"""Planning again never changes the plan of a configuration that has trained folds (satnet/preprocessing/stage.py):
plans.json must keep describing the checkpoints under results/<name>."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from satnet.errors import InputError
from satnet.planning.planner import PlannerOptions
from satnet.preprocessing import stage
from satnet.synthetic import make_dataset_3d


@pytest.fixture
def planned(tmp_path) -> tuple[Path, Path]:
    raw = make_dataset_3d(tmp_path / "raw", num_cases=3)
    work = tmp_path / "work"
    stage.plan(raw, work, PlannerOptions(configs=["3d"]), workers=1)
    return raw, work


def planned_earlier_with_batch(work: Path, batch: int) -> str:
    """Rewrite plans.json as if configuration 3d had been planned with another batch; its text."""
    plans = json.loads((work / "plans.json").read_text())
    plans["configurations"]["3d"]["batch_size"] = batch
    text = json.dumps(plans, indent=2)
    (work / "plans.json").write_text(text)
    return text


def test_a_trained_configuration_keeps_its_plan(planned):
    raw, work = planned
    fold = work / "results" / "3d" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pt").write_bytes(b"trained")
    text = planned_earlier_with_batch(work, 1)
    with pytest.raises(InputError, match=r"configuration '3d' has trained folds in .*results/3d, and this plan would "
                                         r"change its batch_size .* move .* away to plan '3d' anew"):
        stage.plan(raw, work, PlannerOptions(configs=["3d"]), workers=1)
    assert (work / "plans.json").read_text() == text  # refused before anything was written


def test_an_untrained_or_unchanged_configuration_is_planned_again(planned):
    raw, work = planned
    planned_earlier_with_batch(work, 1)  # no checkpoint: the new plan replaces it
    _, plans = stage.plan(raw, work, PlannerOptions(configs=["3d"]), workers=1)
    assert json.loads((work / "plans.json").read_text())["configurations"]["3d"]["batch_size"] == plans.configurations["3d"].batch_size != 1
    fold = work / "results" / "3d" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pt").write_bytes(b"trained")
    stage.plan(raw, work, PlannerOptions(configs=["3d"]), workers=1)  # the same plan again: allowed
    stage.plan(raw, work, PlannerOptions(configs=["3d"], skip="org"), workers=1)  # another variant beside it
    assert set(json.loads((work / "plans.json").read_text())["configurations"]) == {"3d", "3d_org"}
