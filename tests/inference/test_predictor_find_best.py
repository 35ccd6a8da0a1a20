"""find-best on fabricated validation folders: ranking, the ensemble of the two best, postprocessing."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from satnet.cli import main
from satnet.errors import InputError, MissingFileError
from satnet.inference.find_best import find_best
from satnet.inference.models import default_configurations, postprocessing_path
from satnet.inference.postprocessing import PostprocessingDecision, load_postprocessing
from satnet.inference.predictor import save_probabilities
from satnet.io.geometry import ImageGeometry
from satnet.io.images import write_segmentation
from satnet.planning.plans import load_plans
from satnet.planning.splits import make_splits, save_splits
from tests.inference.fakes import make_work_dir, tiny_plans

CASES = [f"case_{i}" for i in range(5)]
GEOMETRY = ImageGeometry([4, 12, 12], [3.0, 1.0, 1.0], [1.0, 2.0, 3.0], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
HALF_A = (slice(1, 3), slice(2, 8), slice(2, 5))  # the two halves of label 1's block
HALF_B = (slice(1, 3), slice(2, 8), slice(5, 8))
ISLAND = (slice(0, 1), slice(10, 12), slice(10, 12))  # 4 voxels far from everything


def reference() -> np.ndarray:
    seg = np.zeros(GEOMETRY.shape, dtype=np.uint8)
    seg[HALF_A] = seg[HALF_B] = 1
    seg[1:3, 9:11, 2:5] = 2
    return seg


def probabilities(seg: np.ndarray, *overrides) -> np.ndarray:
    """(3, Z, Y, X): 0.9 on `seg`'s class and 0.05 on the others, except in each (region, (p0, p1, p2))."""
    probs = np.full((3, *seg.shape), 0.05, dtype=np.float32)
    np.put_along_axis(probs, seg[None].astype(np.int64), 0.9, axis=0)
    for region, values in overrides:
        probs[(slice(None), *region)] = np.array(values, dtype=np.float32)[:, None, None, None]
    return probs


MISSED = (0.9, 0.05, 0.05)  # label 1 voxels called background, confidently
UNSURE_MISS = (0.55, 0.45, 0.0)  # ... by a small margin
UNSURE_HIT = (0.45, 0.55, 0.0)  # label 1 by a small margin
FALSE_ISLAND = (ISLAND, (0.02, 0.96, 0.02))  # background called label 1, very confidently


@pytest.fixture
def work(tmp_path):
    work_dir = make_work_dir(tmp_path, tiny_plans(("3d", "3d_org", "2d")))
    splits = make_splits(CASES)
    save_splits(splits, work_dir)
    for case in CASES:
        write_segmentation(reference(), GEOMETRY, work_dir / "gt_segmentations" / f"{case}.nii.gz")
    return work_dir


def fabricate(work_dir, config, probs: np.ndarray, folds=range(5)) -> None:
    """Validation outputs (mask and .npz) of `config` for every case of `folds`."""
    splits = json.loads((work_dir / "splits.json").read_text())
    for k in folds:
        out = work_dir / "results" / config / f"fold_{k}" / "validation"
        for case in splits["folds"][k]["val"]:
            save_probabilities(out / f"{case}.npz", probs)
            write_segmentation(np.argmax(probs, axis=0).astype(np.uint8), GEOMETRY, out / f"{case}.nii.gz")


def test_ranking_and_postprocessing_of_the_best_configuration(work):
    fabricate(work, "3d", probabilities(reference(), FALSE_ISLAND, (HALF_A, UNSURE_HIT)))
    fabricate(work, "3d_org", probabilities(reference(), (HALF_A, MISSED)))
    fabricate(work, "2d", probabilities(reference()), folds=range(4))  # perfect, but fold 4 is not trained
    result = find_best(work)
    ranking = {c["name"]: c["dice_per_label"]["1"] for c in result["ranking"]}
    dice = {  # label 1 has 72 voxels, 36 in each half; the island has 4
        "3d": 2 * 72 / (72 + 76),
        "3d_org": 2 * 36 / (36 + 72),
        "ensemble_3d+3d_org": 2 * 36 / (40 + 72),  # misses half A (0.3 < 0.675) and keeps the island (0.505 > 0.46)
    }
    assert list(ranking) == list(dice) and ranking == pytest.approx(dice)
    assert result["ranking"][0]["mean_dice"] == pytest.approx((dice["3d"] + 1) / 2)  # label 2 is perfect
    assert result["incomplete"] == {"2d": [4]}
    decision = load_postprocessing(postprocessing_path(work, ["3d"]))
    # keeping the largest foreground component would delete label 2 (a separate object); label 1's own largest
    # component removes the island
    assert decision == PostprocessingDecision(keep_largest_foreground=False, largest_component_labels=[1])
    assert result["best"]["mean_dice_postprocessed"] == pytest.approx(1.0)
    assert result["predict_command"].endswith(f"-m {work} -c 3d")
    assert json.loads((work / "results" / "find_best.json").read_text()) == result
    assert (work / "results" / "3d" / "crossval_summary.json").is_file()
    assert default_configurations(work, load_plans(work)) == ["3d"]


def test_the_ensemble_wins_when_the_two_best_err_in_different_places(work):
    fabricate(work, "3d", probabilities(reference(), (HALF_A, UNSURE_MISS)))
    fabricate(work, "3d_org", probabilities(reference(), (HALF_B, UNSURE_MISS)))
    result = find_best(work)
    assert result["ranking"][0]["name"] == "ensemble_3d+3d_org" and result["ranking"][0]["mean_dice"] == 1.0
    assert sorted(result["best"]["configurations"]) == ["3d", "3d_org"]
    assert postprocessing_path(work, ["3d", "3d_org"]).is_file()
    assert postprocessing_path(work, ["3d_org", "3d"]) == postprocessing_path(work, ["3d", "3d_org"])
    assert not load_postprocessing(postprocessing_path(work, ["3d", "3d_org"])).keep_largest_foreground
    assert result["predict_command"].split(" -c ")[1].split() == result["best"]["configurations"]
    assert sorted(default_configurations(work, load_plans(work))) == ["3d", "3d_org"]


def test_no_configuration_with_all_folds_names_the_missing_ones(work):
    fabricate(work, "3d", probabilities(reference()), folds=[0, 1, 2])
    with pytest.raises(MissingFileError, match=r"3d: folds 3, 4 missing; train them with `satnet train \S+ 3d 3`; "
                                               r"`satnet train \S+ 3d 4`"):
        find_best(work)


def test_a_fold_trained_without_validation_is_sent_to_validation_only_not_to_training(work, capsys):
    fabricate(work, "3d", probabilities(reference()), folds=[0, 4])
    for fold, checkpoint in ((1, "final"), (3, "latest")):  # trained with --no-validation; stopped before its end
        (work / "results" / "3d" / f"fold_{fold}").mkdir(parents=True)
        (work / "results" / "3d" / f"fold_{fold}" / f"checkpoint_{checkpoint}.pt").touch()
    with pytest.raises(MissingFileError) as error:
        find_best(work)
    line = next(line for line in str(error.value).splitlines() if line.startswith("  - 3d:"))
    assert line == (f"  - 3d: folds 1, 2, 3 missing; train it with `satnet train {work} 3d 2`; fold 3 did not finish "
                    f"training: resume it with `satnet train {work} 3d 3 --resume`; fold 1 was trained without its "
                    f"validation (--no-validation): run it with `satnet train {work} 3d 1 --validation-only`")
    fabricate(work, "3d_org", probabilities(reference()))  # now a configuration is complete: 3d is left out
    main(["find-best", str(work), "-j", "1"])
    assert f"3d, folds 1, 2, 3 missing: train it with `satnet train {work} 3d 2`; " in capsys.readouterr().out


def test_a_validation_mask_off_its_reference_grid_is_an_error_naming_the_file(work):
    fabricate(work, "3d", probabilities(reference()))
    splits = json.loads((work / "splits.json").read_text())
    case = splits["folds"][2]["val"][0]
    moved = ImageGeometry(GEOMETRY.shape, GEOMETRY.spacing, [1.0, 2.0, 5.0], GEOMETRY.direction)
    mask = work / "results" / "3d" / "fold_2" / "validation" / f"{case}.nii.gz"
    write_segmentation(reference(), moved, mask)
    with pytest.raises(InputError, match=rf"1 validation prediction\(s\) of 3d .*{re.escape(str(mask))}: origin"):
        find_best(work)
