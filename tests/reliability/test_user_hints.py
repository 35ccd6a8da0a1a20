"""Small things a new user hit (the trust issue, item 8): hints that paste into a shell, help for every
subcommand and flag, a progress plot that shows a one-epoch run, pictures that say which slice they show,
the DDP batch warning."""
from __future__ import annotations

import argparse
import shlex

import pytest

from satnet.cli import build_parser, main
from satnet.errors import command
from satnet.inference.visualize import _slice_words
from satnet.synthetic import make_dataset_3d
from satnet.training.distributed import batch_warning
from satnet.training.progress import EpochRecord, TrainingLog, progress_figure


def test_next_hint_survives_a_path_with_spaces(tmp_path, capsys):
    raw = make_dataset_3d(tmp_path / "raw data", num_cases=3)
    work = tmp_path / "my work"
    assert main(["plan", str(raw), "-o", str(work), "--configs", "3d", "-q"]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("next: "))
    assert shlex.split(hint[len("next: "):]) == ["satnet", "train", str(work), "3d", "0"]
    assert shlex.split(command("satnet", "predict", "-m", "a b")) == ["satnet", "predict", "-m", "a b"]


def test_every_subcommand_has_a_description_and_every_flag_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert sub.description, f"satnet {name} has no description"
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"satnet {name} {'/'.join(action.option_strings) or action.dest} has no help"


def test_a_one_epoch_run_draws_points():
    log = TrainingLog("3d", "0", ["left"])
    log.append(EpochRecord(epoch=0, train_loss=0.5, val_loss=0.4, pseudo_dice=[0.3], mean_dice=0.3, ema_dice=0.3,
                           lr=0.01, seconds=1.0))
    lines = [line for ax in progress_figure(log).axes for line in ax.get_lines()]
    assert lines and all(line.get_marker() not in (None, "", "None") for line in lines)


def test_pictures_say_which_slice_they_show():
    assert "slice Z = 7 of the patch" in _slice_words({"axis": "Z", "index": 7, "of": "patch"}, 5)
    assert _slice_words({"axis": "Z", "index": 0, "of": "volume"}, 4) == ""
    words = _slice_words({"axis": "X", "index": 3, "of": "patch"}, 5)  # a configuration that put thick X first
    assert "slice X = 3 of the patch" in words and "axial" not in words


def test_more_ranks_than_the_batch_is_said():
    assert batch_warning(8, 2) is None
    message = batch_warning(2, 4)
    assert "each rank takes 1, so every step trains on 4 samples, not 2" in message and "--batch-size 4" in message
    assert "trains on 6 samples, not 7" in batch_warning(7, 2)


def test_python_dash_m_satnet_is_the_satnet_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "satnet", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("satnet "), result.stderr


def test_a_bad_skip_levels_entry_says_what_is_wrong_with_it(tmp_path, capsys):
    for value, reason in (("org:2", "use sat:2 or at:2, or drop the count"),
                          ("sat:0", "must be a positive integer, not 0 (given 'sat:0')")):
        with pytest.raises(SystemExit) as exit_info:
            main(["plan", str(tmp_path), "--skip-levels", value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --skip-levels:" in err and reason in err, err


def test_debug_verbose_and_quiet_work_before_the_subcommand_too(tmp_path, capsys):
    # `satnet -v plan ...` was "unrecognized arguments"; the flags only worked after the subcommand
    missing = str(tmp_path / "no_such_dataset")
    for argv in (["-q", "plan", missing], ["plan", missing, "-q"], ["--debug", "-v", "plan", missing]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "must be an existing folder" in capsys.readouterr().err
    args = build_parser().parse_args(["--debug", "evaluate", str(tmp_path), str(tmp_path), "-q"])
    assert args.before_debug and args.quiet and not args.debug  # main() merges them
    with pytest.raises(SystemExit):
        main(["-v", "evaluate", str(tmp_path), str(tmp_path), "-q"])
    assert "-q/--quiet: not allowed with argument -v/--verbose" in capsys.readouterr().err


def test_a_list_flag_that_took_the_positional_argument_is_named(tmp_path, capsys):
    # `plan --spacing 2 RAW` said only that RAW_DATASET_DIR was missing: --spacing had taken RAW as a value
    for argv in (["plan", "--spacing", "2", str(tmp_path)], ["evaluate", "-l", "1", str(tmp_path), str(tmp_path)]):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert "takes every word after it up to the next flag" in err and f"{argv[1]} takes" in err, err
    with pytest.raises(SystemExit):
        main(["plan", "--configs", "4d", str(tmp_path)])  # a bad value that is no path: no such hint
    assert "takes every word" not in capsys.readouterr().err
