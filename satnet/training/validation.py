"""A fold's final validation: predict its validation cases like `satnet predict`, then evaluate.

Writes WORK_DIR/results/<CONFIG>/fold_<k>/validation/:
- `{case}{ending}`: the segmentation on the raw image's grid (uint8), as `satnet predict` writes it;
- `{case}.npz`: float16 class probabilities (K, Z, Y, X) on that grid, for find-best's ensembles;
- `summary.json`: Dice, FPR and FNR per case and label against WORK_DIR/gt_segmentations.

The cases are predicted from their preprocessed arrays (they went through exactly the
preprocessing of `satnet predict`), with the same sliding window, mirroring and export code.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from satnet.errors import InputError, MissingFileError
from satnet.evaluation.evaluate import SUMMARY_FILE, evaluate_folders
from satnet.inference.predictor import InferenceSettings, predict_preprocessed_cases
from satnet.io.workdir import VALIDATION_FOLDER, WorkDir
from satnet.names import DEFAULT_CHECKPOINT
from satnet.planning.plans import ConfigurationPlan, Plans

logger = logging.getLogger(__name__)



def final_validation(
    work_dir: str | Path, fold_dir: str | Path, network: nn.Module, plans: Plans, plan: ConfigurationPlan,
    data_dir: str | Path, val_cases: Sequence[str], settings: InferenceSettings | None = None,
) -> dict[str, Any] | None:
    """Predict and evaluate `val_cases`; returns the evaluation summary (None without cases)."""
    if not val_cases:
        logger.info("no validation cases for this fold: final validation skipped")
        return None
    gt_dir = WorkDir(work_dir).gt_segmentations
    if not gt_dir.is_dir():
        raise MissingFileError(
            f"{gt_dir} not found: the reference labels for validation are copied there by preprocessing; rerun "
            f"`satnet preprocess RAW_DATASET_DIR -o {work_dir}` (complete cases are kept)"
        )
    out_dir = Path(fold_dir) / VALIDATION_FOLDER
    logger.info("final validation: predicting %d cases into %s", len(val_cases), out_dir)
    report = predict_preprocessed_cases(network, plan, data_dir, val_cases, out_dir, plans.file_ending,
                                        save_probabilities=True, settings=settings)
    if report.failed:
        raise InputError(f"final validation could not predict {len(report.failed)} case(s):\n"
                         f"{report.failure_summary()}\nrerun `satnet preprocess` for them, then "
                         f"`satnet train ... --validation-only`")
    labels = sorted(v for v in plans.labels.values() if v > 0)
    summary = evaluate_folders(gt_dir, out_dir, labels=labels, output=out_dir / SUMMARY_FILE, case_ids=val_cases)
    dice = summary["mean"]["dice"] if "mean" in summary and "dice" in summary["mean"] else None
    logger.info("final validation: mean Dice %s over %d cases (%s)", "n/a" if dice is None else f"{dice:.4f}",
                len(val_cases), out_dir / SUMMARY_FILE)
    return summary


def validate_trained_fold(work_dir: str | Path, config: str, fold: str, checkpoint: str = DEFAULT_CHECKPOINT,
                          device: str = "auto") -> dict | None:
    """`satnet train ... --validation-only`: the final validation from a fold's saved checkpoint, on `device`
    ("auto": CUDA when present, as training)."""
    from satnet.inference.models import load_configuration
    from satnet.inference.settings import resolve_device
    from satnet.planning.splits import fold_cases, load_splits

    models = load_configuration(work_dir, config, [str(fold)], checkpoint, str(resolve_device(device)), "train")
    val_cases = fold_cases(load_splits(work_dir), fold).val
    fold_dir = WorkDir(work_dir).fold_dir(config, fold)
    return final_validation(work_dir, fold_dir, models.networks[0], models.plans, models.plan,
                            models.plan.data_dir(work_dir), val_cases)
