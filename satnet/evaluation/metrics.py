"""Segmentation metrics per case and class: Dice, FPR and FNR (the SAT paper's), counts, volumes.

Each label is scored one against the rest: its reference voxels are the positives, every other
voxel (background and all other labels) the negatives. Counts are exact integers, computed
in chunks of voxels so memory stays bounded for large CT.

An ignore label (nnU-Net v2's `labels["ignore"]`) marks reference voxels left out of scoring:
voxels whose reference is that value count in no TP, FP, FN or TN of any label, whatever the
prediction there, so Dice, FPR, FNR and the sizes and volumes derived from the counts all
cover the other voxels only. The ignore label itself is never scored.

Conventions for empty masks (numbers are NaN where the ratio is 0 / 0):

| reference | prediction | Dice | FNR = FN / (FN + TP) | FPR = FP / (FP + TN) |
|-----------|------------|------|----------------------|----------------------|
| empty     | empty      | NaN  | NaN                  | 0                    |
| empty     | not empty  | 0    | NaN                  | > 0                  |
| not empty | empty      | 0    | 1                    | 0                    |

Dice is NaN when both masks are empty, as in nnU-Net, so a class absent from a case neither
rewards (Dice 1) nor punishes (Dice 0) the mean; a false positive in a case without the class
still counts as Dice 0. FNR is undefined without reference voxels; FPR is NaN only when the
whole image is the class (no negatives). Aggregation (`aggregate_metrics`) skips NaN.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from satnet.errors import InputError

METRICS = ("dice", "fpr", "fnr")
CHUNK_VOXELS = 1 << 22  # voxels per pass: bounds the temporary masks and indices (32 MiB of int64)
PER_LABEL_MAX = 24  # up to this many labels per-label masks are faster than one bincount (measured crossover ~25)


def confusion_counts(
    reference: np.ndarray, prediction: np.ndarray, labels: Sequence[int], ignore_label: int | None = None
) -> np.ndarray:
    """One-against-the-rest counts of each label: (K, 4) int64 with columns TP, FP, FN, TN.

    reference, prediction: integer label maps of the same shape, any number of axes
    (usually (Z, Y, X)). Values not in `labels` (background, unscored labels) are negatives.
    ignore_label: voxels whose reference holds it are left out of every count (it may not be
    one of `labels`).

    Two exact methods, chosen by speed (benchmarks/inference_overhead.py): up to
    PER_LABEL_MAX labels, per-label boolean masks counted with `np.count_nonzero` (about 6 ms
    per label on 13 M voxels, 2 CPU cores); beyond, one `np.bincount` over the joint
    (reference, prediction) index, whose cost does not grow with K.
    """
    reference, prediction = _check_pair(reference, prediction)
    labels = [int(v) for v in labels]
    if not labels or min(labels) < 0 or len(set(labels)) < len(labels):
        raise InputError(f"labels must be a non-empty list of distinct non-negative integers, not {labels}")
    if ignore_label is not None and int(ignore_label) in labels:
        raise InputError(f"the ignore label {ignore_label} cannot also be scored (labels {labels}): its voxels are "
                         f"left out of scoring; remove it from the labels")
    ref_flat, pred_flat = reference.reshape(-1), prediction.reshape(-1)
    count = _counts_per_label if len(labels) <= PER_LABEL_MAX else _counts_by_bincount
    tp, ref_size, pred_size = np.zeros((3, len(labels)), dtype=np.int64)
    scored = 0  # voxels not under the ignore label
    for start in range(0, ref_flat.size, CHUNK_VOXELS):
        ref_chunk, pred_chunk = ref_flat[start: start + CHUNK_VOXELS], pred_flat[start: start + CHUNK_VOXELS]
        if ignore_label is not None:
            keep = ref_chunk != ignore_label
            if not keep.all():
                ref_chunk, pred_chunk = ref_chunk[keep], pred_chunk[keep]
        tp_c, ref_c, pred_c = count(ref_chunk, pred_chunk, labels)
        tp += tp_c
        ref_size += ref_c
        pred_size += pred_c
        scored += ref_chunk.size
    fp = pred_size - tp  # predicted as the label, reference something else
    fn = ref_size - tp  # reference is the label, predicted something else
    tn = scored - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1)


def _counts_per_label(ref: np.ndarray, pred: np.ndarray, labels: list[int]) -> tuple[np.ndarray, ...]:
    """(TP, |reference|, |prediction|) per label, (K,) each, from 1D chunks, one boolean pass per label."""
    rows = []
    for label in labels:
        r, p = ref == label, pred == label
        rows.append((np.count_nonzero(r & p), np.count_nonzero(r), np.count_nonzero(p)))
    return tuple(np.array(rows, dtype=np.int64).reshape(len(labels), 3).T)


def _counts_by_bincount(ref: np.ndarray, pred: np.ndarray, labels: list[int]) -> tuple[np.ndarray, ...]:
    """(TP, |reference|, |prediction|) per label, (K,) each, from one confusion matrix of 1D chunks."""
    # Map each label to 1..K and every other value to 0, so the matrix is (K + 1)^2 whatever the values are.
    top = max(max(labels), int(ref.max(initial=0)), int(pred.max(initial=0)))
    lookup = np.zeros(top + 1, dtype=np.intp)
    lookup[labels] = np.arange(1, len(labels) + 1)
    k1 = len(labels) + 1
    matrix = np.bincount(lookup[ref] * k1 + lookup[pred], minlength=k1 * k1).reshape(k1, k1)  # [ref, pred]
    return np.diagonal(matrix)[1:], matrix[1:, :].sum(axis=1), matrix[:, 1:].sum(axis=0)


def rates_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Dice, FPR and FNR from (..., 4) counts (TP, FP, FN, TN); each (...,) float64, NaN for 0 / 0."""
    tp, fp, fn, tn = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"dice": 2 * tp / (2 * tp + fp + fn), "fpr": fp / (fp + tn), "fnr": fn / (fn + tp)}


def case_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] | None = None,
    planar: bool = False,
    ignore_label: int | None = None,
) -> dict[int, dict[str, float]]:
    """Metrics of one case, per label: {label: {name: value}}.

    Names: dice, fpr, fnr (see the module docstring for empty masks), tp, fp, fn, tn (voxel
    counts), reference_voxels and prediction_voxels (mask sizes), and, when `spacing` (one
    entry per axis, in mm) is given, reference_volume_mm3 and prediction_volume_mm3; for a 2D
    file read as (1, Y, X) (`planar`: its first spacing is a placeholder and does not count)
    reference_area_mm2 and prediction_area_mm2 instead. ignore_label: see `confusion_counts`
    (every number then covers the voxels whose reference is not the ignore label).
    """
    counts = confusion_counts(reference, prediction, labels, ignore_label)  # (K, 4)
    rates = rates_from_counts(counts)
    voxel_mm3 = None
    if spacing is not None:
        if len(spacing) != np.ndim(reference):
            raise InputError(f"spacing has {len(spacing)} entries but the segmentation has {np.ndim(reference)} axes")
        voxel_mm3 = float(np.prod(np.asarray(spacing[1:] if planar else spacing, dtype=np.float64)))
    size = ("reference_area_mm2", "prediction_area_mm2") if planar else ("reference_volume_mm3", "prediction_volume_mm3")
    result: dict[int, dict[str, float]] = {}
    for k, label in enumerate(labels):
        tp, fp, fn, tn = (int(v) for v in counts[k])
        row: dict[str, float] = {name: float(rates[name][k]) for name in METRICS}
        row.update(tp=tp, fp=fp, fn=fn, tn=tn, reference_voxels=tp + fn, prediction_voxels=tp + fp)
        if voxel_mm3 is not None:
            row.update({size[0]: (tp + fn) * voxel_mm3, size[1]: (tp + fp) * voxel_mm3})
        result[int(label)] = row
    return result


def nan_mean_std(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample standard deviation (ddof 1) and count of the non-NaN values along `axis`.

    No warnings: the mean is NaN where there is no value, the std where there are fewer than two.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    filled = np.where(valid, values, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = filled.sum(axis=axis) / count
        squares = np.where(valid, (values - np.expand_dims(mean, axis)) ** 2, 0.0).sum(axis=axis)
        std = np.sqrt(squares / (count - 1))
    std = np.where(count > 1, std, np.nan)
    return mean, std, count


def aggregate_metrics(
    per_case: Sequence[Mapping[int, Mapping[str, float]]], metrics: Sequence[str] = METRICS
) -> dict:
    """Summarise `case_metrics` results of several cases.

    Returns {"per_class": {label: {metric: {"mean", "std", "count"}}}, "mean": {metric: value}}:
    per label the mean and sample std over the cases where the metric is not NaN (count says
    how many), and per metric the mean over labels of the per-label means (labels whose mean is
    NaN are left out). Values are floats, NaN where nothing was defined.
    """
    if not per_case:
        raise InputError("no cases to aggregate")
    labels = list(per_case[0])
    for i, case in enumerate(per_case):
        if list(case) != labels:
            raise InputError(
                f"case {i} has labels {list(case)}, case 0 has {labels}: evaluate all cases with the same labels"
            )
    per_class: dict[int, dict[str, dict[str, float]]] = {label: {} for label in labels}
    means: dict[str, float] = {}
    for name in metrics:
        table = np.array([[case[label][name] for label in labels] for case in per_case], dtype=np.float64)  # (N, K)
        mean, std, count = nan_mean_std(table, axis=0)
        for k, label in enumerate(labels):
            per_class[label][name] = {"mean": float(mean[k]), "std": float(std[k]), "count": int(count[k])}
        means[name] = float(nan_mean_std(mean)[0])
    return {"per_class": per_class, "mean": means}


def check_label_map(array: np.ndarray, what: str = "segmentation") -> np.ndarray:
    """Return `array` as a numpy array; raise InputError unless it holds non-negative integer (or bool) labels."""
    array = np.asarray(array)
    if array.dtype.kind not in "biu":
        raise InputError(f"{what} must hold integer labels, not {array.dtype}; cast it with .astype(np.uint8)")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise InputError(f"{what} holds negative values (min {array.min()}); labels must be >= 0")
    return array


def _check_pair(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, prediction = check_label_map(reference, "reference"), check_label_map(prediction, "prediction")
    if reference.shape != prediction.shape:
        raise InputError(
            f"reference and prediction must have the same shape, not {list(reference.shape)} and "
            f"{list(prediction.shape)}; export predictions to the reference's geometry first"
        )
    as_int = [a.view(np.uint8) if a.dtype.kind == "b" else a for a in (reference, prediction)]  # bool masks are 0/1
    return as_int[0], as_int[1]
