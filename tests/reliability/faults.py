"""Faults injected into satnet's file writes, for tests only: SIGKILL mid-write, and a full disk.

`hook_writes(pattern, nth, fault)` wraps both of satnet's atomic writers so that the `nth` write of
a file whose name matches the fnmatch `pattern` leaves half of its bytes in the temporary file and
then calls `fault`:
- satnet.contracts.atomic_write (JSON, .npy, .pt, .npz), rebound in every satnet module that
  imported it by name;
- satnet.io.images._write_atomically (segmentations: the file is written into its temporary
  folder, then cut to half).
`kill` SIGKILLs the process (no cleanup, no exception handler runs, as with the OOM killer or a
power cut); `disk_full` raises OSError ENOSPC, as a write to a full disk does (without a file name).

As a program, the satnet CLI with a kill hooked in by the environment:

    SATNET_TEST_KILL="checkpoint_latest.pt:2" python -m tests.reliability.faults train WORK 3d 0 ...

dies during the 2nd write of checkpoint_latest.pt. Worker processes forked by the preprocessing
pool inherit the hook and count their own writes (with `-j 2` the kill lands in a worker).
"""
from __future__ import annotations

import errno
import fnmatch
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

ENV = "SATNET_TEST_KILL"
REPO = Path(__file__).resolve().parents[2]


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def disk_full() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def hook_writes(pattern: str, nth: int, fault: Callable[[], None],
                patch: Callable[[object, str, object], None] = setattr) -> None:
    """Make the `nth` write of a file matching `pattern` half-write and call `fault`; `patch` sets the
    attributes (monkeypatch.setattr in a test, so they are restored)."""
    import satnet.contracts
    import satnet.io.images

    seen = [0]

    def hit(path) -> bool:
        if fnmatch.fnmatch(Path(path).name, pattern):
            seen[0] += 1
            return seen[0] == nth
        return False

    original_atomic_write = satnet.contracts.atomic_write

    def atomic_write(path, write):
        if not hit(path):
            return original_atomic_write(path, write)

        def half_then_fault(f) -> None:
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            fault()

        return original_atomic_write(path, half_then_fault)

    original_segmentation_write = satnet.io.images._write_atomically

    def write_atomically(path, write):
        if not hit(path):
            return original_segmentation_write(path, write)

        def half_then_fault(p: Path) -> None:
            write(p)
            data = p.read_bytes()
            p.write_bytes(data[: len(data) // 2])
            fault()

        return original_segmentation_write(path, half_then_fault)

    for module in [m for name, m in sys.modules.items() if name.startswith("satnet.")]:
        if getattr(module, "atomic_write", None) is original_atomic_write:
            patch(module, "atomic_write", atomic_write)
    patch(satnet.io.images, "_write_atomically", write_atomically)


def run_killed(argv: Sequence[str], kill: str, expect_killed: bool = True) -> subprocess.CompletedProcess:
    """`python -m tests.reliability.faults ARGV` with SATNET_TEST_KILL=`kill`; checks it died of SIGKILL."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", ENV: kill}
    result = subprocess.run([sys.executable, "-m", "tests.reliability.faults", *map(str, argv)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    if expect_killed:
        assert result.returncode == -signal.SIGKILL, f"not killed at {kill!r}:\n{result.stderr[-3000:]}"
    return result


def stray_temporaries(folder: Path) -> list[str]:
    """Hidden temporary files or folders ('.name.XXXX.tmp') left under `folder` by an interrupted write."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob(".*.tmp"))


if __name__ == "__main__":
    if os.environ.get(ENV):
        name, _, count = os.environ[ENV].rpartition(":")
        hook_writes(name, int(count), kill)
    from satnet.cli import main

    sys.exit(main(sys.argv[1:]))
