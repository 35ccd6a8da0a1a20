"""A rerun of preprocessing redoes exactly the cases whose raw files changed (satnet/preprocessing/sources.py),
and their reference copies in gt_segmentations; cases of older work folders without the record are kept
unless their label or geometry shows the change; a changed plan rebuilds the folder (stamp.json); another
dataset is refused before anything is written."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from satnet.cli import main
from satnet.planning.planner import PlannerOptions
from satnet.preprocessing import stage
from satnet.synthetic import make_dataset_3d

CASES = ["case_000", "case_001", "case_002"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> tuple[Path, Path]:
    """(raw dataset in uncompressed .nii, so a rewritten file keeps its size; its work folder, preprocessed)."""
    root = tmp_path_factory.mktemp("sources")
    gz = make_dataset_3d(root / "gz", num_cases=len(CASES))
    raw = root / "raw"
    for path in gz.rglob("*.nii.gz"):
        target = raw / path.relative_to(gz).with_name(path.name[: -len(".nii.gz")] + ".nii")
        target.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.ReadImage(str(path)), str(target), useCompression=False)
    dataset = json.loads((gz / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps({**dataset, "file_ending": ".nii"}))
    work = root / "work"
    ds, plans = stage.plan(raw, work, PlannerOptions(configs=["3d"]), workers=1)
    stage.preprocess(ds, plans, work, ["3d"], workers=1)
    return raw, work


@pytest.fixture
def copies(planned, tmp_path) -> tuple[Path, Path]:
    raw, work = (shutil.copytree(p, tmp_path / p.name) for p in planned)
    return Path(raw), Path(work)


def data_folder(work: Path) -> Path:
    (folder,) = (work / "preprocessed").iterdir()
    return folder


def rewrite_keeping_size_and_mtime(path: Path, change) -> None:
    """Write `change(array)` into the .nii at `path` with its header, its size and its mtime unchanged."""
    stat = path.stat()
    image = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(image)))
    new.CopyInformation(image)
    sitk.WriteImage(new, str(path), useCompression=False)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def swap_labels(label: np.ndarray) -> np.ndarray:
    return np.where(label == 1, 2, np.where(label == 2, 1, label)).astype(label.dtype)


def fresh_preprocessing(raw: Path, work: Path, tmp_path: Path) -> Path:
    """The data folder `satnet preprocess` makes from scratch with the plans of `work`."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("plans.json", "splits.json", "fingerprint.json"):
        shutil.copy(work / name, fresh / name)
    stage.preprocess_from_plans(raw, fresh, None, workers=1)
    return data_folder(fresh)


def case_bytes(folder: Path, case: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{case}*"))}


def mtimes(folder: Path, case: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob(f"{case}*")}


def test_a_label_rewritten_with_its_size_and_mtime_is_preprocessed_and_copied_again(copies, tmp_path):
    raw, work = copies
    folder = data_folder(work)
    label = raw / "labelsTr" / "case_001.nii"
    old_seg = np.load(folder / "case_001_seg.npy")
    untouched = mtimes(folder, "case_000")
    rewrite_keeping_size_and_mtime(label, swap_labels)
    stage.preprocess_from_plans(raw, work, None, workers=1)
    assert (work / "gt_segmentations" / "case_001.nii").read_bytes() == label.read_bytes()
    assert not np.array_equal(np.load(folder / "case_001_seg.npy"), old_seg)
    fresh = fresh_preprocessing(raw, work, tmp_path)
    assert all(case_bytes(folder, c) == case_bytes(fresh, c) for c in CASES)
    assert mtimes(folder, "case_000") == untouched  # the unchanged cases are not made again


def test_a_changed_image_of_the_same_size_is_preprocessed_again(copies, tmp_path):
    raw, work = copies
    folder = data_folder(work)
    old = np.load(folder / "case_002.npy")
    rewrite_keeping_size_and_mtime(raw / "imagesTr" / "case_002_0000.nii", lambda a: (a * 0.5 + 7).astype(a.dtype))
    stage.preprocess_from_plans(raw, work, None, workers=1)
    assert not np.array_equal(np.load(folder / "case_002.npy"), old)
    assert case_bytes(folder, "case_002") == case_bytes(fresh_preprocessing(raw, work, tmp_path), "case_002")


def test_an_unchanged_rerun_keeps_every_case(copies):
    raw, work = copies
    folder = data_folder(work)
    before = {c: mtimes(folder, c) for c in CASES}
    stage.preprocess_from_plans(raw, work, None, workers=1)
    assert {c: mtimes(folder, c) for c in CASES} == before


def test_an_older_folder_without_the_record_is_kept_and_recorded_unless_its_label_changed(copies, caplog):
    raw, work = copies
    folder = data_folder(work)
    for case in CASES:  # as satnet wrote it before the record existed
        path = folder / f"{case}.json"
        data = json.loads(path.read_text())
        del data["sources"]
        path.write_text(json.dumps(data))
    rewrite_keeping_size_and_mtime(raw / "labelsTr" / "case_001.nii", swap_labels)  # the old copy kept the old label
    kept = mtimes(folder, "case_000")
    with caplog.at_level(logging.WARNING):
        stage.preprocess_from_plans(raw, work, None, workers=1)
    warnings = [r.getMessage() for r in caplog.records if "before satnet recorded their raw files" in r.getMessage()]
    assert len(warnings) == 1 and "3 case(s)" in warnings[0] and "2 kept" in warnings[0] and "1 made again" in warnings[0]
    assert (work / "gt_segmentations" / "case_001.nii").read_bytes() == (raw / "labelsTr" / "case_001.nii").read_bytes()
    assert mtimes(folder, "case_000")["case_000.npy"] == kept["case_000.npy"]
    assert all("sources" in json.loads((folder / f"{c}.json").read_text()) for c in CASES)
    rewrite_keeping_size_and_mtime(raw / "imagesTr" / "case_000_0000.nii", lambda a: (a * 2).astype(a.dtype))
    stage.preprocess_from_plans(raw, work, None, workers=1)  # recorded now: a later change is seen
    assert mtimes(folder, "case_000")["case_000.npy"] != kept["case_000.npy"]


def test_a_changed_normalisation_in_plans_json_rebuilds_the_folder(copies, tmp_path):
    raw, work = copies
    plans = json.loads((work / "plans.json").read_text())
    plans["configurations"]["3d"]["normalization"][0]["scheme"] = "none"
    (work / "plans.json").write_text(json.dumps(plans))
    stage.preprocess_from_plans(raw, work, None, workers=1)
    fresh = fresh_preprocessing(raw, work, tmp_path)
    assert all(case_bytes(data_folder(work), c) == case_bytes(fresh, c) for c in CASES)


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_another_dataset_is_refused_before_anything_is_written(copies, dataset_2d, capsys):
    _, work = copies
    before = files_of(work)
    assert main(["preprocess", str(dataset_2d), "-o", str(work), "-j", "1", "-q"]) == 1
    error = capsys.readouterr().err
    assert f"{work} was planned for another dataset (channels/labels/file ending differ: channels: {dataset_2d} " \
           f"has R, G, B, {work / 'plans.json'} MRI; labels: " in error
    assert f"plan it again with `satnet plan-and-preprocess {dataset_2d} -o {work}`, or choose another -o" in error
    assert files_of(work) == before


def test_other_labels_alone_are_named(copies, capsys):
    raw, work = copies
    dataset = json.loads((raw / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "object1": 1, "tumour": 2}
    (raw / "dataset.json").write_text(json.dumps(dataset))
    assert main(["preprocess", str(raw), "-o", str(work), "-j", "1", "-q"]) == 1
    assert (f"(labels differ: labels: {raw} has background=0, object1=1, tumour=2, {work / 'plans.json'} "
            f"background=0, object1=1, object2=2)") in capsys.readouterr().err
