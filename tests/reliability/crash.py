"""Run the satnet CLI and SIGKILL it in the middle of a chosen file write (tests only).

    SATNET_TEST_KILL="checkpoint_latest.pt:2" python -m tests.reliability.crash train WORK 3d 0 ...

kills the process (SIGKILL: no cleanup, no exception handlers, as the OOM killer or a power cut
would) during the 2nd write of a file named checkpoint_latest.pt, with half of the new bytes in
the temporary file. The pattern is an fnmatch glob on the file name ("*.npy:3": the 3rd .npy).
Both of satnet's atomic writers are hooked: satnet.contracts.atomic_write (JSON, .npy, .pt, .npz)
and satnet.io.images._write_atomically (segmentations; killed after the file is written, before
it is moved into place). Without SATNET_TEST_KILL this is `python -m satnet.cli`.

The hook is installed before satnet.cli imports anything, so every module that imports
`atomic_write` by name gets the hooked one. Worker processes forked by the preprocessing pool
inherit it and count their own writes: with `-j 2` the kill lands in a worker.
"""
from __future__ import annotations

import fnmatch
import io
import os
import signal
import sys
from pathlib import Path

ENV = "SATNET_TEST_KILL"


def _parse(spec: str) -> tuple[str, int]:
    pattern, _, count = spec.rpartition(":")
    return pattern, int(count)


def install(spec: str) -> None:
    """Hook satnet's atomic writers to SIGKILL this process at the write `spec` ("glob:n") names."""
    import satnet.contracts
    import satnet.io.images

    pattern, target = _parse(spec)
    seen = [0]

    def hit(path) -> bool:
        if fnmatch.fnmatch(Path(path).name, pattern):
            seen[0] += 1
            return seen[0] == target
        return False

    original_atomic_write = satnet.contracts.atomic_write

    def atomic_write(path, write):
        if not hit(path):
            return original_atomic_write(path, write)

        def half_then_die(f) -> None:
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        return original_atomic_write(path, half_then_die)

    original_segmentation_write = satnet.io.images._write_atomically

    def write_atomically(path, write):
        if not hit(path):
            return original_segmentation_write(path, write)

        def written_then_die(p) -> None:
            write(p)
            os.kill(os.getpid(), signal.SIGKILL)

        return original_segmentation_write(path, written_then_die)

    satnet.contracts.atomic_write = atomic_write
    satnet.io.images._write_atomically = write_atomically
    for module in list(sys.modules.values()):  # any satnet module that already imported it by name
        if getattr(module, "__name__", "").startswith("satnet.") and getattr(module, "atomic_write", None) is \
                original_atomic_write:
            module.atomic_write = atomic_write


if __name__ == "__main__":
    if os.environ.get(ENV):
        install(os.environ[ENV])
    from satnet.cli import main

    sys.exit(main(sys.argv[1:]))
