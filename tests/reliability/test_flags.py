"""Every typed flag of every subcommand refuses out-of-range values: argparse's exit code 2 and a message
naming the flag and the value, before anything is read or written."""
from __future__ import annotations

import pytest

from satnet.cli import main
from tests.reliability.flags import flag_cases
from tests.reliability.sandbox import snapshot

CASES = flag_cases()


def test_every_subcommand_has_checked_flags():
    assert {c.subcommand for c in CASES} == {"plan-and-preprocess", "plan", "preprocess", "train", "predict",
                                             "evaluate", "find-best", "visualize", "demo", "export"}
    assert len({(c.subcommand, c.flag) for c in CASES}) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_out_of_range_flag_value_exits_2_naming_flag_and_value(case, tmp_path, capsys):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(case.argv(tmp_path))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"satnet {case.subcommand}: error: argument {case.flag}: "), err
    assert repr(case.value.split(" ")[-1]) in message or repr(case.value) in message, err
    assert "Traceback" not in err and snapshot(tmp_path) == before
