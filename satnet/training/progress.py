"""The training log: one record per epoch, as a log line, training_log.json and progress.png.

training_log.json (written atomically after every epoch):

    {"format_version": 1, "config": "3d", "fold": "0", "class_names": ["left", "right"],
     "iterations": 750, "time_budget_minutes": 30.0,
     "epochs": [{"epoch": 0, "train_loss": -0.31, "val_loss": -0.52, "pseudo_dice": [0.71, 0.66],
                 "mean_dice": 0.685, "ema_dice": 0.685, "lr": 0.01, "seconds": 81.2,
                 "overhead_seconds": 0.4, "gates_off": {"skip0": 0.0, ...}}, ...]}

Losses follow nnU-Net's sign (Dice term negative, so lower is better and -1 + CE is perfect).
`pseudo_dice` is per foreground class on the epoch's validation patches (null for a class absent
from both targets and predictions), `mean_dice` its mean over the non-null classes,
`ema_dice` the moving average that picks checkpoint_best, `lr` the learning rate of the
epoch, `seconds` its wall time (training and validation), `overhead_seconds` the wall time after
it spent writing its checkpoints, log and plot (0 in the copy of the log inside the epoch's own
checkpoints, which are written before it is known), `gates_off` the fraction of channels each SAT / ST
gate has switched off (W <= 0), empty for ORG / AT networks. `iterations` counts the training
batches of the completed epochs and `time_budget_minutes` is `--time-budget` (null without one);
logs written before these fields existed lack them (`overhead_seconds` then reads as 0).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from satnet.contracts import Contract, atomic_write, atomic_write_json
from satnet.io.workdir import PROGRESS_PLOT_FILE, TRAINING_LOG_FILE



@dataclass
class EpochRecord(Contract):
    """One epoch's numbers; see the module docstring. nan values are stored as None (JSON null)."""

    epoch: int
    train_loss: float | None
    val_loss: float | None
    pseudo_dice: list[float | None]
    mean_dice: float | None
    ema_dice: float | None
    lr: float
    seconds: float
    gates_off: dict[str, float] = field(default_factory=dict)
    overhead_seconds: float = 0.0

    @property
    def wall_seconds(self) -> float:
        """What the epoch cost in wall time, its writes included: what a time budget counts."""
        return self.seconds + self.overhead_seconds


@dataclass
class TrainingLog(Contract):
    """Every completed epoch of one fold, in order."""

    FORMAT_VERSION = 1

    config: str
    fold: str
    class_names: list[str]
    epochs: list[EpochRecord] = field(default_factory=list)
    iterations: int | None = None
    time_budget_minutes: float | None = None
    format_version: int = 1

    def append(self, record: EpochRecord) -> None:
        if record.epoch != len(self.epochs):
            raise ValueError(f"epoch {record.epoch} appended after {len(self.epochs)} epochs")
        self.epochs.append(record)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no nan: a nan (or None) becomes None, anything else a float."""
    return None if value is None or math.isnan(value) else float(value)


def format_epoch(record: EpochRecord, class_names: list[str], total_epochs: int) -> str:
    """The one log line of an epoch, e.g.
    'epoch 3/1000: train -0.412, val -0.533, dice left 0.80 right 0.77 (ema 0.74), lr 0.00997, 81.2 s'."""
    def number(v: float | None, digits: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    dice = " ".join(f"{name} {number(d, 2)}" for name, d in zip(class_names, record.pseudo_dice))
    line = (
        f"epoch {record.epoch + 1}/{total_epochs}: train {number(record.train_loss)}, val {number(record.val_loss)}, "
        f"dice {dice} (ema {number(record.ema_dice)}), lr {record.lr:.3g}, {record.seconds:.1f} s"
    )
    if record.gates_off:
        line += ", skip channels switched off (select weight <= 0): " + _gates_off(record.gates_off)
    return line


MAX_GATES_LISTED = 8


def _gates_off(gates_off: dict[str, float]) -> str:
    """Each gate's fraction of channels off, or for many gates (a Tiramisu has ~100) a summary;
    training_log.json always has every gate."""
    if len(gates_off) <= MAX_GATES_LISTED:
        return ", ".join(f"{name} {off:.0%}" for name, off in gates_off.items())
    values = list(gates_off.values())
    worst = max(gates_off, key=gates_off.get)
    return f"{sum(values) / len(values):.0%} on average over {len(values)} gates, most in {worst} {gates_off[worst]:.0%}"


def save_log(log: TrainingLog, fold_dir: Path) -> Path:
    return atomic_write_json(Path(fold_dir) / TRAINING_LOG_FILE, log)


def plot_progress(log: TrainingLog, fold_dir: Path) -> Path:
    """Draw losses, pseudo-Dice (per class, mean and EMA) and lr over epochs into progress.png, atomically."""
    fig = progress_figure(log)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    data = buf.getvalue()
    return atomic_write(Path(fold_dir) / PROGRESS_PLOT_FILE, lambda f: f.write(data))


def progress_figure(log: TrainingLog):
    """The matplotlib Figure of progress.png (three axes sharing the epoch axis)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    epochs = [r.epoch + 1 for r in log.epochs]
    nan = float("nan")

    def series(values: list[float | None]) -> list[float]:
        return [nan if v is None else v for v in values]

    fig = Figure(figsize=(10, 9))  # fixed margins: constrained layout took half the drawing time
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.06, top=0.95, hspace=0.12)
    loss_ax, dice_ax, lr_ax = fig.subplots(3, 1, sharex=True)
    dot = {"marker": "o", "markersize": 3}  # a run of one epoch has one point per line, which a bare line hides
    loss_ax.plot(epochs, series([r.train_loss for r in log.epochs]), label="train loss", **dot)
    loss_ax.plot(epochs, series([r.val_loss for r in log.epochs]), label="validation loss", **dot)
    loss_ax.set_ylabel("loss (Dice + CE)")
    for k, name in enumerate(log.class_names):
        dice_ax.plot(epochs, series([r.pseudo_dice[k] for r in log.epochs]), lw=0.8, alpha=0.6, label=name, **dot)
    dice_ax.plot(epochs, series([r.mean_dice for r in log.epochs]), color="k", lw=1, label="mean", **dot)
    dice_ax.plot(epochs, series([r.ema_dice for r in log.epochs]), color="k", lw=2, ls="--", label="mean (EMA)", **dot)
    dice_ax.set_ylabel("pseudo-Dice")
    lr_ax.plot(epochs, [r.lr for r in log.epochs], label="learning rate", **dot)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("epoch")
    for ax in (loss_ax, dice_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{log.config} fold {log.fold}")
    return fig
