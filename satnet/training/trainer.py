"""`satnet train WORK_DIR CONFIG FOLD`: train one configuration on one cross-validation fold.

    result = train(work_dir, "3d", 0, TrainOptions(epochs=50))

reads WORK_DIR/plans.json, splits.json and the configuration's preprocessed cases (satnet.training.fold_run
checks them before anything is built), and writes
WORK_DIR/results/<CONFIG>/fold_<k>/:

- checkpoint_latest.pt after every epoch, checkpoint_best.pt whenever the moving average of the
  validation pseudo-Dice improves, checkpoint_final.pt at the end (satnet.io.checkpoints' contract);
- training_log.json and progress.png, rewritten after every epoch (satnet.training.progress).

Every write is atomic and happens after the epoch it describes, in the order best, latest, log,
plot: a run killed at any moment resumes (`resume=True`) from the last completed epoch. The
checkpoint's log is the one resumed from, so the files never disagree with the weights.

Under torchrun each rank runs this same function (satnet.training.distributed); only rank 0 writes.
Final validation of the fold (predicting its validation cases with satnet.inference) is not done
here: it runs on the `TrainResult` this returns.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import torch
from torch import nn

from satnet import __version__
from satnet.contracts import remove_temporaries
from satnet.io.checkpoints import CheckpointMeta, save_checkpoint
from satnet.io.workdir import WorkDir
from satnet.nets import build_network, gate_fraction_off
from satnet.planning.plans import ConfigurationPlan, Plans
from satnet.training import budget as time_budget
from satnet.training import distributed as ddp
from satnet.training.checkpointing import (
    capture_rng,
    checkpoint_file,
    load_for_resume,
    portable_state_dict,
    restore_rng,
)
from satnet.training.fold_run import (
    FoldRun,
    load_fold_run,
    refuse_existing_run,
    resolve_run_options,
    with_checkpoint_plans,
)
from satnet.training.loop import (
    TORCH_STREAM,
    EpochPipelines,
    Precision,
    count_outputs,
    epoch_seed,
    make_precision,
    per_rank_plan,
    train_epoch,
    validate_epoch,
)
from satnet.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
from satnet.training.metrics import ExponentialMovingAverage, mean_ignoring_nan
from satnet.training.options import TrainOptions, precision_warning
from satnet.training.progress import EpochRecord, TrainingLog, finite_or_none, format_epoch, plot_progress, save_log

logger = logging.getLogger(__name__)

EMA_DECAY = 0.9  # of the mean validation pseudo-Dice that picks checkpoint_best (nnU-Net)


def fold_dir_of(work_dir: str | Path, config: str, fold: int | str) -> Path:
    """WORK_DIR/results/<config>/fold_<fold>."""
    return WorkDir(work_dir).fold_dir(config, fold)


@dataclass
class TrainResult:
    """What a finished `train` hands on (to final validation, or a demo).

    network: the unwrapped model with the final weights, in eval mode, on the training device.
    plans / plan: the plans the run trained with (from the checkpoint when resumed) and its
    configuration; data_dir: the configuration's preprocessed cases; val_cases: the fold's
    validation case ids. is_main: False on DDP ranks other than 0 (which should not write).
    """

    fold_dir: Path
    network: nn.Module
    plans: Plans
    plan: ConfigurationPlan
    data_dir: Path
    val_cases: list[str]
    options: TrainOptions
    epochs_completed: int
    is_main: bool = True

    @property
    def checkpoint_final(self) -> Path:
        return checkpoint_file(self.fold_dir, "final")


@dataclass
class _State:
    """Everything that changes while training; what a checkpoint stores."""

    model: nn.Module  # DDP-wrapped when distributed
    network: nn.Module  # the model itself
    optimizer: torch.optim.Optimizer
    precision: Precision
    log: TrainingLog
    ema: ExponentialMovingAverage
    best_ema: float | None = None
    epoch: int = 0  # epochs completed


def train(
    work_dir: str | Path,
    config: str,
    fold: int | str,
    options: TrainOptions | None = None,
    *,
    resume: bool = False,
    given: Collection[str] | None = None,
    progress_bar: bool = True,
) -> TrainResult:
    """Train configuration `config` on fold `fold` (0..n-1 from splits.json, or "all"); see the module docstring.

    resume: continue from checkpoint_latest.pt (optimiser, learning rate, epoch, RNG states). The
    run keeps the options it started with; `given` names the options set explicitly (None: those
    differing from TrainOptions' defaults), which may change only epochs, val_iterations and
    precision (device and workers always come from `options`). Returns a TrainResult on every
    rank; with fold "all" the validation cases are the training cases.
    """
    run = load_fold_run(work_dir, config, fold)
    checkpoint = load_for_resume(run.fold_dir, config, run.fold) if resume else None
    if checkpoint is None:
        refuse_existing_run(run.fold_dir, config, run.fold)
    else:
        run = with_checkpoint_plans(run, checkpoint)
    options = resolve_run_options(options or TrainOptions(), given, checkpoint, run)
    ctx = ddp.init_distributed(options.device)
    if ctx.is_main:
        remove_temporaries(run.fold_dir)  # what a run killed while writing a checkpoint left
    device = ddp.rank_device(options.device, ctx)
    options = options.replace(seed=ddp.broadcast_int(options.seed, ctx, device))
    state = _build_state(run, options, ctx, device, checkpoint)
    if ctx.is_main:
        _log_start(run, options, ctx, state.epoch)
    if state.epoch < options.epochs:
        _train_epochs(run, options, ctx, state, progress_bar)
    if ctx.is_main:
        save_checkpoint(checkpoint_file(run.fold_dir, "final"), _checkpoint(run, options, state))
        save_log(state.log, run.fold_dir)
        logger.info("finished %s fold %s: %d epochs (%d iterations); outputs in %s", config, run.fold, state.epoch,
                    state.epoch * options.iterations_per_epoch, run.fold_dir)
    ddp.barrier(ctx)  # the process group stays joined: a script may train further folds in this torchrun
    return TrainResult(run.fold_dir, state.network.eval(), run.plans, run.plan, run.data_dir, run.val_cases, options,
                       state.epoch, ctx.is_main)


def _log_start(run: FoldRun, o: TrainOptions, ctx: ddp.DistributedContext, start_epoch: int) -> None:
    per_rank = ddp.per_rank_batch_size(o.batch_size, ctx.world_size)
    ranks = f" on {ctx.world_size} ranks ({per_rank} each)" if ctx.enabled else ""
    logger.info(
        "training %s fold %s on %s (%s): %s epochs x %d iterations, batch %d%s, %s lr %g (%s), init %s, seed %d; "
        "%d training and %d validation cases; outputs in %s",
        run.config, run.fold, o.device, o.precision,
        (f"epochs {start_epoch + 1}..{o.epochs} of {o.epochs}" if start_epoch else str(o.epochs))
        + (f" (or {o.time_budget:g} minutes of training, whichever ends first)" if o.time_budget is not None else ""),
        o.iterations_per_epoch, o.batch_size, ranks, o.optimizer, o.lr, o.lr_schedule, o.init, o.seed,
        len(run.train_cases), len(run.val_cases), run.fold_dir,
    )
    for warning in (precision_warning(run.plans.planner, o), ddp.batch_warning(o.batch_size, ctx.world_size)):
        if warning:
            logger.warning("warning: %s", warning)


# ---------------------------------------------------------------------------------------------
# Model, optimiser and their state


def make_optimizer(parameters, o: TrainOptions) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net) or Adadelta (the SAT paper), from the resolved options."""
    if o.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0,
                               weight_decay=o.weight_decay)
    return torch.optim.Adadelta(parameters, lr=o.lr, rho=o.rho, eps=o.eps, weight_decay=o.weight_decay)


def _epoch_seconds(state: _State) -> list[float]:
    """Each completed epoch's wall time as the time budget counts it: training, validation and its writes."""
    return [e.wall_seconds for e in state.log.epochs]


def _count_writes(state: _State, writes_started: float | None) -> None:
    """Store the seconds since `writes_started` (the last epoch's validation ended) as its overhead_seconds."""
    if writes_started is not None:
        state.log.epochs[-1].overhead_seconds = time.perf_counter() - writes_started


def _build_state(
    run: FoldRun, o: TrainOptions, ctx: ddp.DistributedContext, device: torch.device, checkpoint: dict[str, Any] | None
) -> _State:
    torch.manual_seed(o.seed)  # the initial weights depend on the seed only
    network = build_network(run.plan.network, init=o.init)
    precision = make_precision(o.precision, device, run.plan.network.spatial_dims)
    network.to(device=device, memory_format=precision.memory_format)
    optimizer = make_optimizer(network.parameters(), o)
    state = _State(network, network, optimizer, precision, TrainingLog(run.config, run.fold, run.class_names),
                   ExponentialMovingAverage(EMA_DECAY))
    if checkpoint is not None:
        network.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if precision.scaler is not None and checkpoint.get("grad_scaler"):
            precision.scaler.load_state_dict(checkpoint["grad_scaler"])
        state.log = TrainingLog.from_dict(checkpoint["log"], "log of checkpoint_latest.pt")
        state.epoch, state.best_ema = int(checkpoint["epoch"]), checkpoint["best_ema_dice"]
        state.ema.value = state.log.epochs[-1].ema_dice if state.log.epochs else None
        restore_rng(checkpoint["rng"])
    state.model = ddp.wrap_model(network, ctx, device)
    return state


def _checkpoint(run: FoldRun, o: TrainOptions, state: _State) -> dict[str, Any]:
    """The checkpoint dict of the current state (satnet.io.checkpoints lists the keys)."""
    scaler = state.precision.scaler
    meta = CheckpointMeta(config=run.config, fold=run.fold, network=run.plan.network.to_dict(),
                          plans_json=run.plans_text, epoch=state.epoch, satnet_version=__version__)
    return meta.checkpoint(
        portable_state_dict(state.network),
        optimizer=state.optimizer.state_dict(),
        scheduler={"schedule": o.lr_schedule,
                   "next_lr": time_budget.learning_rate(o, min(state.epoch, o.epochs - 1), _epoch_seconds(state))},
        grad_scaler=scaler.state_dict() if scaler is not None else None,
        rng=capture_rng(), train_options=o.to_dict(), best_ema_dice=state.best_ema,
        log=state.log.to_dict(),
    )


# ---------------------------------------------------------------------------------------------
# Epochs


# Weight of the lowest-resolution output under DDP instead of 0 (nnU-Net's value): a weight-0 output is
# not evaluated, so its head would get no gradient and DDP (find_unused_parameters off) would fail.
DDP_LOWEST_OUTPUT_WEIGHT = 1e-6


def _loss_functions(outputs: int, distributed: bool) -> tuple[nn.Module, nn.Module]:
    """Training loss (deep supervision over `outputs` logits when > 0) and validation loss (full resolution).

    Under DDP both pool the batch Dice over the ranks (DiceCELoss's `distributed`): the loss, and so the
    logged losses, are those of the global batch."""
    dice_ce = DiceCELoss(distributed=distributed)
    if not outputs:
        return dice_ce, dice_ce
    weights = deep_supervision_weights(outputs)
    if distributed and weights[-1] == 0.0:
        weights[-1] = DDP_LOWEST_OUTPUT_WEIGHT
    return DeepSupervisionLoss(dice_ce, weights), dice_ce


def _train_epochs(run: FoldRun, o: TrainOptions, ctx: ddp.DistributedContext, state: _State, progress_bar: bool) -> None:
    """Epochs state.epoch .. o.epochs - 1, each followed (on rank 0) by its log line and files."""
    plan = per_rank_plan(run.plan, ddp.per_rank_batch_size(o.batch_size, ctx.world_size))
    outputs = count_outputs(plan.network, plan.patch_size)
    train_loss_fn, val_loss_fn = _loss_functions(outputs, ctx.enabled)
    pipelines = EpochPipelines(run.data_dir, run.train_cases, run.val_cases, plan, o.workers, o.seed, ctx.rank,
                               outputs, state.epoch, world_size=ctx.world_size)
    writes_started = None  # when the last epoch's checkpoint, log and plot writes began: the budget counts them
    try:
        for epoch in range(state.epoch, o.epochs):
            _count_writes(state, writes_started)
            if o.time_budget is not None and _out_of_time(o, ctx, state, device_of(state.network)):
                break
            started = time.perf_counter()
            lr = time_budget.learning_rate(o, epoch, _epoch_seconds(state))
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            pipelines.start_epoch(epoch)
            if ctx.rank > 0:  # each rank draws its own dropout masks, from a stream a resumed run restarts exactly
                torch.manual_seed(epoch_seed(o.seed, epoch, ctx.rank, TORCH_STREAM))  # (rank 0's is checkpointed)
            train_loss = train_epoch(state.model, pipelines.train, o.iterations_per_epoch, train_loss_fn,
                                     state.optimizer, state.precision, o.grad_clip, ctx,
                                     f"epoch {epoch + 1}/{o.epochs}", progress_bar)
            val_loss, dice = validate_epoch(state.network, pipelines.val, o.val_iterations, val_loss_fn,
                                            state.precision, run.plans.num_classes, ctx)
            _finish_epoch(run, o, ctx, state, EpochRecord(
                epoch=epoch, train_loss=finite_or_none(train_loss), val_loss=finite_or_none(val_loss),
                pseudo_dice=[finite_or_none(d) for d in dice], mean_dice=finite_or_none(mean_ignoring_nan(dice)),
                ema_dice=None, lr=lr, seconds=time.perf_counter() - started,
                gates_off=gate_fraction_off(state.network),
            ))
            writes_started = started + state.log.epochs[-1].seconds
        else:
            _count_writes(state, writes_started)
    finally:
        pipelines.close()


def device_of(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def _out_of_time(o: TrainOptions, ctx: ddp.DistributedContext, state: _State, device: torch.device) -> bool:
    """Whether the time budget ends the run before the next epoch (rank 0 decides for every rank)."""
    seconds = _epoch_seconds(state)
    reached = ddp.broadcast_int(int(time_budget.budget_reached(seconds, o.time_budget)), ctx, device)
    if reached and ctx.is_main:
        logger.info("time budget reached: %s", time_budget.describe(seconds, o.iterations_per_epoch, o.time_budget))
    return bool(reached)


def _finish_epoch(run: FoldRun, o: TrainOptions, ctx: ddp.DistributedContext, state: _State, record: EpochRecord) -> None:
    """Update the EMA and the log; on rank 0 log the line and write best (if improved), latest, log, plot."""
    record.ema_dice = state.ema.update(record.mean_dice if record.mean_dice is not None else float("nan"))
    improved = record.ema_dice is not None and (state.best_ema is None or record.ema_dice > state.best_ema)
    if improved:
        state.best_ema = record.ema_dice
    state.log.append(record)
    state.epoch = record.epoch + 1
    state.log.iterations = state.epoch * o.iterations_per_epoch
    state.log.time_budget_minutes = o.time_budget
    if not ctx.is_main:
        return
    line = format_epoch(record, run.class_names, o.epochs)
    if o.time_budget is not None:
        line += f", {sum(_epoch_seconds(state)) / 60:.1f} of {o.time_budget:g} min"
    logger.info(line)
    if record.train_loss is None:
        logger.warning("warning: the training loss of epoch %d is not finite: training diverged; lower --lr, or "
                       "resume from an earlier checkpoint", record.epoch + 1)
    checkpoint = _checkpoint(run, o, state)
    if improved:
        save_checkpoint(checkpoint_file(run.fold_dir, "best"), checkpoint)
    save_checkpoint(checkpoint_file(run.fold_dir, "latest"), checkpoint)
    save_log(state.log, run.fold_dir)
    plot_progress(state.log, run.fold_dir)
