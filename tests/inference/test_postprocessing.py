"""Connected-component postprocessing and the cross-validation decision on synthetic cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from satnet.errors import ConfigError
from satnet.inference.postprocessing import (
    PostprocessingDecision,
    apply_postprocessing,
    decide_postprocessing,
    keep_largest_component,
    keep_largest_foreground,
    load_postprocessing,
    save_postprocessing,
)

SHAPE = (12, 20, 20)


def box(seg: np.ndarray, label: int, z: tuple, y: tuple, x: tuple) -> np.ndarray:
    seg[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = label
    return seg


def test_keep_largest_component_per_label_with_full_connectivity():
    seg = np.zeros((3, 6, 6), np.uint8)
    seg[1, 0, 0] = seg[1, 1, 1] = seg[2, 2, 2] = 1  # one component: corners touch diagonally
    seg[0, 5, 5] = 1  # a second, single-voxel component of label 1
    seg[0, 0, 4] = seg[0, 0, 5] = 2  # label 2: two voxels ...
    seg[2, 5, 0] = 2  # ... and an island
    out = keep_largest_component(seg, [1])
    assert out[0, 5, 5] == 0 and out[1, 0, 0] == out[1, 1, 1] == out[2, 2, 2] == 1
    assert out[2, 5, 0] == 2  # label 2 was not listed
    assert out.dtype == np.uint8 and seg[0, 5, 5] == 1  # a new array, input unchanged
    out = keep_largest_component(seg)  # every label present
    assert out[2, 5, 0] == 0 and out[0, 0, 4] == out[0, 0, 5] == 2 and out[0, 5, 5] == 0


def test_keep_largest_foreground_treats_touching_labels_as_one_component():
    seg = np.zeros((1, 8, 8), np.int32)
    seg[0, 1:3, 1:3] = 1
    seg[0, 3:5, 1:3] = 2  # touches label 1: same foreground component (8 voxels)
    seg[0, 6:8, 6:8] = 1  # 4 voxels, separate
    out = keep_largest_foreground(seg)
    assert (out[0, 1:3, 1:3] == 1).all() and (out[0, 3:5, 1:3] == 2).all() and (out[0, 6:, 6:] == 0).all()
    # per label, label 1 has two components of 4 voxels: the first in C order is kept
    per_label = keep_largest_component(seg, [1])
    assert (per_label[0, 1:3, 1:3] == 1).all() and (per_label[0, 6:, 6:] == 0).all()


def spurious_blob_case(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction = reference box slightly shifted, plus a small false-positive blob far away."""
    reference = box(np.zeros(SHAPE, np.uint8), 1, (2, 8), (3, 11), (3, 11))
    prediction = box(np.zeros(SHAPE, np.uint8), 1, (2, 8), (3 + shift, 11 + shift), (3, 11))
    return box(prediction, 1, (9, 11), (15, 18), (15, 18)), reference


def two_component_case(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference has two separate boxes of label 1; the prediction finds both."""
    reference = box(np.zeros(SHAPE, np.uint8), 1, (2, 8), (2, 9), (2, 9))
    reference = box(reference, 1, (2, 6), (13, 18), (13, 18))
    prediction = box(np.zeros(SHAPE, np.uint8), 1, (2, 8), (2 + shift, 9 + shift), (2, 9))
    return box(prediction, 1, (2, 6), (13, 18), (13, 18)), reference


def test_spurious_blobs_make_postprocessing_worthwhile():
    decision, report = decide_postprocessing([spurious_blob_case(s) for s in (0, 1, 2)], [1])
    assert decision == PostprocessingDecision(keep_largest_foreground=True, largest_component_labels=[])
    assert report["keep_largest_foreground"]["applied"] is True
    assert report["final"]["mean_dice"] > report["baseline"]["mean_dice"]
    assert report["largest_component"]["1"]["applied"] is False  # nothing left to remove after step 1


def test_true_second_components_keep_postprocessing_off():
    decision, report = decide_postprocessing([two_component_case(s) for s in (0, 1, 2)], [1])
    assert decision == PostprocessingDecision(keep_largest_foreground=False, largest_component_labels=[])
    assert report["keep_largest_foreground"]["mean_dice"] < report["baseline"]["mean_dice"]
    assert report["final"] == report["baseline"]


def test_a_step_that_raises_the_mean_but_lowers_one_label_is_refused():
    reference = box(np.zeros(SHAPE, np.uint8), 1, (2, 8), (2, 10), (2, 10))  # label 1: 384 voxels
    reference = box(reference, 2, (2, 8), (2, 10), (10, 14))  # label 2 touches label 1: 192 voxels
    reference = box(reference, 2, (9, 11), (14, 16), (14, 16))  # label 2's true second component: 8 voxels
    prediction = box(reference.copy(), 1, (9, 12), (14, 19), (2, 7))  # plus a spurious 75-voxel label 1 blob
    decision, report = decide_postprocessing([(prediction, reference)], [1, 2])
    # all-foreground: label 1 Dice 0.911 -> 1, label 2 1 -> 0.980; the mean rises, label 2 falls
    step = report["keep_largest_foreground"]
    assert step["mean_dice"] > report["baseline"]["mean_dice"] and step["applied"] is False
    assert step["dice_per_label"]["2"] == pytest.approx(2 * 192 / 392)
    assert decision == PostprocessingDecision(keep_largest_foreground=False, largest_component_labels=[1])
    assert report["largest_component"]["2"]["applied"] is False
    assert report["final"]["dice_per_label"] == {"1": 1.0, "2": 1.0}
    json.dumps(report, allow_nan=False)  # JSON-ready


def test_every_label_whose_largest_component_helps_is_chosen():
    """Each label has a spurious island touching the other label (so the all-foreground step keeps it):
    removing either helps, so both are chosen, and the final Dice is what applying both gives."""
    reference = box(np.zeros(SHAPE, np.uint8), 1, (2, 8), (2, 8), (2, 8))
    reference = box(reference, 2, (2, 8), (12, 18), (12, 18))
    prediction = box(reference.copy(), 1, (2, 8), (11, 12), (10, 12))  # island of 1 touching label 2
    prediction = box(prediction, 2, (2, 8), (6, 8), (8, 9))  # island of 2 touching label 1
    decision, report = decide_postprocessing([(prediction, reference)], [1, 2])
    assert decision == PostprocessingDecision(keep_largest_foreground=False, largest_component_labels=[1, 2])
    assert report["largest_component"]["2"]["dice_per_label"] == {"1": 1.0, "2": 1.0}  # label 1's step kept
    assert report["final"]["dice_per_label"] == {"1": 1.0, "2": 1.0}
    assert (apply_postprocessing(prediction, decision) == reference).all()


def test_keep_largest_component_without_background_keeps_every_label_present():
    seg = np.array([[[1, 2, 1, 1]]], np.uint8)  # no 0 voxel: label 1 is still a label
    assert keep_largest_component(seg).tolist() == [[[0, 2, 1, 1]]]


def test_perfect_predictions_need_nothing_and_empty_labels_are_nan():
    prediction, reference = two_component_case(0)
    decision, report = decide_postprocessing([(reference, reference)], [1, 2])  # label 2 absent everywhere
    assert decision == PostprocessingDecision()
    assert report["baseline"]["dice_per_label"] == {"1": 1.0, "2": None}


def test_apply_postprocessing_runs_both_steps():
    seg = np.zeros((1, 10, 10), np.uint8)
    seg[0, 0:4, 0:4] = 1
    seg[0, 4:6, 0:4] = 2  # touches label 1
    seg[0, 8:10, 8:10] = 2  # separate: removed by the foreground step
    seg[0, 0:2, 8:10] = 1  # separate: removed by the foreground step
    out = apply_postprocessing(seg, PostprocessingDecision(True, [2]))
    expected = seg.copy()
    expected[0, 8:10, 8:10] = 0
    expected[0, 0:2, 8:10] = 0
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(apply_postprocessing(seg, PostprocessingDecision()), seg)


def test_decision_json_round_trip_and_errors(tmp_path):
    decision = PostprocessingDecision(keep_largest_foreground=True, largest_component_labels=[2, 1])
    path = save_postprocessing(decision, tmp_path / "postprocessing.json")
    assert json.loads(path.read_text()) == {
        "keep_largest_foreground": True, "largest_component_labels": [2, 1], "format_version": 1
    }
    assert load_postprocessing(path) == decision
    path.write_text(json.dumps({"keep_largest_forground": True}))
    with pytest.raises(ConfigError, match='did you mean "keep_largest_foreground"'):
        load_postprocessing(path)
    with pytest.raises(ConfigError, match="foreground labels"):
        PostprocessingDecision(largest_component_labels=[0])
    with pytest.raises(ConfigError, match="twice"):
        PostprocessingDecision(largest_component_labels=[1, 1])
