"""Following storages from allocation to release, for the memory model (satnet.planning.memory).

- `LiveTensorTracker`: a dispatch mode that sees every op's outputs and keeps the running and
  peak bytes of the distinct storages alive.
- `SavedTensorCounter`: saved-tensor hooks that count what autograd keeps for backward, once per
  storage.
- `storage_bytes`: bytes of the distinct storages behind a (nested) container of tensors.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorTracker(TorchDispatchMode):
    """Bytes of the storages that ops allocate while active, live now (`live`) and at most (`peak`).

    Each storage an op returns is counted once, when first seen, and uncounted when its Python
    object is finalized, which PyTorch delays until the C++ storage dies (storage objects are
    preserved while any tensor, view or autograd node holds the storage). Storages named by
    `ignore` (parameters, inputs, targets: allocated before the step) are never counted, not
    even through their views. `largest_conv_output` is the biggest output of a convolution.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.largest_conv_output = 0
        self._paused = False
        self._preexisting: set[int] = set()
        self._sizes: dict[int, int] = {}

    def ignore(self, tensors: Sequence[torch.Tensor]) -> None:
        """Never count these tensors' storages: a real run allocates them before the step."""
        self._preexisting.update(id(t.untyped_storage()) for t in tensors)

    @contextlib.contextmanager
    def paused(self):
        """Allocate without counting (then `ignore` what was allocated, so its views stay uncounted)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if self._paused or key in self._sizes or key in self._preexisting:
            return
        nbytes = storage.nbytes()
        if nbytes:
            self._sizes[key] = nbytes
            self.live += nbytes
            weakref.finalize(storage, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        if func is torch.ops.aten.convolution.default:
            self.largest_conv_output = max(self.largest_conv_output, out.untyped_storage().nbytes())
        self.peak = max(self.peak, self.live)
        return out


class SavedTensorCounter:
    """Bytes of the storages autograd saves for backward, each storage once (a breakdown figure).

    A storage is known by the id of its Python object while that object lives; when it is
    finalized (its graph freed, e.g. an output dropped before backward) the id is forgotten, as
    a later storage may take it, and that one is counted as well.
    """

    def __init__(self) -> None:
        self._exclude: set[int] = set()
        self._live: set[int] = set()
        self.bytes = 0

    def ignore(self, tensors: Sequence[torch.Tensor]) -> None:
        """Leave these tensors' storages out (parameters, inputs, targets); before they are saved."""
        self._exclude.update(id(t.untyped_storage()) for t in tensors)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = id(storage)
        if key not in self._live and key not in self._exclude:
            self._live.add(key)
            self.bytes += storage.nbytes()
            weakref.finalize(storage, self._live.discard, key)
        return t

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind the tensors in a (nested) container."""
    storages = {id(s): s.nbytes() for t in tree_flatten(tensors)[0] if isinstance(t, torch.Tensor)
                for s in [t.untyped_storage()]}
    return sum(storages.values())
