"""Helpers of the fault tests: run the CLI in a subprocess that SIGKILLs itself mid-write (crash.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from tests.reliability.crash import ENV

REPO = Path(__file__).resolve().parents[2]


def run_killed(argv: Sequence[str], kill: str, expect_killed: bool = True) -> subprocess.CompletedProcess:
    """`python -m tests.reliability.crash ARGV` with SATNET_TEST_KILL=`kill`; checks it died of SIGKILL."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", ENV: kill}
    result = subprocess.run([sys.executable, "-m", "tests.reliability.crash", *map(str, argv)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    if expect_killed:
        assert result.returncode == -signal.SIGKILL, f"not killed at {kill!r}:\n{result.stderr[-3000:]}"
    return result


def stray_temporaries(folder: Path) -> list[str]:
    """Hidden temporary files or folders ('.name.XXXX.tmp') left under `folder` by an interrupted write."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob(".*.tmp"))
