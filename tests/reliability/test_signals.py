"""Ctrl-C and SIGTERM stop every worker promptly and leave nothing half-written.

Before: SIGTERM ended `satnet train` on the spot and left its augmentation worker running as an orphan
(parent PID 1) for over a minute; Ctrl-C during preprocessing waited for the case each worker was on
(minutes for a large one)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.training.trainer_work_dir import make_work_dir

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def children(pid: int) -> set[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()
            and (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")}


def wait_for(condition, timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def test_ctrl_c_stops_pool_workers_busy_with_a_long_case():
    code = "import time; from satnet.io.pool import map_cases; map_cases(time.sleep, [600.0] * 4, workers=2)"
    # SIGINT's default action, as under a terminal: a suite started in the background by a shell without job
    # control (`bash .ci/run &`) inherits SIGINT ignored, and Python keeps it ignored in the child
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_for(lambda: len(children(proc.pid)) >= 2, 30), "the pool never started"
        workers = children(proc.pid)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        assert time.monotonic() - started < 10
        assert wait_for(lambda: not alive(workers), 10), f"workers left running: {alive(workers)}"
        assert proc.returncode != 0
    finally:
        proc.kill()


class _InterruptedWhileForking(ProcessPoolExecutor):
    """A pool whose Ctrl-C lands after it forked a worker and before it recorded it (a race seen once in CI)."""

    stray: multiprocessing.process.BaseProcess | None = None

    def map(self, fn, *iterables, **kwargs):  # type: ignore[override]
        stray = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
        stray.start()
        type(self).stray = stray
        raise KeyboardInterrupt


def test_ctrl_c_while_the_pool_forks_stops_the_worker_it_had_not_recorded(monkeypatch):
    # multiprocessing's exit handler joins every child: the unrecorded idle worker kept satnet from exiting
    from satnet.io import pool

    monkeypatch.setattr(pool, "ProcessPoolExecutor", _InterruptedWhileForking)
    older = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
    older.start()  # a child from before the pool: not the pool's to stop
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.map_cases(time.sleep, [0.0, 0.0], workers=2, start_method="fork")
        stray = _InterruptedWhileForking.stray
        stray.join(timeout=10)
        assert not stray.is_alive() and older.is_alive()
    finally:
        for process in (older, _InterruptedWhileForking.stray):
            if process is not None and process.is_alive():
                process.kill()


def _sigterm_action(_: object) -> str:
    return str(signal.getsignal(signal.SIGTERM))


def test_pool_workers_take_the_default_sigterm_action():
    # A forked worker inherited satnet.cli's SIGTERM handler, so stopping the pool (after any error in a
    # case) made every worker print a "satnet.cli.Terminated" traceback.
    from satnet.cli import _raise_terminated
    from satnet.io.pool import map_cases

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        actions = map_cases(_sigterm_action, [0, 1], workers=2, start_method="fork")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert actions == [str(signal.SIG_DFL)] * 2


@pytest.mark.slow
def test_sigterm_ends_train_and_its_augmentation_workers(tmp_path):
    work = make_work_dir(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "satnet.cli", "train", str(work), "3d", "0", "--epochs", "1000",
                             "--iterations-per-epoch", "20", "--val-iterations", "1", "--workers", "1", "-q"],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    fold = work / "results" / "3d" / "fold_0"
    try:
        assert wait_for(lambda: (fold / "checkpoint_latest.pt").is_file(), 120), "no epoch finished"
        workers = children(proc.pid)
        assert workers, "no augmentation worker found"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30
        assert proc.returncode == 143, err
        assert "terminated (SIGTERM)" in err and "--resume" in err
        assert wait_for(lambda: not alive(workers), 15), f"workers left running: {alive(workers)}"
        assert not list(fold.glob(".*.tmp")), "a half-written file was left"
    finally:
        proc.kill()
    resumed = subprocess.run([sys.executable, "-m", "satnet.cli", "train", str(work), "3d", "0", "--resume",
                              "--iterations-per-epoch", "20", "--val-iterations", "1", "--workers", "0",
                              "--epochs", "2", "--no-validation", "-q"], env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def test_a_sigterm_that_surfaces_as_another_error_still_ends_with_143(tmp_path, monkeypatch, capsys):
    # Seen in CI: SIGTERM landed while matplotlib's C extension initialised, and the import turned the
    # Terminated into "ImportError: initialization failed" (raised from it): a traceback and exit code 1.
    import satnet.cli.predict as predict_cli
    from satnet.cli import Terminated, main

    def import_interrupted(args):
        try:
            raise Terminated()
        except Terminated as exc:
            raise ImportError("initialization failed") from exc

    monkeypatch.setattr(predict_cli, "_run_evaluate", import_interrupted)
    assert main(["evaluate", str(tmp_path), str(tmp_path)]) == 143
    err = capsys.readouterr().err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err

    def plain_import_error(args):
        raise ImportError("initialization failed")

    monkeypatch.setattr(predict_cli, "_run_evaluate", plain_import_error)
    with pytest.raises(ImportError):  # an error that no SIGTERM caused is not hidden
        main(["evaluate", str(tmp_path), str(tmp_path)])
