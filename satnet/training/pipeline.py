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
import queue as thread_queue
import random
import threading
import weakref
from multiprocessing import Process, Queue
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter, producer, results_loop
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import Compose
from threadpoolctl import threadpool_limits

from satnet.errors import ConfigError, InputError
from satnet.nets import deep_supervision_offsets, deep_supervision_scales
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

    def _start(self) -> None:
        """batchgenerators' _start, except that the collecting thread stops on an event of its own.

        The workers hand tensors over as shared-memory file descriptors that the receiver fetches
        from the live sender while unpickling. With one abort event for both, a worker that was
        mid-batch when paused puts its batch and exits at the same moment as the collecting thread
        may be unpickling it, which fails (FileNotFoundError, ConnectionResetError) in that thread.
        A separate event lets close() stop and join the thread before any worker may exit.
        """
        if self.was_initialized:
            return
        self._finish()
        self.abort_event.clear()
        self.pause_event.clear()
        self._collector_stop = _CollectorStop(self.abort_event)
        self._queue_ctr = self._end_ctr = 0
        if hasattr(self.generator, "was_initialized"):
            self.generator.was_initialized = False
        with threadpool_limits(limits=1, user_api="blas"):
            for i in range(self.num_processes):
                self._queues.append(Queue(self.num_cached_per_queue))
                self._processes.append(Process(target=producer, daemon=True, args=(
                    self._queues[i], self.generator, self.transform, i, self.seeds[i], self.abort_event,
                    self.pause_event, self.wait_time)))
                self._processes[-1].start()
        gpu = torch.cuda.current_device() if torch.cuda.is_available() else None
        self.pin_memory_queue = thread_queue.Queue(max(3, self.num_cached_per_queue * self.num_processes // 2))
        self.pin_memory_thread = threading.Thread(target=results_loop, daemon=True, args=(
            self._queues, self.pin_memory_queue, self._collector_stop, self.pin_memory, gpu, self.wait_time,
            self._processes))
        self.pin_memory_thread.start()
        self.was_initialized = True

    def close(self) -> None:
        """Stop and join the collecting thread, then the worker processes (waits at most ~15 s).

        The workers are paused first and stay alive until the thread has stopped, so every batch
        the thread unpickles comes from a live worker; batches still queued are dropped by
        batchgenerators' shutdown, which ignores a descriptor it cannot fetch.
        """
        self._finish()

    def _finish(self, timeout: float = 10, force: bool = False) -> None:
        if self.pin_memory_thread is not None:
            self.pause_event.set()
            self._collector_stop.stop_collecting()
            self.pin_memory_thread.join(timeout=timeout)
        super()._finish(timeout, force)

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "WorkerAugmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _CollectorStop:
    """The collecting thread's stop signal: set by close(), or by the workers' abort (a worker failed)."""

    def __init__(self, workers_abort) -> None:
        self._own = threading.Event()
        self._workers_abort = workers_abort

    def is_set(self) -> bool:
        return self._own.is_set() or self._workers_abort.is_set()

    def set(self) -> None:
        self._own.set()
        self._workers_abort.set()  # the thread found a dead worker: make next() raise, as batchgenerators does

    def stop_collecting(self) -> None:
        self._own.set()


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


def _deep_supervision(plan: ConfigurationPlan, outputs: int | None) -> dict[str, list[list[float]] | None]:
    """The first `outputs` deep-supervision outputs' scales and offsets (satnet.nets.deep_supervision_scales
    and deep_supervision_offsets) as keyword arguments of the transforms; None for none."""
    scales = deep_supervision_scales(plan.network)
    if outputs is None:
        outputs = len(scales) if plan.network.deep_supervision else 0
    if outputs > len(scales):
        raise ConfigError(f"deep_supervision_outputs must be at most {len(scales)} (the network's decoder stages), "
                          f"not {outputs}")
    if outputs <= 0:
        return {"deep_supervision": None, "deep_supervision_offsets": None}
    return {"deep_supervision": scales[:outputs],
            "deep_supervision_offsets": deep_supervision_offsets(plan.network)[:outputs]}


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
    num_foreground: int | None = None,
) -> SingleProcessAugmenter | WorkerAugmenter:
    """Endless augmented training batches of the cases `case_ids` in `folder` for configuration `plan`.

    Yields dicts with 'data', a float32 tensor (B, C, *patch), 'target', an int64 tensor
    (B, 1, *patch) or, with deep supervision, a list of them at the scales of
    `satnet.nets.deep_supervision_scales` (full resolution first), each sampled on the network's grid
    at that scale (`satnet.nets.deep_supervision_offsets`), and 'keys', the case ids.

    - num_workers: 0 runs in this process (deterministic for a given seed); n > 0 uses n
      background processes; None: `default_num_workers()`.
    - deep_supervision_outputs: how many network outputs get targets; None: num_stages - 1 when
      plan.network.deep_supervision, else none; 0: 'target' is a single tensor.
    - pin_memory: None pins only when CUDA is available.
    - augmentation: None: `default_augmentation(plan.patch_size, plan.spacing)`.
    - num_foreground: samples per batch centred on foreground; None: PatchDataLoader's default
      share (a DDP rank passes its share of the global batch's, rank_foreground_samples).
    Call `.close()` (or use `with`) to stop the workers.
    """
    config = augmentation or default_augmentation(plan.patch_size, plan.spacing)
    loader = PatchDataLoader(
        folder, case_ids, plan.patch_size, plan.batch_size, read_size=enlarged_patch_size(plan.patch_size, config),
        seed=seed, num_foreground=num_foreground,
    )
    transform = training_transforms(
        plan.patch_size, config, mask_channels=_mask_channels(plan), **_deep_supervision(plan, deep_supervision_outputs)
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
    num_foreground: int | None = None,
) -> SingleProcessAugmenter | WorkerAugmenter:
    """Endless unaugmented patches (same sampling, foreground oversampling included) for the online
    pseudo-Dice; batches as `get_training_pipeline`. num_workers None: half the default, at least 1.
    """
    loader = PatchDataLoader(folder, case_ids, plan.patch_size, plan.batch_size, seed=seed, num_foreground=num_foreground)
    transform = validation_transforms(
        mask_channels=_mask_channels(plan), **_deep_supervision(plan, deep_supervision_outputs)
    )
    workers = max(1, default_num_workers() // 2) if num_workers is None else num_workers
    return _augmenter(loader, transform, workers, seed, pin_memory)
