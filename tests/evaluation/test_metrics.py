"""Metrics against hand counts and a per-label loop, the empty-mask conventions, and aggregation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from satnet.errors import InputError
from satnet.evaluation import metrics
from satnet.evaluation.metrics import aggregate_metrics, case_metrics, confusion_counts, nan_mean_std, rates_from_counts


def test_hand_counted_case():
    reference = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
    prediction = np.array([[1, 1, 0, 2], [0, 1, 1, 2]])
    m = case_metrics(reference, prediction, [1, 2], spacing=(2.0, 0.5))
    # label 1: reference at 4 voxels, predicted at 4; overlap 2
    assert (m[1]["tp"], m[1]["fp"], m[1]["fn"], m[1]["tn"]) == (2, 2, 1, 3)
    assert m[1]["dice"] == pytest.approx(4 / 7)
    assert m[1]["fpr"] == pytest.approx(2 / 5) and m[1]["fnr"] == pytest.approx(1 / 3)
    # label 2: reference 3 voxels, predicted 2, overlap 2
    assert (m[2]["tp"], m[2]["fp"], m[2]["fn"], m[2]["tn"]) == (2, 0, 1, 5)
    assert m[2]["dice"] == pytest.approx(0.8) and m[2]["fpr"] == 0 and m[2]["fnr"] == pytest.approx(1 / 3)
    assert m[2]["reference_voxels"] == 3 and m[2]["prediction_voxels"] == 2
    assert m[2]["reference_volume_mm3"] == 3.0 and m[2]["prediction_volume_mm3"] == 2.0


def naive_counts(reference, prediction, label):
    r, p = reference == label, prediction == label
    return [np.sum(r & p), np.sum(~r & p), np.sum(r & ~p), np.sum(~r & ~p)]


@pytest.mark.parametrize("per_label_max", [16, 0])  # per-label masks, then one bincount
def test_both_methods_match_a_naive_loop_in_chunks(monkeypatch, per_label_max):
    monkeypatch.setattr(metrics, "PER_LABEL_MAX", per_label_max)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 5, size=(7, 11, 13)).astype(np.uint8)  # label 4 present but not evaluated
    prediction = rng.integers(0, 4, size=(7, 11, 13)).astype(np.int16)
    prediction[0, 0, :3] = 300  # a value far above the labels
    labels = [3, 1, 2, 7]  # 7 is absent from both
    expected = np.array([naive_counts(reference, prediction, c) for c in labels])
    np.testing.assert_array_equal(confusion_counts(reference, prediction, labels), expected)
    monkeypatch.setattr(metrics, "CHUNK_VOXELS", 100)  # many chunks, the last one partial
    np.testing.assert_array_equal(confusion_counts(reference, prediction, labels), expected)


@pytest.mark.parametrize("per_label_max", [16, 0])
def test_voxels_under_the_ignore_label_count_nowhere(monkeypatch, per_label_max):
    monkeypatch.setattr(metrics, "PER_LABEL_MAX", per_label_max)
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 4, size=(5, 9, 11)).astype(np.uint8)  # 3 is the ignore label
    prediction = rng.integers(0, 4, size=(5, 9, 11)).astype(np.uint8)  # a prediction may hold it too
    keep = reference != 3
    expected = np.array([naive_counts(reference[keep], prediction[keep], c) for c in (1, 2)])
    assert expected.sum(axis=1).tolist() == [keep.sum()] * 2  # TP + FP + FN + TN: the scored voxels only
    np.testing.assert_array_equal(confusion_counts(reference, prediction, [1, 2], ignore_label=3), expected)
    monkeypatch.setattr(metrics, "CHUNK_VOXELS", 50)  # chunks with and without ignored voxels
    reference[:2] = np.where(reference[:2] == 3, 0, reference[:2])
    keep = reference != 3
    expected = np.array([naive_counts(reference[keep], prediction[keep], c) for c in (1, 2)])
    np.testing.assert_array_equal(confusion_counts(reference, prediction, [1, 2], ignore_label=3), expected)
    m = case_metrics(reference, prediction, [1, 2], spacing=(1.0, 1.0, 2.0), ignore_label=3)[1]
    assert m["reference_volume_mm3"] == 2.0 * m["reference_voxels"] == 2.0 * np.sum(reference == 1)
    assert m["prediction_voxels"] == np.sum((prediction == 1) & keep)
    with pytest.raises(InputError, match="the ignore label 3 cannot also be scored"):
        confusion_counts(reference, prediction, [1, 3], ignore_label=3)


def test_empty_mask_conventions():
    empty, blob = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    blob[1:3, 1:3] = 1
    both_empty = case_metrics(empty, empty, [1])[1]
    assert math.isnan(both_empty["dice"]) and math.isnan(both_empty["fnr"]) and both_empty["fpr"] == 0
    false_alarm = case_metrics(empty, blob, [1])[1]
    assert false_alarm["dice"] == 0 and math.isnan(false_alarm["fnr"]) and false_alarm["fpr"] == 0.25
    missed = case_metrics(blob, empty, [1])[1]
    assert missed["dice"] == 0 and missed["fnr"] == 1 and missed["fpr"] == 0
    everything = case_metrics(np.ones((2, 2), np.uint8), np.ones((2, 2), np.uint8), [1])[1]
    assert everything["dice"] == 1 and math.isnan(everything["fpr"]) and everything["fnr"] == 0


@pytest.mark.parametrize("per_label_max", [16, 0])
def test_bool_masks_and_rates_broadcast(monkeypatch, per_label_max):
    monkeypatch.setattr(metrics, "PER_LABEL_MAX", per_label_max)
    reference = np.array([True, True, False, False])
    prediction = np.array([True, False, True, False])
    np.testing.assert_array_equal(confusion_counts(reference, prediction, [1]), [[1, 1, 1, 1]])
    rates = rates_from_counts(np.array([[[1, 1, 1, 1], [0, 0, 0, 4]]]))  # (1, 2, 4)
    assert rates["dice"].shape == (1, 2) and rates["dice"][0, 0] == 0.5 and math.isnan(rates["dice"][0, 1])


def test_aggregate_skips_nan():
    blob, empty = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    blob[:2, :2] = 1
    half = blob.copy()
    half[1] = 0
    cases = [
        case_metrics(blob, blob, [1, 2]),  # label 1 Dice 1, label 2 absent from both: NaN
        case_metrics(blob, half, [1, 2]),  # label 1 Dice 2*2/(4+2) = 2/3
        case_metrics(empty, empty, [1, 2]),  # both NaN
    ]
    summary = aggregate_metrics(cases)
    dice1 = summary["per_class"][1]["dice"]
    assert dice1["count"] == 2 and dice1["mean"] == pytest.approx(5 / 6)
    assert dice1["std"] == pytest.approx(np.std([1, 2 / 3], ddof=1))
    assert summary["per_class"][2]["dice"]["count"] == 0 and math.isnan(summary["per_class"][2]["dice"]["mean"])
    assert summary["mean"]["dice"] == pytest.approx(5 / 6)  # label 2 has no mean and is left out
    assert summary["per_class"][1]["fnr"]["mean"] == pytest.approx(0.25)


def test_nan_mean_std_without_warnings():
    table = np.array([[1.0, np.nan, np.nan], [3.0, 2.0, np.nan]])
    with np.errstate(all="raise"):
        mean, std, count = nan_mean_std(table)
    np.testing.assert_array_equal(count, [2, 1, 0])
    assert mean[0] == 2 and mean[1] == 2 and math.isnan(mean[2])
    assert std[0] == pytest.approx(math.sqrt(2)) and math.isnan(std[1]) and math.isnan(std[2])


@pytest.mark.parametrize(
    "reference, prediction, labels, match",
    [
        (np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), [1], "same shape"),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), [1], "integer labels"),
        (np.full((2, 2), -1, np.int8), np.zeros((2, 2), np.int8), [1], "negative"),
        (np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), [1, 1], "distinct"),
    ],
)
def test_errors(reference, prediction, labels, match):
    with pytest.raises(InputError, match=match):
        confusion_counts(reference, prediction, labels)
