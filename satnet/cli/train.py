"""`satnet train`: one fold of one configuration."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from satnet.cli.args import (
    fold_arg,
    nonnegative_float,
    nonnegative_int,
    one_of,
    positive_float,
    positive_int,
    seed_arg,
    subcommand,
    unit_interval,
)


def _train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainOptions field; None (not given) leaves the field's default (satnet/training/options.py).
    The help states each default as TrainOptions and satnet.names define it."""
    from satnet.names import (
        CPU_DEFAULT_PRECISION,
        CUDA_DEFAULT_PRECISION,
        DEVICES,
        INIT_SCHEMES,
        LR_SCHEDULES,
        OPTIMIZERS,
        PRECISIONS,
    )
    from satnet.training.options import MAX_VAL_ITERATIONS, OPTIMIZER_DEFAULTS, TrainOptions

    default = TrainOptions()

    def flag(name: str, kind: Callable[[str], object] | tuple[str, ...], help: str, metavar: str | None = None) -> None:
        typed = one_of(kind) if isinstance(kind, tuple) else {"type": kind, "metavar": metavar}
        p.add_argument(name, default=None, help=help, **typed)

    def per_optimizer(key: str) -> str:
        return "default: " + ", ".join(f"{o} {OPTIMIZER_DEFAULTS[o][key]}" for o in OPTIMIZERS)

    flag("--epochs", positive_int, f"epochs to train (default {default.epochs})", "E")
    flag("--iterations-per-epoch", positive_int, f"training batches per epoch (default {default.iterations_per_epoch})",
         "I")
    flag("--val-iterations", positive_int, "validation batches per epoch for the pseudo-Dice (default: one per five "
         f"training iterations, at most {MAX_VAL_ITERATIONS}, nnU-Net's 50 for 250)", "V")
    flag("--optimizer", OPTIMIZERS, "sgd (nnU-Net: Nesterov, momentum 0.99, poly decay) or adadelta (the SAT "
         f"paper: lr 1, rho 0.95, Glorot init, constant lr); default {default.optimizer}")
    flag("--lr", positive_float, f"initial learning rate ({per_optimizer('lr')})", "X")
    flag("--momentum", unit_interval, f"SGD momentum, Nesterov (default {default.momentum})", "M")
    flag("--weight-decay", nonnegative_float, f"weight decay ({per_optimizer('weight_decay')})", "W")
    flag("--rho", unit_interval, f"Adadelta rho (default {default.rho})", "R")
    flag("--eps", positive_float, f"Adadelta epsilon (default {default.eps})", "EPS")
    flag("--lr-schedule", LR_SCHEDULES, "poly: lr * (1 - epoch/epochs)^exponent per epoch; constant "
         f"({per_optimizer('lr_schedule')})")
    flag("--poly-exponent", positive_float, f"exponent of the poly schedule (default {default.poly_exponent})", "P")
    flag("--grad-clip", positive_float, f"maximum gradient norm (default {default.grad_clip:g})", "N")
    flag("--batch-size", positive_int, "global batch size, split over DDP ranks (default: the plan's)", "B")
    flag("--precision", PRECISIONS, "autocast: bf16, fp16 (CUDA only, with a gradient scaler) or fp32 (default: CUDA "
         f"{CUDA_DEFAULT_PRECISION}, CPU {CPU_DEFAULT_PRECISION})")
    flag("--device", DEVICES, f"auto: CUDA when present, else the CPU (default {default.device})")
    flag("--workers", nonnegative_int, "augmentation processes per rank; 0: in the training process, exactly "
         "reproducible on resume (default: cores - 2, 1..12)", "N")
    flag("--seed", seed_arg, "random seed of weights and data (default: drawn, stored in the checkpoint)", "S")
    flag("--init", INIT_SCHEMES, f"weight initialisation ({per_optimizer('init')})")
    flag("--time-budget", positive_float, "train for this many minutes of wall time (epochs with their validation "
         "batches and checkpoint writes; not start-up or the final validation): the poly schedule runs over time, the run stops within "
         "one epoch of it (or after --epochs); --resume keeps what is left (default: none)", "MINUTES")


# Flag destinations that are TrainOptions fields.
TRAIN_OPTION_FLAGS = (
    "epochs", "iterations_per_epoch", "val_iterations", "optimizer", "lr", "momentum", "weight_decay", "rho", "eps",
    "lr_schedule", "poly_exponent", "grad_clip", "batch_size", "precision", "device", "workers", "seed", "init",
    "time_budget",
)


def _run_train(args: argparse.Namespace) -> int:
    from satnet.errors import InputError
    from satnet.training import distributed as ddp
    from satnet.training.options import TrainOptions
    from satnet.training.trainer import train
    from satnet.training.validation import final_validation, validate_trained_fold

    if args.validation_only:
        ignored = [f"--{n.replace('_', '-')}" for n in TRAIN_OPTION_FLAGS
                   if n != "device" and getattr(args, n) is not None]
        ignored += [flag for flag, on in (("--resume", args.resume), ("--no-validation", args.no_validation)) if on]
        if ignored:
            raise InputError(f"--validation-only predicts the fold's validation cases with checkpoint_final.pt and "
                             f"trains nothing, so {', '.join(ignored)} would do nothing: drop "
                             f"{'it' if len(ignored) == 1 else 'them'} (--device is taken)")
        summary = validate_trained_fold(args.work_dir, args.config, args.fold, device=args.device or "auto")
        _print_validation(summary)
        return 0
    given = {name: getattr(args, name) for name in TRAIN_OPTION_FLAGS if getattr(args, name) is not None}
    result = train(args.work_dir, args.config, args.fold, TrainOptions(**given), resume=args.resume,
                   given=list(given), progress_bar=not args.quiet)
    ddp.shutdown(ddp.context_from_environment())  # ranks > 0 are done; rank 0 validates alone
    if result.is_main:
        iterations = result.epochs_completed * result.options.iterations_per_epoch
        print(f"trained {args.config} fold {args.fold} for {result.epochs_completed} epochs ({iterations} iterations): "
              f"{result.fold_dir}")
        if not args.no_validation:
            summary = final_validation(args.work_dir, result.fold_dir, result.network, result.plans, result.plan,
                                       result.data_dir, result.val_cases)
            _print_validation(summary)
    return 0


def _print_validation(summary: dict | None) -> None:
    if summary is None:
        return
    per = ", ".join(f"{summary['label_names'].get(k, k)} {v['dice']['mean']:.4f}"
                    for k, v in summary["per_class"].items() if v["dice"]["mean"] is not None)
    print(f"validation Dice ({summary['num_cases']} cases): {per}")


@subcommand
def _add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train one configuration on one cross-validation fold",
        description="Train configuration CONFIG of WORK_DIR/plans.json on fold FOLD of WORK_DIR/splits.json, writing "
                    "checkpoints, training_log.json and progress.png into WORK_DIR/results/CONFIG/fold_FOLD. "
                    "Defaults follow nnU-Net (docs/training.md). Multi-GPU: torchrun --nproc_per_node=N -m satnet "
                    "train ...",
    )
    p.add_argument("work_dir", type=Path, metavar="WORK_DIR", help="the work folder of `satnet plan-and-preprocess`")
    p.add_argument("config", metavar="CONFIG", help="a configuration of plans.json, e.g. 3d or 2d")
    p.add_argument("fold", type=fold_arg, metavar="FOLD", help="fold of splits.json (0-4 by default) or 'all'")
    _train_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from checkpoint_latest.pt (optimiser, schedule, epoch and random states)")
    p.add_argument("--no-validation", action="store_true",
                   help="skip the final validation (predicting the fold's validation cases into fold_<k>/validation)")
    p.add_argument("--validation-only", action="store_true",
                   help="only (re)run the final validation with checkpoint_final.pt (on --device; training flags "
                        "are refused)")
    p.set_defaults(handler=_run_train)
    return p
