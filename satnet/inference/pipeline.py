"""Case-by-case prediction with reading and writing overlapped with the network's work.

While the network predicts case i (in the calling thread: torch runs its own thread pool and
releases the GIL), one background thread already reads and preprocesses case i + 1 and another
exports and writes case i - 1. At most one case waits at each end, so memory stays at about
three cases. A case whose step raises a `SatnetError` (an unreadable file, a wrong channel
count) is recorded as failed and the others go on; any other exception stops the run.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from tqdm import tqdm

from satnet.errors import SatnetError

logger = logging.getLogger(__name__)

T = TypeVar("T")
L = TypeVar("L")
P = TypeVar("P")


@dataclass
class PredictionReport:
    """What a prediction run did: case ids predicted, skipped (outputs existed) and failed (id -> reason)."""

    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # case id -> wall seconds from its start to its mask
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # case id -> the process's peak RSS when it ended

    @property
    def ok(self) -> bool:
        return not self.failed

    def failure_summary(self) -> str:
        """One line per failed case, 'case: reason' (the reason's first line)."""
        return "\n".join(f"  - {case}: {reason}" for case, reason in sorted(self.failed.items()))


@dataclass
class _Job(Generic[T]):
    item: T
    name: str
    started: float


def run_pipelined(
    items: Sequence[T],
    load: Callable[[T], L],
    predict: Callable[[L], P],
    finish: Callable[[P], None],
    name: Callable[[T], str],
    desc: str = "predict",
) -> PredictionReport:
    """For each item: load (background thread) -> predict (this thread) -> finish (background thread).

    Returns the report; `predicted` lists the items whose `finish` completed, in order.
    """
    report = PredictionReport()
    loader = ThreadPoolExecutor(1, thread_name_prefix="satnet-load")
    writer = ThreadPoolExecutor(1, thread_name_prefix="satnet-write")
    writes: deque[tuple[_Job, Future]] = deque()
    try:
        next_load = loader.submit(load, items[0]) if items else None
        for i, item in enumerate(tqdm(items, desc=desc, unit="case", disable=None)):
            job = _Job(item, name(item), time.perf_counter())
            loading, next_load = next_load, (loader.submit(load, items[i + 1]) if i + 1 < len(items) else None)
            try:
                result = predict(loading.result())
            except SatnetError as exc:
                _fail(report, job.name, exc)
                continue
            while writes:  # at most one case waits to be written
                _collect(report, *writes.popleft())
            writes.append((job, writer.submit(finish, result)))
            del result
        while writes:
            _collect(report, *writes.popleft())
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    return report


def _collect(report: PredictionReport, job: _Job, future: Future) -> None:
    try:
        future.result()
    except SatnetError as exc:
        _fail(report, job.name, exc)
        return
    report.predicted.append(job.name)
    report.seconds[job.name] = round(time.perf_counter() - job.started, 3)
    report.peak_rss_mb[job.name] = round(peak_rss_mb(), 1)
    logger.info("%s: done in %.1f s", job.name, report.seconds[job.name])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fail(report: PredictionReport, name: str, exc: SatnetError) -> None:
    report.failed[name] = str(exc).strip()
    logger.error("%s: skipped: %s", name, str(exc).strip().splitlines()[0])
