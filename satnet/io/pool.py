"""Mapping a function over cases in worker processes, with a progress bar.

Used wherever every case of a dataset is read (the dataset check here; the fingerprint and
preprocessing stages may use it too). `fn` must be a module-level function and the items
picklable, so the pool works with every start method: 'fork' (Linux default before Python
3.14), 'spawn' (macOS, Windows) and 'forkserver'.
"""
from __future__ import annotations

import multiprocessing
import signal
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
    others = {p.pid for p in multiprocessing.active_children()}  # children that are not this pool's
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_interrupts)
    try:
        results = list(tqdm(pool.map(fn, items, chunksize=chunksize), **bar))
    except BrokenProcessPool:
        pool.shutdown(wait=True)
        raise SatnetError(
            f"a worker process died{f' ({desc})' if desc else ''}, killed by the system, most often for lack of "
            f"memory; rerun with fewer workers (-j 1 needs the least memory): finished cases are kept"
        ) from None
    except BaseException:  # Ctrl-C, SIGTERM (satnet.cli turns it into an exception), any error in the parent
        stop_workers(pool, spare=others)
        raise
    pool.shutdown(wait=True)
    return results


def _ignore_interrupts() -> None:
    """Worker initializer: Ctrl-C reaches the whole process group, but only the parent should handle it
    (it stops the workers); otherwise every worker prints a KeyboardInterrupt traceback.

    SIGTERM gets its default action back: a forked worker inherits satnet.cli's handler, which raises
    `Terminated`, so `stop_workers` (and a pool shutting down) made every worker print a traceback.
    A worker ended mid-write leaves at most a hidden temporary file, which the next run removes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_workers(pool: ProcessPoolExecutor, spare: set[int] | frozenset[int] = frozenset()) -> None:
    """Terminate the pool's processes now, without waiting for the cases they are on.

    A worker deep in one large case (minutes of resampling in C code) would otherwise hold up a Ctrl-C
    until it finished. Outputs are written atomically, so a case cut short leaves no partial file.
    Every child process of this one not in `spare` (the pids of children older than the pool) counts
    as the pool's: a Ctrl-C while the pool forks its workers can land after a worker started and
    before the pool recorded it (between `Process.start()` and the pool's bookkeeping), and
    multiprocessing's exit handler would then wait for that idle worker for ever.
    """
    pool_processes = list((getattr(pool, "_processes", None) or {}).values())
    strays = [p for p in multiprocessing.active_children() if p.pid not in spare]
    for process in {id(p): p for p in pool_processes + strays}.values():
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def default_workers() -> int:
    """Half the usable cores, at least 1 (each worker also runs numpy/scipy threads)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)
