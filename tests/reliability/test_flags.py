"""Every typed flag of every subcommand refuses out-of-range values: argparse's exit code 2 and a message
naming the flag and the value, before anything is read or written."""
from __future__ import annotations

import pytest

from satnet.cli import main
from tests.reliability.flags import PREFIX, flag_cases
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


@pytest.mark.parametrize("subcommand, flag, values", [
    ("plan-and-preprocess", "--configs", "3d 3d"), ("plan", "--configs", "2d 3d 2d"),
    ("preprocess", "--configs", "2d 2d"),
    ("predict", "-f/--folds", "0 1 0"), ("predict", "-c/--config", "3d 3d"),
    ("export", "-f/--folds", "all all"), ("evaluate", "-l/--labels", "1 1"),
])
def test_a_list_flag_refuses_a_value_given_twice(subcommand, flag, values, tmp_path, capsys):
    # Before, `--configs 3d 3d` planned a 3d configuration for 2D images (`--configs 3d` is refused for them), and
    # `-f 0 0` loaded fold 0 twice.
    words = [w.replace("{dir}", str(tmp_path)) for w in PREFIX[subcommand]]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *words, flag.split("/")[-1], *values.split()])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    twice = next(v for i, v in enumerate(values.split()) if v in values.split()[:i])
    assert err.strip().splitlines()[-1] == (f"satnet {subcommand}: error: argument {flag}: {twice} is given more "
                                            f"than once ({values}); give each value once"), err
    assert snapshot(tmp_path) == before


def test_a_file_where_a_folder_is_expected_is_not_called_missing(tmp_path, capsys):
    # Before: "must be an existing folder, not '.../case_000_0000.nii.gz' (no such folder)" for a file that exists.
    scan = tmp_path / "case_000_0000.nii.gz"
    scan.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "-i", str(scan), "-o", str(tmp_path / "out"), "-m", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"satnet predict: error: argument -i/--input: must be an existing folder, not {str(scan)!r} (a file: give the "
        f"folder that holds it)")
