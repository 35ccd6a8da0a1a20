"""The work folder's layout: every path satnet reads or writes under WORK_DIR, named in this one place.

    WORK_DIR/
      fingerprint.json                  plan-and-preprocess (satnet.planning.fingerprint)
      plans.json                        the planner (satnet.planning.plans)
      splits.json                       plan-and-preprocess (satnet.planning.splits)
      gt_segmentations/{case}{ending}   a byte copy of labelsTr, the references of validation and find-best
      preprocessed/<data_identifier>/   the preprocessed cases (satnet.io.cases); <data_identifier> is
                                        spacing_<z>x<y>x<x> (configurations with one spacing share it), or
                                        the configuration's name in plans written before it existed
      results/
        find_best.json                  find-best's ranking and recommendation
        <config>/                       a configuration, or an ensemble ensemble_<A>+<B> (find-best)
          postprocessing.json           find-best's postprocessing decision
          crossval_summary.json         find-best's cross-validation summary
          fold_<k>/                     one trained fold, k = 0, 1, ... or all
            checkpoint_{latest,best,final}.pt
            training_log.json, progress.png
            validation/                 the fold's validation cases: {case}{ending}, {case}.npz, summary.json

`WorkDir(work_dir)` answers each path; the stages ask it instead of joining names themselves, and
docs/formats.md draws the same tree. EXPORT_FILE is not in WORK_DIR: it marks the folder `satnet
export` writes, named here so that the loaders of a work folder can tell a user who gives one
instead. This module imports nothing from satnet (floor 2, io).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

FINGERPRINT_FILE = "fingerprint.json"
PLANS_FILE = "plans.json"
SPLITS_FILE = "splits.json"
GT_FOLDER = "gt_segmentations"
PREPROCESSED_FOLDER = "preprocessed"
RESULTS_FOLDER = "results"
FIND_BEST_FILE = "find_best.json"
POSTPROCESSING_FILE = "postprocessing.json"
CROSSVAL_SUMMARY_FILE = "crossval_summary.json"
VALIDATION_FOLDER = "validation"
TRAINING_LOG_FILE = "training_log.json"
PROGRESS_PLOT_FILE = "progress.png"
ENSEMBLE_PREFIX = "ensemble_"
EXPORT_FILE = "satnet_model.json"  # in an exported model's folder (satnet.inference.exported), not in WORK_DIR


def is_exported_folder(folder: str | Path) -> bool:
    """Whether `folder` is a model folder written by `satnet export` (it holds EXPORT_FILE)."""
    return (Path(folder) / EXPORT_FILE).is_file()
FOLD_FOLDER = re.compile(r"^fold_(\d+|all)$")  # fold_0, fold_1, ..., fold_all


def fold_folder(fold: int | str) -> str:
    """"fold_<k>": the folder of fold k (0, 1, ... or "all") under results/<config>/."""
    return f"fold_{fold}"


def checkpoint_name(which: str) -> str:
    """"checkpoint_<which>.pt", which one of satnet.names.CHECKPOINT_NAMES (latest, best, final)."""
    return f"checkpoint_{which}.pt"


def ensemble_name(configs: Sequence[str]) -> str:
    """Folder name under results/ of an ensemble: "ensemble_<A>+<B>", names sorted (order-free)."""
    return ENSEMBLE_PREFIX + "+".join(sorted(configs))


def results_name(configs: Sequence[str]) -> str:
    """The folder under results/ of one configuration (its name) or of an ensemble of several."""
    return configs[0] if len(configs) == 1 else ensemble_name(configs)


@dataclass(frozen=True)
class WorkDir:
    """The paths of one work folder (nothing is created or checked here)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def fingerprint(self) -> Path:
        return self.root / FINGERPRINT_FILE

    @property
    def plans(self) -> Path:
        return self.root / PLANS_FILE

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FILE

    @property
    def gt_segmentations(self) -> Path:
        """The folder of the reference labels, {case}{ending}."""
        return self.root / GT_FOLDER

    def gt_file(self, case_id: str, ending: str) -> Path:
        return self.gt_segmentations / f"{case_id}{ending}"

    @property
    def preprocessed(self) -> Path:
        return self.root / PREPROCESSED_FOLDER

    def preprocessed_data(self, data_identifier: str) -> Path:
        """preprocessed/<data_identifier>: one configuration's preprocessed cases (ConfigurationPlan.data_dir)."""
        return self.preprocessed / data_identifier

    @property
    def results(self) -> Path:
        return self.root / RESULTS_FOLDER

    @property
    def find_best(self) -> Path:
        return self.results / FIND_BEST_FILE

    def results_dir(self, name: str) -> Path:
        """results/<name>: a configuration's folder, or an ensemble's (`ensemble_name`)."""
        return self.results / name

    def fold_dir(self, config: str, fold: int | str) -> Path:
        """results/<config>/fold_<k>."""
        return self.results_dir(config) / fold_folder(fold)

    def checkpoint(self, config: str, fold: int | str, which: str) -> Path:
        """results/<config>/fold_<k>/checkpoint_<which>.pt."""
        return self.fold_dir(config, fold) / checkpoint_name(which)

    def validation_dir(self, config: str, fold: int | str) -> Path:
        """results/<config>/fold_<k>/validation: the fold's validation predictions and their summary.json."""
        return self.fold_dir(config, fold) / VALIDATION_FOLDER

    def postprocessing(self, configs: Sequence[str]) -> Path:
        """Where find-best stores the postprocessing decision of one configuration or an ensemble."""
        return self.results_dir(results_name(configs)) / POSTPROCESSING_FILE

    def crossval_summary(self, configs: Sequence[str]) -> Path:
        """find-best's cross-validation summary of one configuration or an ensemble."""
        return self.results_dir(results_name(configs)) / CROSSVAL_SUMMARY_FILE
