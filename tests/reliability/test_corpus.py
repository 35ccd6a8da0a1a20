"""Every bad input of the corpus fails loudly, early and cleanly (see corpus.py for what is checked)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.breakers import Unavailable
from tests.reliability.corpus import CASES, BadInput
from tests.reliability.sandbox import build_bases, make_sandbox, run_cli


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> dict[str, Path]:
    return build_bases(tmp_path_factory.mktemp("corpus_bases"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_with_one_clear_message_and_writes_nothing(case: BadInput, bases, tmp_path):
    box = make_sandbox(tmp_path, bases, case.uses)
    try:
        case.breaks(box)
    except Unavailable as exc:
        pytest.skip(str(exc))
    result = run_cli(case.argv(box), watch=box.root)
    errors = [line for line in result.stderr.splitlines() if ": error:" in line]
    assert result.code == case.code, result.stderr
    assert len(errors) == 1 and errors[0].startswith(f"satnet {result.argv[0]}: error:"), result.stderr
    assert case.names in result.stderr and case.fix in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.changes == [], result.changes
