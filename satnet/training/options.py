"""TrainOptions: every training hyperparameter, with its default, in one dataclass.

`satnet train` builds one from its flags and passes it down; nothing else configures training
(no subclass per hyperparameter, no environment variables). Fields left None are resolved by
`resolve_options`, which depends on the optimizer (SGD or Adadelta) and the device:

| field | default | meaning |
|---|---|---|
| epochs | 1000 | epochs to train (nnU-Net) |
| iterations_per_epoch | 250 | training batches per epoch (nnU-Net) |
| val_iterations | iterations_per_epoch / 5, at most 50 (nnU-Net's 50 for 250) | validation batches per epoch, for the online pseudo-Dice; scaled so a short epoch does not spend half its time validating |
| optimizer | "sgd" | "sgd" (nnU-Net's recipe) or "adadelta" (the SAT paper's) |
| lr | sgd 0.01, adadelta 1.0 | initial learning rate |
| momentum | 0.99 | SGD momentum, Nesterov (nnU-Net); unused by Adadelta |
| weight_decay | sgd 3e-5, adadelta 0 | L2 penalty (nnU-Net; Keras' Adadelta has none) |
| rho, eps | 0.95, 1e-8 | Adadelta's decay and epsilon (the SAT paper's Keras defaults) |
| lr_schedule | sgd "poly", adadelta "constant" | "poly": lr * (1 - epoch / epochs) ** poly_exponent, set at each epoch start (with time_budget: 1 - elapsed / budget) |
| poly_exponent | 0.9 | exponent of the poly schedule (nnU-Net) |
| grad_clip | 12.0 | maximum global gradient norm (nnU-Net), after fp16 unscaling |
| batch_size | the plan's | global batch; split over DDP ranks (see per_rank_batch_size) |
| precision | CUDA: fp16 with a gradient scaler (nnU-Net's; docs/gpu.md: bf16 ran 4.2x slower on 1x3x3 kernels); CPU: fp32 | autocast dtype (docs/training.md: bf16 was measured slower than fp32 on our CPU) |
| device | "auto" | "auto" (CUDA when present), "cpu" or "cuda" |
| workers | default_num_workers() / ranks per node | augmentation processes per rank; 0 runs in the training process |
| seed | random, then stored | seeds the weights and the data; stored in the checkpoint for resume |
| init | sgd "he", adadelta "glorot" | weight initialisation (satnet.nets.init_weights) |
| time_budget | None | minutes of training wall time (epochs with their validation batches and checkpoint writes; satnet.training.budget): the poly schedule runs over time, and the run ends within one epoch of the budget, or after `epochs` if that comes first |
"""
from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Mapping

from satnet.contracts import Contract
from satnet.errors import ConfigError, unknown_name_error
from satnet.names import (  # noqa: F401 (the lists are re-exported: their owner is satnet.names)
    CPU_DEFAULT_PRECISION,
    CUDA_DEFAULT_PRECISION,
    DEFAULT_DEVICE,
    DEFAULT_OPTIMIZER,
    DEVICES,
    INIT_SCHEMES,
    LR_SCHEDULES,
    MAX_SEED,
    OPTIMIZERS,
    PRECISIONS,
)

if TYPE_CHECKING:
    from satnet.planning.plans import PlannerOptions

# Per-optimizer defaults of the fields left None: nnU-Net's SGD recipe and the SAT paper's Adadelta.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01, "weight_decay": 3e-5, "lr_schedule": "poly", "init": "he"},
    "adadelta": {"lr": 1.0, "weight_decay": 0.0, "lr_schedule": "constant", "init": "glorot"},
}
# On resume, these come from the current invocation whatever the checkpoint says: they describe
# the machine, not the run.
MACHINE_FIELDS = ("device", "workers")
# These may be changed on resume when given explicitly (more epochs, another precision); every
# other field must match the checkpoint's.
RESUME_MAY_CHANGE = ("epochs", "val_iterations", "precision", "time_budget")


@dataclass
class TrainOptions(Contract):
    """Training hyperparameters; see the module docstring for each default. None: resolved later."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int | None = None
    optimizer: str = DEFAULT_OPTIMIZER
    lr: float | None = None
    momentum: float = 0.99
    weight_decay: float | None = None
    rho: float = 0.95
    eps: float = 1e-8
    lr_schedule: str | None = None
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    batch_size: int | None = None
    precision: str | None = None
    device: str = DEFAULT_DEVICE
    workers: int | None = None
    seed: int | None = None
    init: str | None = None
    time_budget: float | None = None

    def __post_init__(self) -> None:
        for name, options in (("optimizer", OPTIMIZERS), ("device", DEVICES)):
            if getattr(self, name) not in options:
                raise unknown_name_error(name, getattr(self, name), options)
        for name, options in (("precision", PRECISIONS), ("lr_schedule", LR_SCHEDULES), ("init", INIT_SCHEMES)):
            if getattr(self, name) is not None and getattr(self, name) not in options:
                raise unknown_name_error(name, getattr(self, name), options)
        _check_int(self, ("epochs", "iterations_per_epoch", "val_iterations", "batch_size"), minimum=1)
        _check_int(self, ("workers", "seed"), minimum=0)
        if self.seed is not None and self.seed > MAX_SEED:
            raise ConfigError(f"seed must be at most 2**64 - 1 (torch.manual_seed takes 64 bits), not {self.seed}")
        _check_number(self, ("lr", "eps", "grad_clip", "poly_exponent", "time_budget"), low=0.0, low_open=True)
        _check_number(self, ("weight_decay",), low=0.0, low_open=False)
        _check_number(self, ("momentum", "rho"), low=0.0, low_open=False, high=1.0)

    def replace(self, **changes: Any) -> "TrainOptions":
        return dataclasses.replace(self, **changes)


def _check_int(options: TrainOptions, names: tuple[str, ...], minimum: int) -> None:
    for name in names:
        value = getattr(options, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise ConfigError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _check_number(
    options: TrainOptions, names: tuple[str, ...], low: float, low_open: bool, high: float = math.inf
) -> None:
    for name in names:
        value = getattr(options, name)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > low if low_open else value >= low)
        if not ok or value > high:
            bound = f"> {low}" if low_open else f">= {low}"
            bound += f" and <= {high}" if high != math.inf else ""
            raise ConfigError(f"{name} must be a finite number {bound}, not {value!r}")


def resolve_options(
    options: TrainOptions, plan_batch_size: int, cuda_available: bool, ranks_per_node: int = 1
) -> TrainOptions:
    """A copy with every None field filled: optimizer defaults, the plan's batch, device, precision, seed,
    and workers (default_num_workers() shared by the `ranks_per_node` DDP ranks of a node, at least 1).

    The result is what a run trains with and what its checkpoints store, so a resumed run sees the
    same values whatever the defaults of a later satnet version.
    """
    from satnet.training.pipeline import default_num_workers

    if options.device == "cuda" and not cuda_available:
        raise ConfigError(
            "--device cuda, but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu or --device auto"
        )
    device = "cuda" if options.device == "cuda" or (options.device == "auto" and cuda_available) else "cpu"
    if options.precision == "fp16" and device == "cpu":
        raise ConfigError("--precision fp16 needs a CUDA GPU (fp16 autocast with a gradient scaler); "
                          "on the CPU use --precision bf16 or fp32")
    filled = {k: v for k, v in OPTIMIZER_DEFAULTS[options.optimizer].items() if getattr(options, k) is None}
    if options.val_iterations is None:
        filled["val_iterations"] = default_val_iterations(options.iterations_per_epoch)
    return options.replace(
        **filled,
        device=device,
        batch_size=options.batch_size or plan_batch_size,
        precision=options.precision or (CUDA_DEFAULT_PRECISION if device == "cuda" else CPU_DEFAULT_PRECISION),
        workers=max(1, default_num_workers() // ranks_per_node) if options.workers is None else options.workers,
        seed=secrets.randbelow(2**31) if options.seed is None else options.seed,
    )


MAX_VAL_ITERATIONS = 50  # nnU-Net's, for its 250 training iterations per epoch


def default_val_iterations(iterations_per_epoch: int) -> int:
    """Validation batches per epoch: one per five training batches (nnU-Net's 50 per 250), 1 to 50."""
    return max(1, min(MAX_VAL_ITERATIONS, round(iterations_per_epoch / 5)))


def given_fields(options: TrainOptions, names: Collection[str] | None) -> dict[str, Any]:
    """The options a user set explicitly: the fields `names`, or, when None, those differing from the defaults."""
    if names is None:
        default = TrainOptions()
        names = [f.name for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(default, f.name)]
    return {name: getattr(options, name) for name in names}


def merge_for_resume(stored: TrainOptions, current: TrainOptions, given: Mapping[str, Any]) -> TrainOptions:
    """The options of a resumed run: the checkpoint's (`stored`), with MACHINE_FIELDS from `current`
    and RESUME_MAY_CHANGE from `given` (the options set explicitly, see `given_fields`).

    Any other given option that differs from the stored run raises ConfigError naming both values.
    """
    conflicts = [
        f"--{k.replace('_', '-')} {v} (the checkpoint was trained with {getattr(stored, k)})"
        for k, v in given.items()
        if k not in RESUME_MAY_CHANGE + MACHINE_FIELDS and v is not None and v != getattr(stored, k)
    ]
    if conflicts:
        raise ConfigError(
            "--resume continues a run with the options it started with, but these differ: "
            + "; ".join(conflicts)
            + ". Drop them to resume, or train without --resume after deleting the fold folder. Options that may "
            f"change on resume: {', '.join('--' + k.replace('_', '-') for k in RESUME_MAY_CHANGE + MACHINE_FIELDS)}"
        )
    changes = {k: v for k, v in given.items() if k in RESUME_MAY_CHANGE and v is not None}
    changes.update({k: getattr(current, k) for k in MACHINE_FIELDS})
    return stored.replace(**changes)


def precision_warning(planner: "PlannerOptions | Mapping[str, Any]", o: TrainOptions) -> str | None:
    """What to say when a CUDA run trains in fp32 a plan sized for bf16/fp16 (about half the activations).

    planner: plans.json's `planner` (a dict is read as PlannerOptions.from_dict reads that key)."""
    from satnet.planning.plans import PlannerOptions  # here, so the CLI parser imports no torch

    if not isinstance(planner, PlannerOptions):
        planner = PlannerOptions.from_dict(dict(planner), "plans.json planner")
    planned = planner.precision
    if o.device != "cuda" or o.precision != "fp32" or planned == "fp32":
        return None
    return (f"the plan was sized for {planned} training within {planner.gpu_memory_gb:g} GiB; fp32 needs "
            f"about twice its activation memory and may run out of GPU memory: train with --precision {planned}, "
            f"or re-plan with `satnet plan ... --precision fp32`")
