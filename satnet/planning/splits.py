"""Cross-validation splits: WORK_DIR/splits.json.

`make_splits` runs scikit-learn's KFold(shuffle=True, random_state=seed) over the sorted case
ids, so the folds depend only on the set of ids and the seed (not on file-system order), and
match nnU-Net's for the same ids and seed. Written once by planning and read by training, so
every fold of every run validates on the same cases; edit the file by hand to use your own folds.

Choices
- Fewer cases than folds (but at least 2): leave-one-out, one fold per case, with a warning;
  folds beyond the number of cases do not exist. A single case cannot be cross-validated.
- Fold "all": train on every case and "validate" on every case too (as nnU-Net does). That
  Dice is measured on training data: a check that training and export work, not an estimate
  of accuracy on new cases.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from satnet.contracts import Contract, atomic_write_json, read_json
from satnet.errors import ConfigError, InputError
from satnet.io.cases import is_safe_name
from satnet.io.workdir import WorkDir

logger = logging.getLogger(__name__)

DEFAULT_SEED = 12345


@dataclass
class Fold(Contract):
    """One cross-validation fold: case ids to train on and to validate on."""

    train: list[str]
    val: list[str]


@dataclass
class Splits(Contract):
    """All folds. Each case is validated in exactly one fold and trained on in all others."""

    FORMAT_VERSION = 1

    seed: int
    folds: list[Fold] = field(default_factory=list)
    format_version: int = 1

    def __post_init__(self) -> None:
        if not self.folds:
            raise ConfigError("splits have no folds; delete splits.json and rerun `satnet plan-and-preprocess`")
        cases = set(self.folds[0].train) | set(self.folds[0].val)
        unsafe = sorted(str(c) for c in cases if not is_safe_name(c))
        if unsafe:  # case ids become file names under WORK_DIR
            raise ConfigError(f"folds[0]: case id(s) {', '.join(map(repr, unsafe[:5]))} are not case names (letters, "
                              f"digits, '.', '_', '-'; no path separators or '..')")
        validated: list[str] = []
        for i, fold in enumerate(self.folds):
            both = set(fold.train) & set(fold.val)
            if both:
                raise ConfigError(f"folds[{i}]: case(s) {sorted(both)[:5]} are in both train and val")
            if set(fold.train) | set(fold.val) != cases:
                raise ConfigError(f"folds[{i}] covers other cases than folds[0]; every fold must split the same cases")
            validated += fold.val
        if sorted(validated) != sorted(cases):
            raise ConfigError("every case must be in the val list of exactly one fold")

    @property
    def case_ids(self) -> list[str]:
        """All case ids, sorted."""
        return sorted(set(self.folds[0].train) | set(self.folds[0].val))


def make_splits(case_ids: Iterable[str], num_folds: int = 5, seed: int = DEFAULT_SEED) -> Splits:
    """KFold(num_folds, shuffle=True, random_state=seed) over the sorted, distinct `case_ids`."""
    from sklearn.model_selection import KFold

    ids = sorted(set(case_ids))
    if len(ids) < 2:
        raise InputError(
            f"cross-validation needs at least 2 cases, found {len(ids)}; add training cases to the dataset"
        )
    if num_folds < 2:
        raise ConfigError(f"num_folds must be at least 2, not {num_folds}")
    if len(ids) < num_folds:
        logger.warning("%d cases for %d folds: using leave-one-out, %d folds", len(ids), num_folds, len(ids))
        num_folds = len(ids)
    kfold = KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    folds = [
        Fold(train=[ids[i] for i in train], val=[ids[i] for i in val]) for train, val in kfold.split(ids)
    ]
    return Splits(seed=seed, folds=folds)


def save_splits(splits: Splits, work_dir: str | Path) -> Path:
    """Write WORK_DIR/splits.json atomically; returns its path."""
    return atomic_write_json(WorkDir(work_dir).splits, splits)


def load_splits(work_dir: str | Path) -> Splits:
    """Read WORK_DIR/splits.json; a missing or invalid file raises an error naming it and the fix."""
    path = WorkDir(work_dir).splits
    fix = f"run `satnet plan-and-preprocess RAW_DATASET_DIR -o {work_dir}` first, which writes it"
    data = read_json(path, "splits file", fix)
    try:
        return Splits.from_dict(data, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n(fix {path} by hand, or delete it and rerun `satnet plan-and-preprocess`)") from None


def fold_cases(splits: Splits, fold: int | str) -> Fold:
    """The train and val case ids of `fold`: 0..len(folds)-1 (an int or its string), or "all"."""
    if fold == "all":
        every = splits.case_ids
        return Fold(train=list(every), val=list(every))
    if isinstance(fold, str) and fold.isdigit():
        fold = int(fold)
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < len(splits.folds):
        raise ConfigError(
            f"fold must be 0..{len(splits.folds) - 1} or 'all', not {fold!r} (splits.json has "
            f"{len(splits.folds)} folds over {len(splits.case_ids)} cases)"
        )
    chosen = splits.folds[fold]
    return Fold(train=list(chosen.train), val=list(chosen.val))
