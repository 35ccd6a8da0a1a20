"""Multi-GPU and multi-node training with torchrun and DistributedDataParallel.

`torchrun --nproc_per_node=N -m satnet train WORK_DIR CONFIG FOLD` (or `satnet train` under
any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK) starts N processes; each calls
`init_distributed`, which joins the process group: NCCL on CUDA (rank r uses GPU LOCAL_RANK),
gloo on the CPU. Without those variables everything here is a no-op for a single process.

What differs per rank, and what does not:
- the batch: each rank trains on `per_rank_batch_size(global, world)` samples per step, so a step
  sees about the plan's batch over all ranks;
- the data: each rank seeds its pipelines with its rank, so ranks draw different patches;
- the weights: identical; DDP broadcasts rank 0's at wrap time and averages the gradients;
- the outputs: only rank 0 writes checkpoints, logs and plots (`DistributedContext.is_main`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from satnet.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank in [0, world_size), local_rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # ranks on this node (torchrun's LOCAL_WORLD_SIZE), which share its cores

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and logs epochs."""
        return self.rank == 0


def context_from_environment() -> DistributedContext:
    """The context torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK; single process when unset."""
    present = [v for v in ENV_VARIABLES if v in os.environ]
    if not present:
        return DistributedContext()
    try:
        values = {v: int(os.environ[v]) for v in ENV_VARIABLES}
    except (KeyError, ValueError):
        raise ConfigError(
            f"distributed training needs RANK, WORLD_SIZE and LOCAL_RANK as integers (set by torchrun), found "
            f"{', '.join(f'{v}={os.environ.get(v)!r}' for v in ENV_VARIABLES)}; launch with "
            f"`torchrun --nproc_per_node=N -m satnet train ...`"
        ) from None
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ConfigError(f"RANK={values['RANK']} must be in [0, WORLD_SIZE={values['WORLD_SIZE']})")
    local_world_size = os.environ.get("LOCAL_WORLD_SIZE", "")
    local = int(local_world_size) if local_world_size.isdigit() else values["WORLD_SIZE"]
    return DistributedContext(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], max(1, local))


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group torchrun set up (if any) and pick this rank's GPU; returns the context."""
    ctx = context_from_environment()
    if not ctx.enabled or dist.is_initialized():
        return ctx
    if device_type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {ctx.local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                f"use --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    logger.info("distributed training: rank %d of %d (local rank %d)", ctx.rank, ctx.world_size, ctx.local_rank)
    return ctx


def rank_device(device_type: str, ctx: DistributedContext) -> torch.device:
    """cuda:LOCAL_RANK for CUDA runs (cuda:0 in a single process), else the CPU."""
    return torch.device("cuda", ctx.local_rank) if device_type == "cuda" else torch.device("cpu")


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """global_batch // world_size, at least 1: with fewer samples than ranks each rank takes one."""
    return max(1, global_batch // world_size)


def batch_warning(global_batch: int, world_size: int) -> str | None:
    """What to say when the ranks cannot share the global batch evenly: the batch actually trained changes."""
    per_rank = per_rank_batch_size(global_batch, world_size)
    if per_rank * world_size == global_batch:
        return None
    return (f"the batch of {global_batch} does not split over {world_size} ranks: each rank takes {per_rank}, so "
            f"every step trains on {per_rank * world_size} samples, not {global_batch} (a larger batch, and another "
            f"run than the plan's); pass --batch-size {max(world_size, global_batch // world_size * world_size)} "
            f"(a multiple of {world_size}) to say so, or use fewer ranks")


def wrap_model(model: nn.Module, ctx: DistributedContext, device: torch.device) -> nn.Module:
    """DDP-wrap `model` when distributed. find_unused_parameters is off: every parameter of satnet's
    networks takes part in each training forward (deep-supervision heads included)."""
    if not ctx.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum `tensor` over the ranks in place (no-op for one process); returns it."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient too: every rank computes the same loss
    from the sum, so each rank's input gets the gradient summed over the ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def differentiable_sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the DDP ranks, differentiably (_SumOverRanks); unchanged in a single process. For a
    loss that every rank computes from the sum (the batch Dice): the ranks need no DistributedContext here."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _SumOverRanks.apply(tensor)


def broadcast_int(value: int, ctx: DistributedContext, device: torch.device) -> int:
    """Rank 0's `value` on every rank."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group (after a final barrier)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
