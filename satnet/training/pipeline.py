"""Training and validation pipelines: PatchDataLoader + transforms + batchgenerators augmenter.

`get_training_pipeline` and `get_validation_pipeline` are what the trainer calls. Both return a
batchgenerators augmenter (an endless iterator of batch dicts, see get_training_pipeline):
`SingleProcessAugmenter` for num_workers=0 (deterministic for a seed, easy to debug) or
`WorkerAugmenter`, a MultiThreadedAugmenter of num_workers background processes. Close either
with `.close()` or a `with` block; workers left running are closed at interpreter exit.
"""
from __future__ import annotations

import atexit
import os
import queue
import random
import time
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import Compose

from satnet.errors import ConfigError, InputError
from satnet.nets import deep_supervision_scales
from satnet.planning.plans import ConfigurationPlan
from satnet.training.augmentation import (
    AugmentationConfig,
    default_augmentation,
    enlarged_patch_size,
    training_transforms,
    validation_transforms,
)
from satnet.training.dataloader import PatchDataLoader, derive_seed


def default_num_workers() -> int:
    """Background augmentation processes for this machine: its usable cores minus two, from 1 to 12.

    Two cores stay with the training process (the Python loop feeding the GPU) and the thread that
    collects and pins batches. 12 is nnU-Net's default: beyond it the GPU step, not augmentation,
    limits a 3D configuration; pass num_workers explicitly to go higher for small 2D patches.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(12, cores - 2))


class SingleProcessAugmenter(SingleThreadedAugmenter):
    """SingleThreadedAugmenter whose transforms draw from their own random states.

    batchgenerators transforms call numpy's global random functions (and Python's `random` for
    the noise level). This swaps private states of both in around each batch, seeded like worker 0
    of a WorkerAugmenter, so a seeded pipeline yields the same batches whatever else draws random
    numbers, and the caller's global states are left untouched.
    """

    def __init__(self, data_loader: PatchDataLoader, transform: Compose, seed: int | None = None):
        super().__init__(data_loader, transform)
        seed = derive_seed(seed, 0)
        self._numpy_state = np.random.RandomState(seed).get_state()
        self._python_state = random.Random(seed).getstate()

    def __next__(self) -> dict:
        batch = next(self.data_loader)
        outer_numpy, outer_python = np.random.get_state(), random.getstate()
        np.random.set_state(self._numpy_state)
        random.setstate(self._python_state)
        try:
            batch = self.transform(**batch)
        finally:
            self._numpy_state, self._python_state = np.random.get_state(), random.getstate()
            np.random.set_state(outer_numpy)
            random.setstate(outer_python)
        return batch

    def close(self) -> None:
        """Nothing to release; here so both augmenters can be closed the same way."""

    def __enter__(self) -> "SingleProcessAugmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WorkerAugmenter(MultiThreadedAugmenter):
    """MultiThreadedAugmenter that can be closed explicitly (or with `with`) and closes at exit.

    Batches come back in a fixed round-robin order of the workers, so a seeded pipeline is
    reproducible with workers too.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        atexit.register(_close_at_exit, weakref.ref(self))

    def close(self) -> None:
        """Stop and join the worker processes and the collecting thread (waits at most ~15 s).

        Workers hand tensors over as shared-memory file descriptors that only a live worker can
        send, so the batches already queued are collected (and dropped) before the workers are
        told to exit; stopping them at once, as batchgenerators does, lets the collecting thread
        ask a dead worker for a descriptor and die with a FileNotFoundError traceback.
        """
        if self.was_initialized:
            self.pause_event.set()
            self._drop_queued_batches()
        self._finish()

    def _drop_queued_batches(self, quiet_s: float = 0.1, timeout_s: float = 5.0) -> None:
        """Drop collected batches until none has arrived for `quiet_s` seconds (workers are paused).

        The collecting thread takes batches from the workers' queues in turn, so once it waits on
        a paused worker's empty queue it receives nothing more; batches left in the other queues
        are dropped by batchgenerators' shutdown, which ignores a descriptor it cannot fetch.
        """
        now = time.monotonic()
        deadline, last_arrival = now + timeout_s, now
        while now < deadline and now - last_arrival < quiet_s:
            try:
                self.pin_memory_queue.get(timeout=self.wait_time)
                last_arrival = time.monotonic()
            except queue.Empty:
                pass
            now = time.monotonic()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "WorkerAugmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_at_exit(ref: "weakref.ref[WorkerAugmenter]") -> None:
    augmenter = ref()
    if augmenter is not None:
        augmenter.close()


def _augmenter(
    loader: PatchDataLoader, transform: Compose, num_workers: int, seed: int | None, pin_memory: bool | None
) -> SingleProcessAugmenter | WorkerAugmenter:
    if not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be a non-negative integer, not {num_workers!r}")
    if num_workers == 0:
        return SingleProcessAugmenter(loader, transform, seed)
    seeds = [derive_seed(seed, i) for i in range(num_workers)] if seed is not None else None
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return WorkerAugmenter(loader, transform, num_workers, num_cached_per_queue=2, seeds=seeds, pin_memory=pin)


def _deep_supervision(plan: ConfigurationPlan, outputs: int | None) -> list[list[float]] | None:
    """Scales of the first `outputs` deep-supervision outputs (satnet.nets.deep_supervision_scales), or None."""
    scales = deep_supervision_scales(plan.network)
    if outputs is None:
        outputs = len(scales) if plan.network.deep_supervision else 0
    if outputs > len(scales):
        raise ConfigError(f"deep_supervision_outputs must be at most {len(scales)} (the network's decoder stages), "
                          f"not {outputs}")
    return scales[:outputs] if outputs > 0 else None


def _mask_channels(plan: ConfigurationPlan) -> list[int]:
    """Channels normalised over their nonzero region, kept zero outside the image."""
    return [i for i, n in enumerate(plan.normalization) if n.use_nonzero_mask]


def get_training_pipeline(
    folder: str | Path,
    case_ids: Sequence[str],
    plan: ConfigurationPlan,
    *,
    num_workers: int | None = None,
    seed: int | None = None,
    deep_supervision_outputs: int | None = None,
    pin_memory: bool | None = None,
    augmentation: AugmentationConfig | None = None,
) -> SingleProcessAugmenter | WorkerAugmenter:
    """Endless augmented training batches of the cases `case_ids` in `folder` for configuration `plan`.

    Yields dicts with 'data', a float32 tensor (B, C, *patch), 'target', an int64 tensor
    (B, 1, *patch) or, with deep supervision, a list of them at the scales of
    `satnet.nets.deep_supervision_scales` (full resolution first), and 'keys', the case ids.

    - num_workers: 0 runs in this process (deterministic for a given seed); n > 0 uses n
      background processes; None: `default_num_workers()`.
    - deep_supervision_outputs: how many network outputs get targets; None: num_stages - 1 when
      plan.network.deep_supervision, else none; 0: 'target' is a single tensor.
    - pin_memory: None pins only when CUDA is available.
    - augmentation: None: `default_augmentation(plan.patch_size, plan.spacing)`.
    Call `.close()` (or use `with`) to stop the workers.
    """
    config = augmentation or default_augmentation(plan.patch_size, plan.spacing)
    loader = PatchDataLoader(
        folder, case_ids, plan.patch_size, plan.batch_size, read_size=enlarged_patch_size(plan.patch_size, config),
        seed=seed,
    )
    transform = training_transforms(
        plan.patch_size, config, _deep_supervision(plan, deep_supervision_outputs), _mask_channels(plan)
    )
    workers = default_num_workers() if num_workers is None else num_workers
    return _augmenter(loader, transform, workers, seed, pin_memory)


def get_validation_pipeline(
    folder: str | Path,
    case_ids: Sequence[str],
    plan: ConfigurationPlan,
    *,
    num_workers: int | None = None,
    seed: int | None = None,
    deep_supervision_outputs: int | None = None,
    pin_memory: bool | None = None,
) -> SingleProcessAugmenter | WorkerAugmenter:
    """Endless unaugmented patches (same sampling, foreground oversampling included) for the online
    pseudo-Dice; batches as `get_training_pipeline`. num_workers None: half the default, at least 1.
    """
    loader = PatchDataLoader(folder, case_ids, plan.patch_size, plan.batch_size, seed=seed)
    transform = validation_transforms(_deep_supervision(plan, deep_supervision_outputs), _mask_channels(plan))
    workers = max(1, default_num_workers() // 2) if num_workers is None else num_workers
    return _augmenter(loader, transform, workers, seed, pin_memory)
