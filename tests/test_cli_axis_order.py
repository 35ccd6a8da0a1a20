"""Scans stored with their thick slices along X: the planner puts X first (as nnU-Net's transpose_forward),
preprocessing reorders the arrays, training cuts its 2D slices across X, and validation and predict write
masks on the scans' own grid.

The synthetic scans are 0.8 x 0.8 x 2.5 mm (Z, Y, X) and planned with `--spacing auto`, which keeps the
thick axis; the network is shrunk to features 4..32 to keep the CPU steps short.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from satnet.cli import main
from satnet.io.cases import load_case
from satnet.io.images import read_label
from satnet.planning.plans import load_plans, save_plans
from satnet.synthetic import make_dataset_3d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (32, 40, 12)  # (Z, Y, X) voxels at 0.8 x 0.8 x 2.5 mm


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("thick_x")
    raw = make_dataset_3d(root / "Dataset902_ThickX", num_cases=4, shape=SHAPE, spacing=(0.8, 0.8, 2.5), num_test=1)
    work = root / "work"
    assert main(["plan-and-preprocess", str(raw), "-o", str(work), "--configs", "2d", "--spacing", "auto",
                 "-j", "1", "-q"]) == 0
    plans = load_plans(work)
    plan = plans.configurations["2d"]
    plan.network = plan.network.replace(features=[4 * 2**i for i in range(plan.network.num_stages)])
    save_plans(plans, work)
    assert main(["train", str(work), "2d", "0", "--epochs", "1", "--iterations-per-epoch", "2", "--workers", "0",
                 "--seed", "0", "-q"]) == 0
    return raw, work


def test_thick_x_slices_are_planned_first_and_preprocessed_so(trained):
    raw, work = trained
    plan = load_plans(work).configurations["2d"]
    assert plan.axis_order == [2, 0, 1] and plan.spacing[0] == pytest.approx(2.5)
    data, seg, props = load_case(plan.data_dir(work), "case_000")
    label = read_label(raw / "labelsTr" / "case_000.nii.gz")[0]  # (Z, Y, X) as stored
    assert props.axis_order == [2, 0, 1] and props.geometry.shape == list(SHAPE) == list(label.shape)
    # at the data's own spacing nothing is resampled: the crop of the stored label, X first
    box = tuple(slice(a, b) for a, b in props.crop_bbox)
    assert np.array_equal(np.asarray(seg[0]), label[box].transpose(2, 0, 1))
    assert data.shape[1:] == seg.shape[1:] and list(seg.shape[1:]) == props.shape_after_resampling


def test_validation_and_predict_write_masks_on_the_scans_grid(trained, tmp_path):
    raw, work = trained
    validation = sorted((work / "results" / "2d" / "fold_0" / "validation").glob("*.nii.gz"))
    assert validation
    for path in validation:
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).shape == SHAPE
    out = tmp_path / "pred"
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(work), "-c", "2d", "--no-tta",
                 "-q"]) == 0
    image = sitk.ReadImage(str(raw / "imagesTs" / "case_004_0000.nii.gz"))
    mask = sitk.ReadImage(str(out / "case_004.nii.gz"))
    assert sitk.GetArrayFromImage(mask).shape == SHAPE
    assert np.allclose(mask.GetSpacing(), image.GetSpacing()) and np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert np.allclose(mask.GetDirection(), image.GetDirection())


def test_an_exported_model_reorders_the_axes_as_the_work_folder_does(trained, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra: pip install -e \".[onnx]\"")
    from satnet.inference.exported import onnxruntime_available

    if not onnxruntime_available():
        pytest.skip("no onnxruntime")
    raw, work = trained
    model = tmp_path / "model"
    assert main(["export", "-m", str(work), "-c", "2d", "-o", str(model), "-q"]) == 0
    common = ["predict", "-i", str(raw / "imagesTs"), "--no-tta", "-q"]
    assert main([*common, "-o", str(tmp_path / "torch"), "-m", str(work), "-c", "2d"]) == 0
    assert main([*common, "-o", str(tmp_path / "onnx"), "-m", str(model), "--backend", "onnxruntime"]) == 0
    ours, theirs = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "case_004.nii.gz")))
                    for d in ("torch", "onnx"))
    assert ours.shape == theirs.shape == SHAPE
    assert (ours != theirs).mean() <= 1e-3  # round-off ties of a barely trained model aside
