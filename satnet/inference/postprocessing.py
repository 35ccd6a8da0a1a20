"""Connected-component postprocessing and the cross-validation decision whether to use it.

A segmentation network sometimes predicts small spurious islands far from the organ. Keeping
only the largest connected component removes them, but it also removes true second components
(two kidneys drawn with one label, a lesion that is split). nnU-Net therefore decides from the
cross-validation predictions, and so do we (`decide_postprocessing`):

1. Remove every foreground component but the largest (all labels together: a component of
   the union of labels is kept or removed whole). Adopt this if it raises the mean Dice over
   labels and lowers no label's mean Dice.
2. Then, for each label on its own, keep only its largest component, with the same rule.

The decision is a `PostprocessingDecision`, stored as `postprocessing.json`, and
`apply_postprocessing` applies it to new predictions.

Connectivity is full: voxels touching by a face, an edge or a corner are connected (26
neighbours in 3D, 8 in 2D; `scipy.ndimage.generate_binary_structure(ndim, ndim)`), as in
nnU-Net v2, so a diagonal thin structure is not cut into pieces. Removed voxels become
background (0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from satnet.contracts import Contract, atomic_write_json, read_json
from satnet.errors import ConfigError, InputError
from satnet.evaluation.metrics import check_label_map, confusion_counts, nan_mean_std, rates_from_counts


@dataclass
class PostprocessingDecision(Contract):
    """Which connected-component steps `apply_postprocessing` runs, in this order.

    keep_largest_foreground: keep only the largest component of all foreground labels together.
    largest_component_labels: labels that keep only their own largest component.
    """

    FORMAT_VERSION = 1

    keep_largest_foreground: bool = False
    largest_component_labels: list[int] = field(default_factory=list)
    format_version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.keep_largest_foreground, bool):
            raise ConfigError(f"keep_largest_foreground must be true or false, not {self.keep_largest_foreground!r}")
        labels = self.largest_component_labels
        if not isinstance(labels, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in labels):
            raise ConfigError(
                f"largest_component_labels must be a list of foreground labels (integers >= 1), not {labels!r}"
            )
        if len(set(labels)) < len(labels):
            raise ConfigError(f"largest_component_labels lists a label twice: {labels}")


def save_postprocessing(decision: PostprocessingDecision, path: str | Path) -> Path:
    """Write the decision atomically as JSON to `path` (conventionally .../postprocessing.json)."""
    return atomic_write_json(path, decision)


def load_postprocessing(path: str | Path) -> PostprocessingDecision:
    """Read a decision written by `save_postprocessing`; errors name the file and the fix."""
    fix = "it is written after cross-validation; delete it to predict without postprocessing"
    return PostprocessingDecision.from_dict(read_json(path, "postprocessing file", fix), str(path))


def keep_largest_component(seg: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
    """Keep only the largest connected component of each label in `labels` (None: every label present).

    seg: integer label map, (Z, Y, X) or any number of axes. Returns a new array of the same
    shape and dtype with the other components of those labels set to 0. Of equal-sized largest
    components the first in C order is kept.
    """
    seg = check_label_map(seg)
    out = seg.copy()
    if labels is None:
        labels = [int(v) for v in np.flatnonzero(np.bincount(seg.reshape(-1))) if v != 0] if seg.size else []
    for label in labels:
        _remove_all_but_largest(out, seg == label)
    return out


def keep_largest_foreground(seg: np.ndarray) -> np.ndarray:
    """Keep only the largest connected component of the foreground (all labels > 0 together).

    Voxels of the other components, whatever their label, are set to 0; inside the kept
    component labels are unchanged. Returns a new array; `seg` is not modified.
    """
    seg = check_label_map(seg)
    out = seg.copy()
    _remove_all_but_largest(out, seg > 0)
    return out


def apply_postprocessing(seg: np.ndarray, decision: PostprocessingDecision) -> np.ndarray:
    """Apply `decision` to a label map (any number of axes); returns a new array."""
    if decision.keep_largest_foreground:
        seg = keep_largest_foreground(seg)
    return keep_largest_component(seg, decision.largest_component_labels)


def decide_postprocessing(
    cases: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[int]
) -> tuple[PostprocessingDecision, dict]:
    """Choose the postprocessing that helps on cross-validation predictions (see the module docstring).

    cases: (prediction, reference) label maps per case, same shape within a case.
    labels: the foreground labels to score (1..K).
    A step is adopted only if it strictly raises the mean over labels of the per-label mean
    Dice (cases where a label is absent from both masks are skipped, see
    satnet.evaluation.metrics) and lowers no label's mean Dice.

    Returns the decision and the numbers behind it, JSON-ready (NaN written as None):
    {"labels", "num_cases", "baseline", "keep_largest_foreground", "largest_component": {label: ...},
    "final"}, each holding "mean_dice" and "dice_per_label", the steps also "applied".
    """
    labels = [int(v) for v in labels]
    if not cases:
        raise InputError("decide_postprocessing needs at least one (prediction, reference) case")
    for i, (prediction, reference) in enumerate(cases):
        if np.shape(prediction) != np.shape(reference):
            shapes = f"{list(np.shape(prediction))} and {list(np.shape(reference))}"
            raise InputError(f"case {i}: prediction and reference differ in shape ({shapes})")
    predictions = [np.asarray(p) for p, _ in cases]
    references = [np.asarray(r) for _, r in cases]
    report: dict = {"labels": labels, "num_cases": len(cases)}

    current = _dice_per_label(predictions, references, labels)  # (K,) mean Dice per label
    report["baseline"] = _summary(current, labels)
    largest_foreground = [keep_largest_foreground(p) for p in predictions]
    trial = _dice_per_label(largest_foreground, references, labels)
    use_foreground = _improves(current, trial)
    report["keep_largest_foreground"] = {**_summary(trial, labels), "applied": use_foreground}
    if use_foreground:
        predictions, current = largest_foreground, trial
    del largest_foreground

    chosen: list[int] = []
    report["largest_component"] = {}
    for k, label in enumerate(labels):
        trial = _dice_per_label((keep_largest_component(p, [label]) for p in predictions), references, labels)
        # Only this label's voxels change (to background), so only its Dice moves: the trial runs on
        # `predictions` without the steps chosen so far, and the candidate is `current` with this
        # label's new Dice. (Comparing `current` with the trial itself saw every earlier chosen
        # label fall back to its old Dice and rejected all later labels.)
        candidate = current.copy()
        candidate[k] = trial[k]
        applied = _improves(current, candidate)
        report["largest_component"][str(label)] = {**_summary(candidate, labels), "applied": applied}
        if applied:
            chosen.append(label)
            current = candidate
    report["final"] = _summary(current, labels)
    return PostprocessingDecision(use_foreground, chosen), report


def _remove_all_but_largest(out: np.ndarray, mask: np.ndarray) -> None:
    """Set to 0, in `out`, every connected component of `mask` except the largest."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)  # full connectivity
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return
    sizes = np.bincount(components.reshape(-1))
    sizes[0] = 0  # the background is no component
    largest = int(np.argmax(sizes))
    out[(components != largest) & mask] = 0


def _dice_per_label(
    predictions: Iterable[np.ndarray], references: Sequence[np.ndarray], labels: list[int]
) -> np.ndarray:
    """Mean Dice per label over the cases, NaN cases skipped: (K,). Predictions may be a generator."""
    counts = np.stack([confusion_counts(r, p, labels) for p, r in zip(predictions, references)])  # (N, K, 4)
    return nan_mean_std(rates_from_counts(counts)["dice"], axis=0)[0]


def _improves(before: np.ndarray, after: np.ndarray) -> bool:
    """True if the mean over labels rises and no label's Dice falls (a label turned NaN has not fallen)."""
    mean_before, mean_after = nan_mean_std(before)[0], nan_mean_std(after)[0]
    return bool(mean_after > mean_before and not np.any(after < before))


def _summary(dice: np.ndarray, labels: list[int]) -> dict:
    as_json = [None if np.isnan(v) else float(v) for v in dice]
    mean = float(nan_mean_std(dice)[0])
    return {"mean_dice": None if np.isnan(mean) else mean, "dice_per_label": dict(zip(map(str, labels), as_json))}
