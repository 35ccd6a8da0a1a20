"""Cases thinner than a voxel after resampling are a handled case, not an error: every case a single 1 mm
slice, planned at 2 mm (half a voxel along Z), plans a patch of one slice, trains, and predicts masks on the
input's grid. (Cases too small to downsample at all are a clear planner error: corpus case tiny_cases.)"""
from __future__ import annotations

import json

from satnet.io.images import read_image, read_label
from satnet.synthetic import make_dataset_3d
from tests.reliability.breakers import crop_centre
from tests.reliability.sandbox import TINY_TRAIN, run_cli, shrink_networks


def test_single_slice_cases_plan_train_and_predict(tmp_path):
    raw = make_dataset_3d(tmp_path / "Dataset930_Thin", num_cases=3, num_test=1, seed=4)
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        crop_centre(raw / folder, (1, 20, 24), (1.0, 1.0, 1.0))
    work, out = tmp_path / "work", tmp_path / "out"
    planned = run_cli(["plan-and-preprocess", raw, "-o", work, "--configs", "3d", "-j", "1", "-q"])
    assert planned.code == 0, planned.stderr
    plan = json.loads((work / "plans.json").read_text())["configurations"]["3d"]
    assert plan["patch_size"][0] == 1 and all(s[0] == 1 for s in plan["network"]["strides"])  # never pooled in Z
    shrink_networks(work)
    assert run_cli(["train", work, "3d", "0", *TINY_TRAIN]).code == 0
    predicted = run_cli(["predict", "-i", raw / "imagesTs", "-o", out, "-m", work, "-c", "3d", "--no-tta"])
    assert predicted.code == 0, predicted.stderr
    seg, geometry = read_label(out / "case_003.nii.gz")
    assert geometry == read_image([raw / "imagesTs" / "case_003_0000.nii.gz"])[1] and seg.shape == (1, 20, 24)
