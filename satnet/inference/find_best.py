"""`satnet find-best`: rank the trained configurations by cross-validation Dice and choose one.

A configuration counts when every fold of WORK_DIR/splits.json has its validation outputs
(`results/<config>/fold_<k>/validation/{case}{ending}` for every validation case of fold k,
written at the end of training). Its score is the mean over labels of the per-label mean Dice
over the union of the folds' validation cases, against WORK_DIR/gt_segmentations. The two best
are also ensembled (their validation probabilities `{case}.npz` averaged, then argmax). The best
of all candidates wins (an ensemble only if strictly better, as it costs twice the prediction
time); postprocessing is decided for it on the same cross-validation predictions
(satnet.inference.postprocessing.decide_postprocessing) and saved where `satnet predict` finds
it. Everything is recorded in WORK_DIR/results/find_best.json.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from satnet.contracts import atomic_write_json
from satnet.errors import InputError, MissingFileError, command
from satnet.evaluation.evaluate import CasePair, build_summary, evaluate_pair
from satnet.evaluation.metrics import case_metrics
from satnet.inference.export import load_probabilities
from satnet.inference.postprocessing import decide_postprocessing, save_postprocessing
from satnet.io.geometry import ImageGeometry
from satnet.io.images import read_label
from satnet.io.pool import map_cases
from satnet.io.workdir import ENSEMBLE_PREFIX, WorkDir, results_name
from satnet.names import DEFAULT_CHECKPOINT
from satnet.planning.plans import Plans, load_plans
from satnet.planning.splits import Splits, load_splits

logger = logging.getLogger(__name__)



@dataclass
class Candidate:
    """A configuration or an ensemble of configurations, with its cross-validation summary."""

    configurations: list[str]
    summary: dict

    @property
    def name(self) -> str:
        return results_name(self.configurations)

    @property
    def mean_dice(self) -> float:
        value = self.summary["mean"]["dice"]
        return -math.inf if value is None else float(value)

    def to_dict(self) -> dict:
        return {"name": self.name, "configurations": self.configurations, "mean_dice": self.summary["mean"]["dice"],
                "dice_per_label": {k: v["dice"]["mean"] for k, v in self.summary["per_class"].items()}}


def validation_file(work_dir: Path, config: str, fold: int, case_id: str, ending: str) -> Path:
    return WorkDir(work_dir).validation_dir(config, fold) / f"{case_id}{ending}"


def missing_folds(work_dir: Path, config: str, splits: Splits, ending: str) -> list[int]:
    """Folds of `config` whose validation outputs are not all there."""
    return [k for k, fold in enumerate(splits.folds)
            if not all(validation_file(work_dir, config, k, c, ending).is_file() for c in fold.val)]


def find_best(work_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Rank, ensemble, decide postprocessing, write results/find_best.json; return its content."""
    work_dir = Path(work_dir)
    plans, splits = load_plans(work_dir), load_splits(work_dir)
    gt_dir = WorkDir(work_dir).gt_segmentations
    if not gt_dir.is_dir():
        raise MissingFileError(f"{gt_dir} not found; rerun `satnet plan-and-preprocess` (it copies labelsTr there)")
    complete, incomplete = _survey(work_dir, plans, splits)
    labels = sorted(v for v in plans.labels.values() if v != 0)
    fold_of = {c: k for k, fold in enumerate(splits.folds) for c in fold.val}
    candidates = [Candidate([c], _evaluate_configuration(work_dir, c, fold_of, plans, labels, workers))
                  for c in complete]
    candidates.sort(key=lambda cand: -cand.mean_dice)
    ranking = list(candidates)
    if len(candidates) >= 2:
        pair = [candidates[0].configurations[0], candidates[1].configurations[0]]
        summary = _evaluate_ensemble(work_dir, pair, fold_of, plans, labels, workers)
        if summary is not None:
            ranking.append(Candidate(pair, summary))
            ranking.sort(key=lambda cand: -cand.mean_dice)  # stable: a tie keeps the single configuration first
    for cand in ranking:
        atomic_write_json(WorkDir(work_dir).crossval_summary(cand.configurations), cand.summary)
    best = ranking[0]
    pairs = list(_segmentations(work_dir, best.configurations, fold_of, plans))
    decision, report = decide_postprocessing(pairs, labels)
    del pairs
    pp_path = save_postprocessing(decision, WorkDir(work_dir).postprocessing(best.configurations))
    result = {
        "format_version": 1,
        "labels": labels,
        "num_cases": len(fold_of),
        "ranking": [c.to_dict() for c in ranking],
        "best": {**best.to_dict(), "mean_dice_postprocessed": report["final"]["mean_dice"]},
        "postprocessing": {"file": str(pp_path), "decision": decision.to_dict(), "report": report},
        "incomplete": {c: folds for c, folds in incomplete.items()},
        "predict_command": predict_command(work_dir, best.configurations),
    }
    atomic_write_json(WorkDir(work_dir).find_best, result)
    return result


def predict_command(work_dir: Path, configs: Sequence[str]) -> str:
    return command("satnet", "predict", "-i", "INPUT_DIR", "-o", "OUTPUT_DIR", "-m", work_dir, "-c", *configs)


def _survey(work_dir: Path, plans: Plans, splits: Splits) -> tuple[list[str], dict[str, list[int]]]:
    """(configurations with every fold validated, {configuration: its missing folds}) over the
    planned configurations and every results/<config>/ folder."""
    root = WorkDir(work_dir).results
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    trained = {p.name for p in folders if not p.name.startswith(ENSEMBLE_PREFIX)}
    for name in sorted(trained - set(plans.configurations)):
        logger.warning("warning: %s has no configuration %r in plans.json; skipped", root / name, name)
    complete, incomplete = [], {}
    for config in sorted(plans.configurations):
        missing = missing_folds(work_dir, config, splits, plans.file_ending)
        if missing:
            incomplete[config] = missing
        else:
            complete.append(config)
    if not complete:
        lines = [f"{c}: folds {', '.join(map(str, m))} missing; {missing_folds_fix(work_dir, c, m)}"
                 for c, m in incomplete.items()]
        raise MissingFileError(
            f"no configuration has validation outputs for all {len(splits.folds)} folds under {root}:\n"
            + "\n".join(f"  - {line}" for line in lines)
        )
    for config, missing in incomplete.items():
        logger.warning("warning: %s is left out: folds %s have no validation outputs; %s", config,
                       ", ".join(map(str, missing)), missing_folds_fix(work_dir, config, missing))
    return complete, incomplete


def missing_folds_fix(work_dir: Path, config: str, folds: Sequence[int]) -> str:
    """The commands that give `folds` of `config` their validation outputs: train an untrained fold, resume an
    unfinished one, validate one trained with --no-validation (its checkpoint_final.pt is there)."""
    paths = WorkDir(work_dir)
    trained = [k for k in folds if paths.checkpoint(config, k, DEFAULT_CHECKPOINT).is_file()]
    unfinished = [k for k in folds if k not in trained and paths.checkpoint(config, k, "latest").is_file()]
    untrained = [k for k in folds if k not in trained and k not in unfinished]
    fixes = []
    if untrained:
        fixes.append(f"train {'them' if len(untrained) > 1 else 'it'} with "
                     + "; ".join(f"`{command('satnet', 'train', work_dir, config, k)}`" for k in untrained))
    for k in unfinished:
        fixes.append(f"fold {k} did not finish training: resume it with "
                     f"`{command('satnet', 'train', work_dir, config, k, '--resume')}`")
    for k in trained:
        fixes.append(f"fold {k} was trained without its validation (--no-validation): run it with "
                     f"`{command('satnet', 'train', work_dir, config, k, '--validation-only')}`")
    return "; ".join(fixes)


def _evaluate_configuration(work_dir: Path, config: str, fold_of: dict[str, int], plans: Plans, labels: list[int],
                            workers: int) -> dict:
    ending = plans.file_ending
    pairs = [CasePair(c, WorkDir(work_dir).gt_file(c, ending), validation_file(work_dir, config, k, c, ending))
             for c, k in sorted(fold_of.items())]
    results = map_cases(functools.partial(evaluate_pair, labels=tuple(labels)), pairs, workers, desc=f"score {config}")
    prediction_of = {pair.case_id: pair.prediction for pair in pairs}  # the fold's file, which the case id does not say
    bad = [f"{prediction_of[r['case']]}: {r['mismatch']}" for r in results if "mismatch" in r]
    if bad:
        raise InputError(f"{len(bad)} validation prediction(s) of {config} are not on the reference grids of "
                         f"{WorkDir(work_dir).gt_segmentations}: {'; '.join(bad[:5])}; predict them again")
    return build_summary(results, labels, plans.labels)


@dataclass(frozen=True)
class _EnsembleCase:
    case_id: str
    reference: Path
    probabilities: tuple[Path, ...]


def _ensemble_jobs(work_dir: Path, configs: Sequence[str], fold_of: dict[str, int], ending: str) -> list[_EnsembleCase]:
    return [_EnsembleCase(c, WorkDir(work_dir).gt_file(c, ending),
                          tuple(validation_file(work_dir, cfg, k, c, ".npz") for cfg in configs))
            for c, k in sorted(fold_of.items())]


def ensemble_segmentation(job: _EnsembleCase) -> tuple[np.ndarray, np.ndarray, ImageGeometry]:
    """(argmax of the mean probabilities uint8 (Z, Y, X), reference, the reference's geometry) of one case."""
    reference, geometry = read_label(job.reference)
    total = None
    for path in job.probabilities:
        probs = load_probabilities(path)  # (K, Z, Y, X)
        if list(probs.shape[1:]) != list(reference.shape):
            raise InputError(f"{path} holds probabilities of shape {list(probs.shape[1:])}, but the reference "
                             f"{job.reference} is {list(reference.shape)}; predict the validation case again")
        total = probs if total is None else np.add(total, probs, out=total)
    return np.argmax(total, axis=0).astype(np.uint8), reference, geometry


def _ensemble_case_metrics(job: _EnsembleCase, labels: tuple[int, ...]) -> dict:
    seg, reference, geometry = ensemble_segmentation(job)
    return {"case": job.case_id, "metrics": case_metrics(reference, seg, labels, spacing=geometry.spacing,
                                                          planar=geometry.spatial_dims_in_file == 2)}


def _evaluate_ensemble(work_dir: Path, configs: list[str], fold_of: dict[str, int], plans: Plans, labels: list[int],
                       workers: int) -> dict | None:
    jobs = _ensemble_jobs(work_dir, configs, fold_of, plans.file_ending)
    absent = [p for job in jobs for p in job.probabilities if not p.is_file()]
    if absent:
        logger.warning("warning: no ensemble of %s: %d validation probability files are missing (e.g. %s); training "
                       "writes them at the end of each fold", " + ".join(configs), len(absent), absent[0])
        return None
    work = functools.partial(_ensemble_case_metrics, labels=tuple(labels))
    return build_summary(map_cases(work, jobs, workers, desc="score ensemble"), labels, plans.labels)


def _segmentations(work_dir: Path, configs: list[str], fold_of: dict[str, int], plans: Plans):
    """(prediction, reference) label maps of every cross-validation case of the candidate, one at a time."""
    if len(configs) > 1:
        for job in _ensemble_jobs(work_dir, configs, fold_of, plans.file_ending):
            yield ensemble_segmentation(job)[:2]
        return
    for case, k in sorted(fold_of.items()):
        yield (read_label(validation_file(work_dir, configs[0], k, case, plans.file_ending))[0],
               read_label(WorkDir(work_dir).gt_file(case, plans.file_ending))[0])
