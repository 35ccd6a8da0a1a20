"""Tests of the peer-benchmark tooling that needs no nnU-Net run (a few seconds):

    python -m pytest -q benchmarks/peers

Part of the project's suite (pytest.ini's testpaths), so CI runs them; the scripts themselves are
run by hand. The one test that asks nnU-Net itself for its default split skips when the nnU-Net
venv is absent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nnunet_runs  # noqa: E402
from measure import RunResult, run_measured  # noqa: E402
from nnunet_env import (DEFAULT_VENV, NnunetSite, PeerSetupError, nnunet_default_folds,  # noqa: E402
                        same_folds, satnet_folds)
from run_nnunet import build_parser  # noqa: E402

from satnet.planning.splits import make_splits  # noqa: E402

CASES = [f"case_{i:03d}" for i in range(12)]


def _fake_result(lines: list[tuple[float, str]], wall_s: float) -> RunResult:
    return RunResult(command=["x"], returncode=0, wall_s=wall_s, peak_tree_rss_mib=0, peak_tree_pss_mib=0,
                     peak_tree_processes=1, max_process_rss_mib=0, lines=lines)


# measure.run_measured


def test_run_measured_counts_the_memory_of_child_processes(tmp_path):
    # The parent holds almost nothing; a grandchild holds 200 MiB for half a second.
    child = "import numpy as np, time; a = np.ones(200 * 2**20 // 8); time.sleep(0.6); print('child done')"
    parent = f"import subprocess, sys; print('start', flush=True); subprocess.run([sys.executable, '-c', {child!r}])"
    result = run_measured([sys.executable, "-c", parent], log_path=tmp_path / "log.txt", poll_s=0.05)
    assert result.returncode == 0
    assert result.peak_tree_processes >= 2
    assert result.peak_tree_rss_mib >= 200 and result.peak_tree_pss_mib >= 190
    assert result.max_process_rss_mib >= 200
    assert [line for _, line in result.lines] == ["start", "child done"]
    assert 0 <= result.first_time("start") <= result.first_time("child done") <= result.wall_s
    assert "child done" in (tmp_path / "log.txt").read_text()


def test_run_measured_reports_the_exit_code():
    result = run_measured([sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"])
    assert result.returncode == 3 and result.times("bye") and "lines" not in result.summary()


# nnunet_env: the scratch layout and the raw dataset


@pytest.fixture
def site(tmp_path) -> NnunetSite:
    """A raw dataset Dataset099_Toy of 12 cases with two channels, in a data folder of its own."""
    raw = tmp_path / "data" / "Dataset099_Toy"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0, "a": 1}}))
    for case in CASES:
        (raw / "labelsTr" / f"{case}.nii.gz").write_bytes(b"")
        for channel in (1, 0):
            (raw / "imagesTr" / f"{case}_{channel:04d}.nii.gz").write_bytes(b"")
    return NnunetSite(venv=tmp_path / "venv", scratch=tmp_path / "scratch", data=tmp_path / "data")


def test_dataset_is_linked_into_nnunet_raw_not_copied(site):
    assert site.dataset_name(99) == "Dataset099_Toy"
    link = site.raw / "Dataset099_Toy"
    assert link.is_symlink() and link.resolve() == (site.data / "Dataset099_Toy").resolve()
    assert site.case_ids(99) == CASES
    assert [f.name for f in site.image_files(99, "case_003")] == ["case_003_0000.nii.gz", "case_003_0001.nii.gz"]
    env = site.env()
    assert env["nnUNet_raw"] == str(site.raw) and env["nnUNet_results"] == str(site.results)


def test_missing_dataset_and_foreign_link_are_reported(site, tmp_path):
    with pytest.raises(PeerSetupError, match="Dataset004_"):
        site.dataset_name(4)
    site.raw.mkdir(parents=True)
    (site.raw / "Dataset099_Toy").symlink_to(tmp_path)
    with pytest.raises(PeerSetupError, match="points to"):
        site.dataset_name(99)


def test_missing_venv_names_the_setup_script(site):
    with pytest.raises(PeerSetupError, match="setup_nnunet.sh"):
        site.tool("nnUNetv2_train")


# splits


def test_default_satnet_folds_are_sklearn_kfold_over_sorted_ids():
    from sklearn.model_selection import KFold

    folds, is_default = satnet_folds(None, CASES)
    expected = [{"train": [CASES[i] for i in tr], "val": [CASES[i] for i in va]}
                for tr, va in KFold(5, shuffle=True, random_state=12345).split(CASES)]
    assert is_default and folds == expected


def test_satnet_splits_file_is_converted_and_compared(tmp_path):
    splits = make_splits(CASES).to_dict()
    moved = splits["folds"][0]["val"][0]
    splits["folds"][0]["val"].remove(moved)  # move one case from fold 0's val to fold 1's
    splits["folds"][0]["train"].append(moved)
    splits["folds"][1]["train"].remove(moved)
    splits["folds"][1]["val"].append(moved)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(splits))
    folds, is_default = satnet_folds(path, CASES)
    assert not is_default
    assert moved in folds[1]["val"] and moved not in folds[0]["val"]
    assert not same_folds(folds, satnet_folds(None, CASES)[0])
    with pytest.raises(PeerSetupError, match="missing"):
        satnet_folds(path, CASES + ["case_999"])


@pytest.mark.skipif(not (DEFAULT_VENV / "bin" / "python").exists(), reason="nnU-Net venv absent "
                    "(benchmarks/peers/setup_nnunet.sh creates it)")
def test_nnunet_default_split_equals_satnet_default(tmp_path):
    site = NnunetSite(venv=DEFAULT_VENV, scratch=tmp_path)
    assert same_folds(nnunet_default_folds(site, CASES), satnet_folds(None, CASES)[0])


# parsing nnU-Net's output


def test_plan_phases_from_printed_lines():
    lines = [(5.0, "Fingerprint extraction..."), (25.0, "Experiment planning..."), (26.0, "Preprocessing..."),
             (26.0, "Configuration: 3d_fullres..."), (45.0, "Configuration: 2d...")]
    phases = nnunet_runs._plan_phases(_fake_result(lines, 58.0), ["3d_fullres", "2d"])
    assert phases == {"startup": 5.0, "fingerprint": 20.0, "planning": 1.0, "preprocessing": 32.0,
                      "3d_fullres": 19.0, "2d": 13.0}


def test_prediction_times_per_case():
    lines = [(30.0, "Predicting a.nii.gz:"), (40.0, "done with a.nii.gz"),
             (41.0, "Predicting b.nii.gz:"), (43.0, "done with b.nii.gz")]
    times = nnunet_runs._prediction_times(_fake_result(lines, 46.0), 2)
    assert times["startup_s"] == 30.0 and times["network_s_per_case"] == [10.0, 2.0]
    assert times["s_per_case"] == 23.0 and times["after_last_case_s"] == 3.0
    with pytest.raises(RuntimeError, match="expected 3"):
        nnunet_runs._prediction_times(_fake_result(lines, 46.0), 3)


def test_command_line_parses_every_subcommand():
    parser = build_parser()
    assert parser.parse_args(["plan", "4"]).configs == ["3d_fullres", "2d"]
    a = parser.parse_args(["train", "4", "3d_fullres", "--budget-min", "30", "--epochs", "40", "--iters", "50"])
    assert (a.budget_min, a.epochs, a.iters, a.val_iters, a.fold) == (30.0, 40, 50, None, 0)
    assert parser.parse_args(["predict", "17", "2d", "--tta", "off"]).tta == "off"
    assert parser.parse_args(["iter-time", "4", "3d_fullres"]).iters == 10
