"""DI2IN end to end on a CT-like case: plan-and-preprocess --arch di2in, train a few iterations, predict in 3D,
visualise its gates and export it to ONNX.

The synthetic scans are in HU (air -1000, soft tissue about 40, a bone-like label about 1200, clipped to
[-1024, 1500]) at 2.5 x 0.8 x 0.8 mm, so the plan uses CT normalisation and in-plane (1, 3, 3) kernels first.
The planned network is shrunk to features 4..32 (its strides and kernels kept) to keep the CPU steps short.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from satnet.cli import main
from satnet.planning.plans import load_plans, save_plans
from satnet.synthetic import make_dataset_3d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = "3d_di2in"
SHAPE = (12, 32, 40)  # (Z, Y, X) voxels at 2.5 x 0.8 x 0.8 mm


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("di2in_ct")
    raw = make_dataset_3d(root / "Dataset901_CTLike", num_cases=3, shape=SHAPE, spacing=(2.5, 0.8, 0.8),
                          hounsfield=True, channel_name="CT", num_test=1)
    work = root / "work"
    assert main(["plan-and-preprocess", str(raw), "-o", str(work), "--configs", "3d", "--arch", "di2in",
                 "--spacing", "auto", "-j", "1", "-q"]) == 0
    plans = load_plans(work)
    plan = plans.configurations[CONFIG]
    assert plan.network.arch == "di2in" and plan.normalization[0].scheme == "ct"
    assert plan.network.kernel_sizes[0] == [1, 3, 3]
    n = plan.network.num_stages
    plan.network = plan.network.replace(features=[4 * 2**i for i in range(n)])
    save_plans(plans, work)
    assert main(["train", str(work), CONFIG, "0", "--epochs", "1", "--iterations-per-epoch", "2", "--workers", "0",
                 "--seed", "0", "--no-validation", "-q"]) == 0
    return raw, work


def test_ct_like_case_plans_trains_and_predicts_in_3d(trained, tmp_path):
    raw, work = trained
    out = tmp_path / "pred"
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(work), "-c", CONFIG, "--no-tta",
                 "-q"]) == 0
    image = sitk.ReadImage(str(raw / "imagesTs" / "case_003_0000.nii.gz"))
    mask = sitk.ReadImage(str(out / "case_003.nii.gz"))
    assert sitk.GetArrayFromImage(mask).shape == SHAPE
    assert np.allclose(mask.GetSpacing(), image.GetSpacing()) and np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1, 2}


def test_visualize_shows_every_di2in_gate(trained, tmp_path):
    raw, work = trained
    out = tmp_path / "viz"
    scan = raw / "imagesTs" / "case_003_0000.nii.gz"
    assert main(["visualize", "-m", str(work), "-c", CONFIG, "-f", "0", "-i", str(scan), "-o", str(out)]) == 0
    gates = json.loads((out / "gates.json").read_text())["gates"]
    levels = load_plans(work).configurations[CONFIG].network.level_skips()  # the default skip, per level
    assert len(levels) == load_plans(work).configurations[CONFIG].network.num_stages - 1
    assert [(g["name"], g["mode"]) for g in gates] == [(f"skip{i}", level.mode) for i, level in enumerate(levels)
                                                      if level.mode != "org"] != []


def test_export_gives_the_torch_logits(trained, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra: pip install -e \".[onnx]\"")
    from satnet.inference.exported import OnnxRuntimePredictor, onnxruntime_available
    from satnet.inference.models import load_configuration

    if not onnxruntime_available():
        pytest.skip("no onnxruntime")
    raw, work = trained
    assert main(["export", "-m", str(work), "-c", CONFIG, "-o", str(tmp_path / "model"), "-q"]) == 0
    models = load_configuration(work, CONFIG)
    torch.manual_seed(0)
    tiles = torch.randn(2, 1, *models.plan.patch_size)  # (B, C, Z, Y, X)
    with torch.no_grad():
        expected = models.networks[0](tiles)
    got = OnnxRuntimePredictor(tmp_path / "model" / "fold_0.onnx")(tiles)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-4 * float(expected.max() - expected.min())
