"""Mapping a function over cases in worker processes, with a progress bar.

Used wherever every case of a dataset is read (the dataset check here; the fingerprint and
preprocessing stages may use it too). `fn` must be a module-level function and the items
picklable, so the pool works with every start method: 'fork' (Linux default before Python
3.14), 'spawn' (macOS, Windows) and 'forkserver'.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

from satnet.errors import SatnetError

T = TypeVar("T")
R = TypeVar("R")


def map_cases(
    fn: Callable[[T], R], items: Sequence[T], workers: int = 1, desc: str = "", start_method: str | None = None
) -> list[R]:
    """[fn(item) for item in items], in order, in `workers` processes (in this process when 1).

    start_method: 'fork', 'spawn' or 'forkserver'; None uses multiprocessing's current
    default. The tqdm bar shows on a terminal and stays silent in logs and tests.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    bar = dict(total=len(items), desc=desc, unit="case", disable=None)
    if workers == 1 or len(items) <= 1:
        return [fn(item) for item in tqdm(items, **bar)]
    context = multiprocessing.get_context(start_method)
    workers = min(workers, len(items))
    # a few chunks per worker: few round trips for many small cases, yet a balanced load
    chunksize = max(1, len(items) // (workers * 4))
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            return list(tqdm(pool.map(fn, items, chunksize=chunksize), **bar))
    except BrokenProcessPool:
        raise SatnetError(
            f"a worker process died{f' ({desc})' if desc else ''}, killed by the system, most often for lack of "
            f"memory; rerun with fewer workers (-j 1 needs the least memory): finished cases are kept"
        ) from None


def default_workers() -> int:
    """Half the usable cores, at least 1 (each worker also runs numpy/scipy threads)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)
