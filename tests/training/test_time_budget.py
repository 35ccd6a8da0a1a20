"""`satnet train --time-budget`: the schedule over time, stopping within one epoch, resume with what is left."""
from __future__ import annotations

import json

import pytest

from satnet.errors import ConfigError
from satnet.training.budget import budget_reached, fraction_spent
from satnet.training.options import TrainOptions
from satnet.training.trainer import fold_dir_of, train
from tests.training.trainer_work_dir import make_work_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

BUDGET_MINUTES = 0.08  # 4.8 s: about 10 epochs on the tiny work folder
# One iteration per epoch: an epoch then trains for about 0.05 s and writes its checkpoints and progress.png for
# about 0.4 s. When the budget left the writes out, 100 such epochs took 50 s of a 4.8 s budget.
ITERATIONS = 1


def test_the_next_epoch_starts_only_when_half_of_it_fits():
    assert not budget_reached([], 1.0)
    assert not budget_reached([20.0, 20.0], 1.0)  # 40 s spent + 10 expected < 60
    assert budget_reached([20.0, 20.0, 15.0], 1.0)  # 55 + 10 >= 60
    assert fraction_spent([30.0], 1.0) == 0.5 and fraction_spent([90.0], 1.0) == 1.0


def test_a_non_positive_budget_is_refused():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="time_budget"):
            TrainOptions(time_budget=bad)


def _log(work_dir) -> dict:
    return json.loads((fold_dir_of(work_dir, "3d", 0) / "training_log.json").read_text())


def _wall_seconds(log: dict) -> list[float]:
    """Each epoch's training, validation and writes: what the budget counts."""
    return [e["seconds"] + e["overhead_seconds"] for e in log["epochs"]]


def test_training_stops_within_one_epoch_of_the_budget_at_the_schedules_end(tmp_path):
    work_dir = make_work_dir(tmp_path, configs=("3d",))
    options = TrainOptions(epochs=1000, iterations_per_epoch=ITERATIONS, val_iterations=1, workers=0, seed=0,
                           time_budget=BUDGET_MINUTES)
    result = train(work_dir, "3d", 0, options, progress_bar=False)
    log = _log(work_dir)
    seconds = _wall_seconds(log)
    assert 3 <= len(seconds) < 1000 and result.epochs_completed == len(seconds)
    assert abs(sum(seconds) - BUDGET_MINUTES * 60) <= max(seconds)
    overheads = [e["overhead_seconds"] for e in log["epochs"]]
    assert all(s > 0.0 for s in overheads)  # every epoch's writes count, the last one's too
    lrs = [e["lr"] for e in log["epochs"]]
    assert lrs[0] == 0.01 and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] <= 0.01 * (1.5 * max(seconds) / (BUDGET_MINUTES * 60)) ** 0.9  # within 1.5 epochs of the end
    assert log["iterations"] == ITERATIONS * len(seconds) and log["time_budget_minutes"] == BUDGET_MINUTES


def test_resume_continues_with_what_is_left_of_the_budget(tmp_path):
    work_dir = make_work_dir(tmp_path, configs=("3d",))
    common = dict(iterations_per_epoch=ITERATIONS, val_iterations=1, workers=0, seed=0, time_budget=BUDGET_MINUTES)
    train(work_dir, "3d", 0, TrainOptions(epochs=2, **common), progress_bar=False)  # stopped early by --epochs
    first = _wall_seconds(_log(work_dir))
    fold_dir = fold_dir_of(work_dir, "3d", 0)
    (fold_dir / "checkpoint_final.pt").unlink()  # as if the first run had been killed after its second epoch
    train(work_dir, "3d", 0, TrainOptions(epochs=1000, **common), resume=True, given=["epochs"], progress_bar=False)
    log = _log(work_dir)
    seconds = _wall_seconds(log)
    assert seconds[:1] == first[:1] and len(seconds) > 2
    # the second epoch's writes are missing from its checkpoint's log, which a resume continues
    assert log["epochs"][1]["overhead_seconds"] == 0.0 and log["epochs"][2]["overhead_seconds"] > 0.0
    assert abs(sum(seconds) - BUDGET_MINUTES * 60) <= max(seconds)  # the budget counts both runs' epochs
