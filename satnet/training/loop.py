"""The inner loops of training: precision, per-epoch data pipelines, a training and a validation epoch.

Everything here works on objects the trainer (trainer.py) builds once per run; nothing writes
files. Shapes: data (B, C, *patch), targets (B, 1, *patch_i) per deep-supervision output, logits
(B, K, *patch_i), full resolution first.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from satnet.nets import NETWORKS, NetworkSpec
from satnet.nets.layers import preferred_memory_format
from satnet.planning.plans import ConfigurationPlan
from satnet.training.dataloader import derive_seed, rank_foreground_samples
from satnet.training.distributed import DistributedContext, all_reduce_sum
from satnet.training.metrics import PseudoDice
from satnet.training.pipeline import SingleProcessAugmenter, get_training_pipeline, get_validation_pipeline

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Streams of the per-epoch seeds, so training and validation patches never share a sequence.
TRAIN_STREAM, VAL_STREAM = 0, 1
TORCH_STREAM = 2  # the torch generator of ranks > 0 (dropout), see satnet.training.trainer
# The tqdm bar shows the loss every this many iterations (reading it back waits for the GPU).
LOSS_DISPLAY_EVERY = 10


# ---------------------------------------------------------------------------------------------
# Precision and memory format


@dataclass
class Precision:
    """How tensors are computed: autocast dtype (None: fp32), fp16 gradient scaler, memory format.

    On the CPU every network trains in channels_last (2D) / channels_last_3d (3D): oneDNN
    convolutions read and write that layout without reordering, and satnet.nets' instance norm
    keeps it, so the whole network stays in one layout (docs/performance.md: why, and the
    training step against nnU-Net's). CUDA keeps the default layout.
    """

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    memory_format: torch.memory_format

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def to_device(self, data: torch.Tensor) -> torch.Tensor:
        """An input batch (B, C, *patch) on the device, in the memory format."""
        return data.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)


def make_precision(precision: str, device: torch.device, spatial_dims: int) -> Precision:
    """The Precision for "fp32" | "bf16" | "fp16" on `device` (fp16 only on CUDA; see options.py)."""
    dtype = AUTOCAST_DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return Precision(device, dtype, scaler, preferred_memory_format(device, spatial_dims))


def count_outputs(spec: NetworkSpec, patch_size: Sequence[int]) -> int:
    """How many logits the network returns in training mode (0: a single tensor, no deep supervision).

    Counted from a forward on the meta device (no memory, no compute), so the pipelines get
    exactly as many targets as the network has outputs.
    """
    with torch.device("meta"):
        network = NETWORKS[spec.arch](spec).train()
        outputs = network(torch.empty(1, spec.in_channels, *patch_size))
    return len(outputs) if isinstance(outputs, (list, tuple)) else 0


def targets_to(target: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    if isinstance(target, (list, tuple)):
        return [t.to(device, non_blocking=True) for t in target]
    return target.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# Data, reseeded every epoch


def epoch_seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    """A 32-bit seed for the pipeline `stream` of `epoch` on `rank`, derived from the run's seed."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank), int(stream)]).generate_state(1)[0])


class EpochPipelines:
    """Training and validation batches whose randomness is a function of (seed, epoch, rank).

    With workers = 0 each epoch starts from fresh generators seeded by `epoch_seed`, so the
    batches of epoch e are the same whether the run started at epoch 0 or resumed at e: this is
    what makes a resumed CPU run end with exactly the weights of an uninterrupted one. With
    background workers the streams are seeded once, from the epoch the run (re)started at:
    reproducible for a given start, but a resumed run draws other patches than an uninterrupted
    one (restarting the workers every epoch would discard their prefetched batches).
    """

    def __init__(
        self, folder: Path, train_cases: list[str], val_cases: list[str], plan: ConfigurationPlan,
        workers: int, seed: int, rank: int, outputs: int, start_epoch: int, world_size: int = 1,
    ):
        self.seed, self.rank, self.workers = seed, rank, workers
        # plan.batch_size is this rank's part; foreground oversampling follows the global batch
        forced = rank_foreground_samples(plan.batch_size, world_size, rank)
        common = dict(num_workers=workers, pin_memory=None, num_foreground=forced)
        self.train = get_training_pipeline(folder, train_cases, plan, deep_supervision_outputs=outputs,
                                           seed=epoch_seed(seed, start_epoch, rank, TRAIN_STREAM), **common)
        common["num_workers"] = workers and max(1, workers // 2)
        self.val = get_validation_pipeline(folder, val_cases, plan, deep_supervision_outputs=0,
                                           seed=epoch_seed(seed, start_epoch, rank, VAL_STREAM), **common)

    def start_epoch(self, epoch: int) -> None:
        """Reseed both pipelines for `epoch` (in-process pipelines only; see the class docstring)."""
        if self.workers == 0:
            self.train = _reseeded(self.train, epoch_seed(self.seed, epoch, self.rank, TRAIN_STREAM))
            self.val = _reseeded(self.val, epoch_seed(self.seed, epoch, self.rank, VAL_STREAM))

    def close(self) -> None:
        self.train.close()
        self.val.close()


def _reseeded(augmenter: SingleProcessAugmenter, seed: int) -> SingleProcessAugmenter:
    """The same loader and transforms, with the loader's generator and the transforms' states reseeded
    exactly as `get_training_pipeline(..., num_workers=0, seed=seed)` would seed them."""
    loader = augmenter.data_loader
    loader.seed = seed
    loader.rng = np.random.default_rng(derive_seed(seed, 0))
    return SingleProcessAugmenter(loader, augmenter.transform, seed)


# ---------------------------------------------------------------------------------------------
# Epochs


def train_step(
    model: nn.Module, batch: dict, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
    grad_clip: float,
) -> torch.Tensor:
    """One optimiser step on `batch`; returns the detached loss (still on the device)."""
    data = precision.to_device(batch["data"])  # (B, C, *patch)
    target = targets_to(batch["target"], precision.device)
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        output = model(data)
    loss = loss_fn(output, target)  # in fp32: the losses leave autocast themselves
    scaler = precision.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return loss.detach()


def train_epoch(
    model: nn.Module, batches: Iterator[dict], iterations: int, loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer, precision: Precision, grad_clip: float, ctx: DistributedContext,
    description: str, progress_bar: bool = True,
) -> float:
    """`iterations` training steps; the mean loss over the steps and the ranks."""
    model.train()
    losses = []
    bar = tqdm(range(iterations), desc=description, unit="it", leave=False, disable=not (progress_bar and ctx.is_main))
    for i in bar:
        losses.append(train_step(model, next(batches), loss_fn, optimizer, precision, grad_clip))
        if (i + 1) % LOSS_DISPLAY_EVERY == 0 or i + 1 == iterations:
            bar.set_postfix(loss=f"{losses[-1].item():.4f}", refresh=False)
    bar.close()
    total = all_reduce_sum(torch.stack(losses).double().sum().reshape(1), ctx)
    return total.item() / (iterations * ctx.world_size)


@torch.no_grad()
def validate_epoch(
    network: nn.Module, batches: Iterator[dict], iterations: int, loss_fn: nn.Module, precision: Precision,
    num_classes: int, ctx: DistributedContext,
) -> tuple[float, list[float]]:
    """Mean validation loss and pseudo-Dice per foreground class over `iterations` batches and all ranks.

    `network` is the unwrapped model, run in eval mode (full-resolution logits only); it is put
    back into training mode afterwards. Dice entries are nan for classes absent from both targets
    and predictions; the loss is nan when `iterations` is 0.
    """
    network.eval()
    dice = PseudoDice(num_classes)
    total = torch.zeros(2, dtype=torch.float64, device=precision.device)  # loss sum, batches
    for _ in range(iterations):
        batch = next(batches)
        target = batch["target"].to(precision.device, non_blocking=True)  # (B, 1, *patch)
        with precision.autocast():
            logits = network(precision.to_device(batch["data"]))  # (B, K, *patch)
        total += torch.stack([loss_fn(logits, target).double(), torch.ones((), dtype=torch.float64, device=total.device)])
        dice.update(logits, target)
    network.train()
    confusion = dice.confusion.to(precision.device)
    dice.confusion = all_reduce_sum(confusion, ctx).cpu()
    all_reduce_sum(total, ctx)
    loss = total[0].item() / total[1].item() if total[1].item() > 0 else math.nan
    return loss, dice.compute()


def per_rank_plan(plan: ConfigurationPlan, batch_size: int) -> ConfigurationPlan:
    """The plan with this rank's batch size (the patch and network stay the plan's)."""
    return dataclasses.replace(plan, batch_size=batch_size)
