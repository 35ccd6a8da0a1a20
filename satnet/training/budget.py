"""The learning-rate schedule, and training for a wall-clock budget (`satnet train --time-budget MINUTES`).

The budget counts the wall time of the epochs: their training and validation batches and the
checkpoint, log and plot writes between them (each epoch's `seconds` and `overhead_seconds` in
training_log.json), not start-up or the final validation that follows. Because the time comes
from the log, a resumed run continues with what is left of it.

- Learning rate: the poly schedule over time, lr * (1 - elapsed / budget) ** exponent, set at
  each epoch start (a constant schedule stays constant); when `--epochs` would end the run
  first (a fast machine), epoch / epochs is further along and is used instead, so the schedule
  reaches its end at whichever limit comes first.
- Stopping: before each epoch, the run stops when the time spent, plus half of the recent
  epochs' median length, reaches the budget. It so ends within half an epoch of the budget on
  either side (one epoch when epochs vary), and its last epoch trains at the schedule's end.
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from satnet.training.options import TrainOptions

RECENT_EPOCHS = 3  # epochs whose median length predicts the next one's


def fraction_spent(seconds: Sequence[float], budget_minutes: float) -> float:
    """Elapsed training time as a fraction of the budget, capped at 1."""
    return min(1.0, sum(seconds) / (budget_minutes * 60.0))


def budget_reached(seconds: Sequence[float], budget_minutes: float) -> bool:
    """Whether the next epoch should not start, given the completed epochs' wall seconds."""
    if not seconds:
        return False
    expected = statistics.median(seconds[-RECENT_EPOCHS:])
    return sum(seconds) + expected / 2 >= budget_minutes * 60.0


def describe(seconds: Sequence[float], iterations_per_epoch: int, budget_minutes: float) -> str:
    """'42 epochs (1,050 iterations) in 29.6 of 30 minutes'."""
    epochs = len(seconds)
    return (f"{epochs} epochs ({epochs * iterations_per_epoch:,} iterations) in {sum(seconds) / 60:.1f} of "
            f"{budget_minutes:g} minutes")


def learning_rate(o: "TrainOptions", epoch: int, seconds: list[float] | None = None) -> float:
    """The learning rate of `epoch` (0-based): poly lr * (1 - epoch / epochs) ** exponent, or constant.

    With a time budget the poly schedule runs over time (module docstring): `seconds` are the completed
    epochs' wall times."""
    if o.lr_schedule != "poly":
        return o.lr
    if o.time_budget is not None:  # whichever limit is nearer, time or --epochs, sets how far the schedule is
        spent = max(fraction_spent(seconds or [], o.time_budget), epoch / o.epochs)
        return o.lr * (1.0 - spent) ** o.poly_exponent
    return o.lr * (1.0 - epoch / o.epochs) ** o.poly_exponent
