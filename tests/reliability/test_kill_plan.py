"""SIGKILL during plan-and-preprocess: the rerun finishes, and every output (fingerprint.json, plans.json,
splits.json, gt_segmentations, every preprocessed file) is byte-identical to an uninterrupted run's."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from satnet.io.cases import list_cases
from satnet.synthetic import make_dataset_3d
from tests.reliability.faults import run_killed, stray_temporaries
from tests.reliability.sandbox import run_cli, snapshot

NUM_CASES = 6


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return make_dataset_3d(tmp_path_factory.mktemp("kill_plan") / "Dataset920_Kill", num_cases=NUM_CASES, seed=2)


def plan_and_preprocess(raw: Path, work: Path, workers: int = 1) -> list[str]:
    return ["plan-and-preprocess", str(raw), "-o", str(work), "-j", str(workers), "-q"]


@pytest.fixture(scope="module")
def uninterrupted_work(raw, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted") / "work"
    assert run_cli(plan_and_preprocess(raw, work)).code == 0
    return work


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_work) -> dict[str, str]:
    return snapshot(uninterrupted_work)


def preprocessed_folder(work: Path) -> Path:
    (folder,) = (work / "preprocessed").iterdir()
    return folder


@pytest.mark.slow
def test_killed_half_way_then_rerun_gives_identical_outputs(raw, uninterrupted, tmp_path):
    work = tmp_path / "work"
    run_killed(plan_and_preprocess(raw, work), kill="*.npy:5")  # writing case_002's image, half of it on disk
    assert list_cases(preprocessed_folder(work)) == ["case_000", "case_001"]
    assert [Path(p).name.startswith(".case_002.npy.") for p in stray_temporaries(work)] == [True]
    rerun = run_cli(plan_and_preprocess(raw, work))
    assert rerun.code == 0, rerun.stderr
    assert snapshot(work) == uninterrupted


def test_a_killed_worker_gives_a_clear_error_and_the_rerun_identical_outputs(raw, uninterrupted_work, uninterrupted,
                                                                           tmp_path):
    work = tmp_path / "work"  # planned as the uninterrupted run; `satnet preprocess` skips the planner's 5 s
    shutil.copytree(uninterrupted_work, work, ignore=shutil.ignore_patterns("preprocessed"))
    preprocess = ["preprocess", str(raw), "-o", str(work), "-j", "2", "-q"]
    killed = run_killed(preprocess, kill="*.npy:2", expect_killed=False)  # each worker dies at its 2nd .npy
    assert killed.returncode == 1, killed.stderr  # the OOM killer's way: a worker dies, the main process lives
    assert "error: a worker process died" in killed.stderr and "rerun with fewer workers" in killed.stderr
    assert "Traceback" not in killed.stderr
    assert len(list_cases(preprocessed_folder(work))) < NUM_CASES
    rerun = run_cli(preprocess[:-3] + ["-j", "1", "-q"])
    assert rerun.code == 0, rerun.stderr
    assert snapshot(work) == uninterrupted
