"""`satnet predict` checks each scan as the dataset check does, skips the bad ones with the fix, predicts the rest,
ignores entries that are no scan, and words folder problems for the model (not for dataset.json)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from satnet.cli import main
from satnet.synthetic import make_dataset_3d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic dataset planned with a 3d configuration whose fold 0 trained for one iteration."""
    root = tmp_path_factory.mktemp("scans")
    raw = make_dataset_3d(root / "raw", num_cases=3)
    work = root / "work"
    assert main(["plan-and-preprocess", str(raw), "-o", str(work), "--configs", "3d", "-j", "1", "-q"]) == 0
    assert main(["train", str(work), "3d", "0", "--epochs", "1", "--iterations-per-epoch", "1", "--val-iterations",
                 "1", "--workers", "0", "--no-validation", "-q"]) == 0
    return raw, work


def _rewrite(src, dst, values=None, spacing=None) -> None:
    image = sitk.ReadImage(str(src))
    new = sitk.GetImageFromArray(values(sitk.GetArrayFromImage(image).astype(np.float32))) if values else image
    if values:
        new.SetSpacing(image.GetSpacing())
        new.SetOrigin(image.GetOrigin())
        new.SetDirection(image.GetDirection())
    if spacing:
        new.SetSpacing(spacing)
    sitk.WriteImage(new, str(dst))


def _with_nan(a: np.ndarray) -> np.ndarray:
    a[2:4, 3:8, 4] = np.nan
    return a


def test_bad_scans_are_skipped_with_their_fix_and_the_rest_predicted(trained, tmp_path, capsys):
    raw, work = trained
    scans, out = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    src = raw / "imagesTr" / "case_000_0000.nii.gz"
    shutil.copy(src, scans / "good_0000.nii.gz")
    _rewrite(src, scans / "nan_0000.nii.gz", values=_with_nan)
    _rewrite(src, scans / "metres_0000.nii.gz", spacing=[0.001, 0.001, 0.003])
    _rewrite(src, scans / "slice_0000.nii.gz", values=lambda a: a[:1])
    (scans / "README.txt").write_text("where these came from\n")
    (scans / "originals").mkdir()
    capsys.readouterr()
    assert main(["predict", "-i", str(scans), "-o", str(out), "-m", str(work), "-c", "3d", "-f", "0"]) != 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz", "predict_started.json", "predict_summary.json"]
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["backend"] == "torch" and summary["configurations"] == ["3d"]
    status = {c["case"]: c for c in summary["cases"]}
    assert status["good"]["status"] == "predicted" and status["good"]["seconds"] > 0 and status["good"]["peak_rss_mb"] > 0
    assert status["nan"]["status"] == "failed" and "NaN" in status["nan"]["reason"]
    assert "ignoring 2 entries" in err and "README.txt" in err and "originals/" in err
    assert "nan_0000.nii.gz: has 10 NaN or infinite voxel(s): replace them" in err
    assert "metres_0000.nii.gz: has spacing 0.003x0.001x0.001 mm" in err and "metres instead of millimetres" in err
    assert "slice_0000.nii.gz: is a single 2D slice, but the configuration is 3D" in err


@pytest.mark.parametrize("name, expected", [
    ("good_0001.nii.gz", "is channel 1, but the model takes 1 channel(s)"),
    ("good_0000.nrrd", "is a .nrrd file, but the model reads .nii.gz files"),
])
def test_folder_problems_name_the_fix_for_a_trained_model(trained, tmp_path, capsys, name, expected):
    raw, work = trained
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(raw / "imagesTr" / "case_000_0000.nii.gz", scans / "good_0000.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(raw / "imagesTr" / "case_001_0000.nii.gz")), str(scans / name))
    capsys.readouterr()
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(work), "-c", "3d", "-f", "0"]) == 1
    err = capsys.readouterr().err
    assert expected in err and "dataset.json" not in err


def test_a_fold_folder_given_as_model_names_the_work_folder(trained, tmp_path, capsys):
    raw, work = trained
    fold = work / "results" / "3d" / "fold_0"
    capsys.readouterr()
    assert main(["predict", "-i", str(raw / "imagesTr"), "-o", str(tmp_path / "out"), "-m", str(fold)]) == 1
    assert f"is inside the work folder {work.resolve()}: give that folder" in capsys.readouterr().err


def test_an_unfinished_fold_says_so_without_f(trained, tmp_path, capsys):
    raw, work = trained
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "results" / "3d" / "fold_0" / "checkpoint_final.pt").unlink()
    capsys.readouterr()
    assert main(["predict", "-i", str(raw / "imagesTr"), "-o", str(tmp_path / "out"), "-m", str(copy), "-c", "3d"]) == 1
    err = capsys.readouterr().err
    assert "have only checkpoint_latest.pt: training did not finish" in err and "--resume" in err
