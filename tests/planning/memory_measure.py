"""Memory of a real training step on CPU tensors: the yardstick for satnet.planning.memory.

The estimator counts the storages of fake tensors. These measurements do not: they run the
real network on real CPU tensors and read the C allocator, or the profiler's allocation events.

- activations: growth of glibc's bytes in use (`mallinfo2`: every arena plus mmapped chunks)
  across forward + loss, with the inputs and targets allocated before.
- peak: the most bytes in use after any aten op of forward, loss and backward, read by a
  dispatch mode that does nothing but read `mallinfo2` after each op (op boundaries: what a
  kernel allocates and frees inside one op is not seen, as in the estimator).
- exact_peak: torch.profiler's allocation and free events in time order, so it includes the
  workspaces kernels allocate inside one op (oneDNN reorders on CPU; cuDNN's on GPU).
- saved: saved-tensor hooks on the real tensors, de-duplicated by data pointer.

Linux with glibc >= 2.33 only (mallinfo2); elsewhere `heap_in_use` raises OSError.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from satnet.planning.memory import autocast_context, dice_ce_loss, in_channels_of


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        raise OSError("measuring memory needs glibc >= 2.33 (mallinfo2); this C library has none")
    libc.mallinfo2.restype = _MallInfo2
    return libc


def heap_in_use() -> int:
    """Bytes the C allocator has handed out and not taken back: arena chunks in use plus mmapped chunks."""
    info = _libc().mallinfo2()
    return info.uordblks + info.hblkhd


def trim_heap() -> None:
    """Give free heap memory back to the OS (so a later peak shows up in RSS)."""
    gc.collect()
    _libc().malloc_trim(0)


class HeapPeakSampler(TorchDispatchMode):
    """Reads `heap_in_use` after every aten op and keeps the highest value."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = heap_in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use())
        return out


@dataclass(frozen=True)
class MeasuredStep:
    """Bytes measured in one real training step (see the module docstring); exact_peak is 0 when not asked for."""

    activations: int
    peak: int
    after_backward: int
    saved: int
    gradients: int
    exact_peak: int = 0


def _forward_loss(module: nn.Module, x: torch.Tensor, targets: list[torch.Tensor], precision: str):
    with autocast_context(precision):
        outputs = module(x)
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        return outputs, dice_ce_loss(outputs, targets)


def _make_targets(module: nn.Module, x: torch.Tensor, precision: str, generator: torch.Generator) -> list[torch.Tensor]:
    """Random int64 labels (B, *S_i) for every output, shaped by one warm-up forward."""
    with torch.no_grad(), autocast_context(precision):
        outputs = module(x)
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    return [torch.randint(0, o.shape[1], (o.shape[0], *o.shape[2:]), generator=generator) for o in outputs]


def _saved_bytes(module: nn.Module, x: torch.Tensor, targets: list[torch.Tensor], precision: str) -> int:
    exclude = {t.untyped_storage().data_ptr() for t in [x, *targets, *module.parameters(), *module.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs, loss = _forward_loss(module, x, targets, precision)
    del outputs, loss
    return sum(seen.values())


def _exact_peak(module: nn.Module, x: torch.Tensor, targets: list[torch.Tensor], precision: str) -> int:
    """Peak of tensor bytes from the profiler's allocation events of forward, loss and backward."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(module, x, targets, precision)
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    live = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        live += size
        peak = max(peak, live)
    return peak


def _step(module: nn.Module, x: torch.Tensor, targets: list[torch.Tensor], precision: str) -> None:
    outputs, loss = _forward_loss(module, x, targets, precision)
    loss.backward()
    del outputs, loss  # the outputs keep the graph of unused deep-supervision heads alive
    module.zero_grad(set_to_none=True)


def _heap_growth(module: nn.Module, x: torch.Tensor, targets: list[torch.Tensor], precision: str) -> tuple[int, int, int]:
    """(activations, after_backward, gradients): heap growth over forward + loss, and after backward."""
    gc.collect()
    start = heap_in_use()
    outputs, loss = _forward_loss(module, x, targets, precision)
    activations = heap_in_use() - start
    loss.backward()
    after_backward = heap_in_use() - start
    gradients = sum(p.grad.untyped_storage().nbytes() for p in module.parameters() if p.grad is not None)
    del outputs, loss
    module.zero_grad(set_to_none=True)
    return activations, after_backward, gradients


def _sampled_peak(module: nn.Module, x: torch.Tensor, targets: list[torch.Tensor], precision: str) -> int:
    gc.collect()
    sampler = HeapPeakSampler()
    start = sampler.peak
    with sampler:
        _step(module, x, targets, precision)
    return sampler.peak - start


def measure_training_step(module: nn.Module, patch_size: Sequence[int], batch_size: int, precision: str = "fp32",
                          in_channels: int | None = None, peak: bool = True, saved: bool = True,
                          exact_peak: bool = False, seed: int = 0) -> MeasuredStep:
    """Run real training steps of `module` on CPU and measure them (bytes; see the module docstring).

    The image batch (B, C, *patch_size) and int64 targets (B, *S_i) per output are allocated
    before the measured steps, and warm-up steps run first so that the allocator, thread pools
    and the dispatcher settle. `peak`, `saved`, `exact_peak` choose the extra passes (a field
    not measured is 0). The module is left in training mode with its gradients set to None.
    """
    generator = torch.Generator().manual_seed(seed)
    module.train()
    channels = in_channels if in_channels is not None else in_channels_of(module)
    x = torch.randn(batch_size, channels, *patch_size, generator=generator)  # (B, C, *S)
    targets = _make_targets(module, x, precision, generator)
    _step(module, x, targets, precision)
    if peak:
        with HeapPeakSampler():  # the first step under a dispatch mode allocates the dispatcher's caches
            _step(module, x, targets, precision)
    activations, after_backward, gradients = _heap_growth(module, x, targets, precision)
    return MeasuredStep(
        activations=activations, after_backward=after_backward, gradients=gradients,
        peak=_sampled_peak(module, x, targets, precision) if peak else 0,
        saved=_saved_bytes(module, x, targets, precision) if saved else 0,
        exact_peak=_exact_peak(module, x, targets, precision) if exact_peak else 0,
    )


def measure_inference_peak(module: nn.Module, patch_size: Sequence[int], precision: str = "fp32",
                           in_channels: int | None = None, seed: int = 0) -> int:
    """Most heap bytes in use after any op of an eval-mode, no-grad forward of one patch, input included."""
    generator = torch.Generator().manual_seed(seed)
    was_training = module.training
    module.eval()
    channels = in_channels if in_channels is not None else in_channels_of(module)
    try:
        with torch.no_grad():
            for _ in range(2):  # warm-up: allocator, threads, dispatch
                with HeapPeakSampler(), autocast_context(precision):
                    module(torch.randn(1, channels, *patch_size, generator=generator))
            gc.collect()
            start = heap_in_use()
            x = torch.randn(1, channels, *patch_size, generator=generator)  # (1, C, *S)
            with HeapPeakSampler() as sampler, autocast_context(precision):  # autocast's cache of cast weights counts
                module(x)
            del x
    finally:
        module.train(was_training)
    return sampler.peak - start
