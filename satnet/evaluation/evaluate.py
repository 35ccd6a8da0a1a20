"""`satnet evaluate`: score a folder of predicted segmentations against a folder of references.

Files pair by name, `{case}{ending}` in both folders. Per case and label: Dice, FPR, FNR and the
voxel counts (satnet.evaluation.metrics); per label the mean and standard deviation over cases.
A prediction must lie on its reference's voxel grid (shape exactly; spacing, origin and
direction within satnet.io.images.GEOMETRY_TOLERANCE), else the evaluation stops with an
error naming every such case: a Dice over misaligned voxels would be meaningless. A reference
without a prediction, and a prediction without a reference, are listed in the summary and
left out of the means.

Labels scored: given, else the foreground labels of the dataset.json (or plans.json) named by
`dataset_json` (`--dataset-json`, nnU-Net's -djfile) or, without it, beside the reference folder
(RAW/labelsTr -> RAW/dataset.json, WORK_DIR/gt_segmentations -> WORK_DIR/plans.json), else every
non-zero value found in the references and predictions.
When that file's labels have an "ignore" entry (nnU-Net v2's ignore label), voxels whose
reference holds it are left out of every metric of every label, and it is never scored; without
such a file there is no ignore label. Region-based labels there (a name mapped to a list of
values) are not scored as regions: evaluation stops and asks for the label values (-l), which are
then scored one against the rest, with that file's ignore label and file ending still applied.
The summary's fields are documented in docs/predict.md.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from satnet.contracts import atomic_write_json, read_json
from satnet.errors import InputError, MissingFileError
from satnet.evaluation.metrics import METRICS, aggregate_metrics, case_metrics
from satnet.io.dataset import DATASET_JSON
from satnet.io.images import geometry_mismatch, image_ending, read_label
from satnet.io.pool import map_cases
from satnet.io.workdir import PLANS_FILE

logger = logging.getLogger(__name__)

SUMMARY_FORMAT_VERSION = 1
SUMMARY_FILE = "summary.json"
IGNORE_KEY = "ignore"  # nnU-Net v2's labels entry for voxels left out of training and scoring


@dataclass(frozen=True)
class CasePair:
    """A reference and the prediction to score against it."""

    case_id: str
    reference: Path
    prediction: Path


def label_files(folder: str | Path, file_ending: str | None = None) -> dict[str, Path]:
    """Case id -> file for the files of `folder` ending in `file_ending` (any supported image ending
    when None); hidden files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"folder not found: {folder}")
    files = {}
    for path in sorted(folder.iterdir()):
        if file_ending:
            ending = file_ending if path.name.endswith(file_ending) and len(path.name) > len(file_ending) else None
        else:
            ending = image_ending(path)
        if ending is not None and not path.name.startswith(".") and path.is_file():
            files[path.name[: -len(ending)]] = path
    return files


def dataset_labels(reference_dir: str | Path, dataset_json: str | Path | None = None
                   ) -> tuple[dict[str, int | list[int]] | None, str | None, Path | None]:
    """(labels name -> value, file ending, the file) from `dataset_json` (a dataset.json or plans.json), else from
    the dataset.json or plans.json beside `reference_dir`, or (None, None, None) when there is neither.
    InputError naming the file when it holds no JSON object, and when `dataset_json` is missing or has no valid
    labels (a file found beside the folder without them is passed over). A value is a list of values for
    nnU-Net v2's region-based labels; the ignore label is always one value."""
    given = dataset_json is not None
    paths = [Path(dataset_json)] if given else [Path(reference_dir).parent / n for n in (DATASET_JSON, PLANS_FILE)]
    where = "given with --dataset-json" if given else f"beside {reference_dir}"
    for path in paths:
        if given and not path.is_file():
            raise MissingFileError(f"--dataset-json {path}: no such file; give the dataset.json of the raw dataset "
                                   f"(or a work folder's plans.json) whose labels the references use")
        if not path.is_file():
            continue
        data = read_json(path, path.name)
        if not isinstance(data, dict):
            raise InputError(
                f"{path}: must hold a JSON object (with labels and file_ending), not a {type(data).__name__}; "
                f"evaluate reads the labels to score and the file ending from the {path.name} {where}: "
                f"fix it as docs/formats.md describes"
            )
        labels, ending = data.get("labels"), data.get("file_ending")
        if (isinstance(labels, dict) and all(_label_value(v) or _region(v) for v in labels.values())
                and _label_value(labels.get(IGNORE_KEY, 0))):
            logger.info("labels and file ending from %s", path)
            return dict(labels), ending if isinstance(ending, str) else None, path
        if given:
            raise InputError(
                f"--dataset-json {path}: no valid \"labels\" object (name -> integer value, or a list of values for a "
                f"region; \"{IGNORE_KEY}\" one value): give a dataset.json or plans.json as docs/formats.md describes"
            )
    return None, None, None


def _label_value(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _region(value: Any) -> bool:
    """An nnU-Net v2 region: a list of the label values it unites."""
    return isinstance(value, list) and bool(value) and all(_label_value(v) for v in value)


def evaluate_folders(
    reference_dir: str | Path,
    prediction_dir: str | Path,
    labels: Sequence[int] | None = None,
    output: str | Path | None = None,
    workers: int = 1,
    case_ids: Sequence[str] | None = None,
    dataset_json: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate `prediction_dir` against `reference_dir`; return the summary (and write it to `output`).

    case_ids: evaluate only these references (a fold's validation cases), else all of them.
    dataset_json: the dataset.json or plans.json with the labels, ignore label and file ending (default: the
    one beside `reference_dir`, if any).
    Raises InputError when no prediction matches a reference, or when a prediction's geometry
    differs from its reference's (naming every such case).
    """
    reference_dir, prediction_dir = Path(reference_dir), Path(prediction_dir)
    names, ending, labels_file = dataset_labels(reference_dir, dataset_json)
    regions = {k: v for k, v in (names or {}).items() if _region(v)}
    if regions and labels is None:
        shown = ", ".join(f"{k!r}: {v}" for k, v in regions.items())
        raise InputError(
            f"{labels_file} defines region-based labels ({shown}); satnet evaluate scores label values one "
            f"against the rest, not regions, so the regions' Dice would not be reported: give the label values to "
            f"score with -l (each is scored on its own; the ignore label, if any, still masks)"
        )
    references = label_files(reference_dir, ending)
    if case_ids is not None:
        absent = sorted(set(case_ids) - set(references))
        if absent:
            raise MissingFileError(f"{len(absent)} reference(s) not found in {reference_dir}: {', '.join(absent[:5])}")
        references = {c: references[c] for c in case_ids}
    if not references:
        raise InputError(f"no reference segmentation in {reference_dir} (looked for *{ending or ' image files'})")
    ending = ending or image_ending(next(iter(references.values())))
    predictions = label_files(prediction_dir, ending)
    pairs = [CasePair(c, references[c], predictions[c]) for c in sorted(references) if c in predictions]
    if not pairs:
        raise InputError(
            f"no prediction in {prediction_dir} matches a reference in {reference_dir}: predictions are named like "
            f"the references ({{case}}{ending}, e.g. {next(iter(references.values())).name})"
        )
    ignore_label = names.get(IGNORE_KEY) if names else None
    if labels is None:
        labels = _foreground(names) if names else _values_present(pairs, workers)
    labels = [int(v) for v in labels]
    if ignore_label is not None and ignore_label in labels:
        raise InputError(
            f"label {ignore_label} is the ignore label of {labels_file} (labels[\"{IGNORE_KEY}\"]): its voxels are "
            f"left out of scoring, so it cannot be scored; leave it out of the labels to score (-l/--labels)"
        )
    work = functools.partial(evaluate_pair, labels=tuple(labels), ignore_label=ignore_label)
    results = map_cases(work, pairs, workers, desc="evaluate")
    mismatches = [f"{r['case']}: {r['mismatch']}" for r in results if "mismatch" in r]
    if mismatches:
        raise InputError(
            f"{len(mismatches)} prediction(s) in {prediction_dir} are not on their reference's voxel grid:\n"
            + "\n".join(f"  - {m}" for m in mismatches)
            + "\npredict with `satnet predict` (it writes each input's geometry), or resample the predictions onto "
              "the references' grids"
        )
    summary = build_summary(results, labels, names, ignore_label)
    summary.update(
        reference_dir=str(reference_dir), prediction_dir=str(prediction_dir),
        labels_file=None if labels_file is None else str(labels_file),
        missing_predictions=sorted(set(references) - set(predictions)),
        unmatched_predictions=sorted(set(predictions) - set(references)) if case_ids is None else [],
    )
    if output is not None:
        atomic_write_json(output, summary)
    return summary


def _foreground(names: dict[str, int]) -> list[int]:
    """The scored labels of a dataset.json's labels: neither background (0) nor the ignore label."""
    return sorted(v for v in names.values() if v not in (0, names.get(IGNORE_KEY)))


def _values_present(pairs: list[CasePair], workers: int) -> list[int]:
    found = map_cases(_label_values, pairs, workers, desc="labels")
    values = sorted(set().union(*found) - {0})
    if not values:
        raise InputError("references and predictions hold only background (0): nothing to evaluate; give -l LABELS")
    return values


def _label_values(pair: CasePair) -> set[int]:
    return {int(v) for path in (pair.reference, pair.prediction) for v in np.unique(read_label(path)[0])}


def evaluate_pair(pair: CasePair, labels: tuple[int, ...], ignore_label: int | None = None) -> dict[str, Any]:
    """{"case", "reference", "prediction", "metrics": {label: {...}}} (and "ignored_voxels" with an
    ignore label), or {"case", "mismatch"} when the prediction is not on the reference's grid
    (module level, for worker processes)."""
    reference, ref_geometry = read_label(pair.reference)  # (Z, Y, X)
    prediction, pred_geometry = read_label(pair.prediction)
    mismatch = geometry_mismatch(ref_geometry, pred_geometry)
    if mismatch:
        return {"case": pair.case_id, "mismatch": mismatch}
    metrics = case_metrics(reference, prediction, labels, spacing=ref_geometry.spacing,
                           planar=ref_geometry.spatial_dims_in_file == 2, ignore_label=ignore_label)
    result = {"case": pair.case_id, "reference": str(pair.reference), "prediction": str(pair.prediction),
              "metrics": metrics}
    if ignore_label is not None:
        result["ignored_voxels"] = int(np.count_nonzero(reference == ignore_label))
    return result


def build_summary(results: list[dict], labels: Sequence[int], names: dict[str, int] | None = None,
                  ignore_label: int | None = None) -> dict[str, Any]:
    """The summary of per-case results (each with "case" and "metrics" as `evaluate_pair` returns),
    JSON-ready: NaN becomes None."""
    aggregate = aggregate_metrics([r["metrics"] for r in results])
    label_names = {str(v): k for k, v in (names or {}).items() if v in labels}
    summary = {
        "format_version": SUMMARY_FORMAT_VERSION,
        "labels": [int(v) for v in labels],
        "label_names": label_names,
        "ignore_label": ignore_label,
        "num_cases": len(results),
        "mean": aggregate["mean"],
        "per_class": {str(k): v for k, v in aggregate["per_class"].items()},
        "per_case": [{**r, "metrics": {str(k): v for k, v in r["metrics"].items()}} for r in results],
    }
    return nan_to_none(summary)


def nan_to_none(value: Any) -> Any:
    """A copy of a JSON-like value with every float NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def format_table(summary: dict[str, Any]) -> str:
    """The summary as text: a row per case (Dice, FPR, FNR per label), then mean +- std per label."""
    labels = [str(v) for v in summary["labels"]]
    names = summary.get("label_names", {})
    header = ["case"] + [f"{m.upper() if m != 'dice' else 'Dice'} {v}" for v in labels for m in METRICS]
    rows = [[r["case"]] + [_num(r["metrics"][v][m]) for v in labels for m in METRICS] for r in summary["per_case"]]
    lines = _columns([header] + rows)
    lines.append("")
    stats = [["label", "Dice", "FPR", "FNR", "cases"]]
    for v in labels:
        per = summary["per_class"][v]
        title = f"{v} ({names[v]})" if v in names else v
        stats.append([title] + [f"{_num(per[m]['mean'])} +- {_num(per[m]['std'])}" for m in METRICS]
                     + [str(per["dice"]["count"])])
    stats.append(["mean"] + [_num(summary["mean"][m]) for m in METRICS] + [str(summary["num_cases"])])
    lines += _columns(stats)
    if summary.get("ignore_label") is not None:  # absent from summaries written before it existed
        lines.append(f"voxels whose reference is {summary['ignore_label']} (the ignore label) are left out of every "
                     f"metric")
    for key, what in (("missing_predictions", "reference(s) without a prediction"),
                      ("unmatched_predictions", "prediction(s) without a reference")):
        if summary.get(key):
            lines.append(f"{len(summary[key])} {what}, left out: {', '.join(summary[key][:10])}"
                         + (" ..." if len(summary[key]) > 10 else ""))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
