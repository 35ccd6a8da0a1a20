"""Run a command and measure it: wall seconds, peak memory of its whole process tree, timed output.

    python benchmarks/peers/measure.py -- satnet plan-and-preprocess RAW -o WORK   # prints JSON

Memory is measured two ways, because nnU-Net and satnet both work in pools of processes:
- `peak_tree_rss_mib` / `peak_tree_pss_mib`: the largest sum, over one sample, of the resident
  (RSS) or proportional (PSS: shared pages split between their users) memory of the command and
  all its descendants, sampled every `poll_s` seconds from /proc. RSS counts the pages a forked
  worker shares with its parent once per process, so it overstates; PSS does not. A peak shorter
  than `poll_s` can be missed.
- `max_process_rss_mib`: the kernel's exact peak RSS of the largest single process of the tree
  (getrusage of the waited-for child, as `/usr/bin/time -v` reports it).
Every output line (stdout and stderr together) is kept with its time since the start, so callers
can time phases from the lines a program prints, and is written to `log_path` when given.
Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

MIB = 1024 * 1024


@dataclass
class RunResult:
    """What `run_measured` measured. Times in seconds, memory in MiB."""

    command: list[str]
    returncode: int
    wall_s: float
    peak_tree_rss_mib: float
    peak_tree_pss_mib: float
    peak_tree_processes: int
    max_process_rss_mib: float
    log_path: str | None = None
    lines: list[tuple[float, str]] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The JSON-ready fields, without the output lines."""
        out = asdict(self)
        del out["lines"]
        return out

    def first_time(self, text: str) -> float | None:
        """Seconds from the start to the first output line containing `text` (None if none does)."""
        return next((t for t, line in self.lines if text in line), None)

    def times(self, text: str) -> list[float]:
        """Seconds from the start to every output line containing `text`."""
        return [t for t, line in self.lines if text in line]


def _parent_table() -> dict[int, int]:
    """pid -> parent pid for every process /proc shows."""
    table: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the process ended while we looked
            continue
        # The command name (field 2) may hold spaces or ')': the fields after the last ')' are fixed.
        table[int(entry.name)] = int(stat.rsplit(b")", 1)[1].split()[1])
    return table


def _tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_table().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _field_kib(path: str, key: str) -> int:
    """The `key:` line of a /proc status-like file, in KiB (0 when the process is gone)."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _MemorySampler(threading.Thread):
    """Samples the summed RSS and PSS of a process tree until stopped."""

    def __init__(self, root: int, poll_s: float):
        super().__init__(daemon=True)
        self.root, self.poll_s = root, poll_s
        self.peak_rss_kib = self.peak_pss_kib = self.peak_processes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _tree(self.root)
            rss = sum(_field_kib(f"/proc/{p}/status", b"VmRSS:") for p in pids)
            pss = sum(_field_kib(f"/proc/{p}/smaps_rollup", b"Pss:") for p in pids)
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop_event.wait(self.poll_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    poll_s: float = 0.2,
    echo: bool = False,
) -> RunResult:
    """Run `command` to its end and measure it (see the module docstring). Never raises on a non-zero exit.

    env: the full environment of the command (None: this process's). echo: also copy each output
    line to stderr as it arrives. Ctrl-C ends the command's whole process group.
    """
    command = [str(c) for c in command]
    log = open(log_path, "w", encoding="utf-8") if log_path else None
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=dict(env) if env is not None else None, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                            start_new_session=True)
    sampler = _MemorySampler(proc.pid, poll_s)
    sampler.start()
    lines: list[tuple[float, str]] = []
    try:
        for line in proc.stdout:
            t = time.perf_counter() - started
            lines.append((round(t, 3), line.rstrip("\n")))
            if log:
                log.write(f"[{t:9.3f}] {line}")
            if echo:
                sys.stderr.write(line)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        raise
    finally:
        sampler.stop()
        if log:
            log.close()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return RunResult(
        command=command, returncode=proc.returncode, wall_s=round(wall, 3),
        peak_tree_rss_mib=round(sampler.peak_rss_kib / 1024, 1),
        peak_tree_pss_mib=round(sampler.peak_pss_kib / 1024, 1),
        peak_tree_processes=sampler.peak_processes,
        max_process_rss_mib=round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        log_path=str(log_path) if log_path else None, lines=lines,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between memory samples (default 0.2)")
    parser.add_argument("--log", help="write the command's output here, each line with its time")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    result = run_measured(command, log_path=args.log, poll_s=args.poll, echo=True)
    print(json.dumps(result.summary(), indent=2))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
