"""Every bad input of the corpus fails loudly, early and cleanly (corpus.py says what is checked); the
real `satnet` process prints no traceback unless --debug."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.breakers import Unavailable
from tests.reliability.corpus import CASES, BadInput, case_by_name
from tests.reliability.sandbox import make_sandbox

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_with_one_clear_message_and_writes_nothing(case: BadInput, bases, tmp_path):
    try:
        _, result = case.run(tmp_path, bases)
    except Unavailable as exc:
        pytest.skip(str(exc))
    assert case.failures(result) == [], result.stderr


@pytest.mark.slow
def test_the_satnet_process_shows_a_traceback_only_with_debug(bases, tmp_path):
    case = case_by_name("truncated_image")
    box = make_sandbox(tmp_path, bases, case.uses)
    case.breaks(box)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = {debug: subprocess.Popen([sys.executable, "-m", "satnet.cli", *case.argv(box), *(["--debug"] * debug)],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for debug in (False, True)}  # side by side: each spends seconds importing
    for debug, process in runs.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1 and case.names in stderr
        assert ("Traceback" in stderr) == debug, stderr
    assert not box.work.exists()
