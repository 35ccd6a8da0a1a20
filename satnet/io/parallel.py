"""Run a function over cases in worker processes, in order, with a progress bar.

Used by the dataset check, the fingerprint and preprocessing (`-j N`). With workers <= 1 it
runs in this process (simplest to debug, and what tests use). Results come back in the order
of the inputs, so outputs do not depend on the number of workers.
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Half the usable cores, at least 1 (each worker also runs numpy/scipy threads)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def _context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and they only run numpy/scipy/SimpleITK code; spawn
    # where fork is unavailable (macOS default, Windows).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def map_cases(
    fn: Callable[..., R], items: Sequence[T], workers: int, desc: str, **kwargs: Any
) -> list[R]:
    """[fn(item, **kwargs) for item in items], in `workers` processes, with a tqdm bar `desc`."""
    call = functools.partial(fn, **kwargs)
    disable = None if log.isEnabledFor(logging.INFO) else True
    bar_args = dict(total=len(items), desc=desc, unit="case", disable=disable, leave=False)
    if workers <= 1 or len(items) <= 1:
        return [call(item) for item in tqdm(items, **bar_args)]
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=_context()) as pool:
        chunksize = max(1, min(16, len(items) // (workers * 8)))
        return list(tqdm(pool.map(call, items, chunksize=chunksize), **bar_args))
