"""The inputs of one fold's training, read and checked before anything is built.

    run = load_fold_run(work_dir, "3d", 0)

reads WORK_DIR/plans.json, splits.json and checks that the configuration's preprocessed cases
of the fold are complete. A fresh start refuses a fold folder that already holds a run; a
resumed one (satnet.training.checkpointing.load_for_resume) keeps the plans and the options it
started with, of which the command line may change only some (satnet.training.options).
Every error names the file and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import torch

from satnet.errors import ConfigError, MissingFileError
from satnet.io.cases import is_complete
from satnet.io.workdir import WorkDir
from satnet.planning.plans import ConfigurationPlan, Plans, load_plans
from satnet.planning.splits import fold_cases, load_splits
from satnet.training import distributed as ddp
from satnet.training.checkpointing import checkpoint_file
from satnet.training.options import TrainOptions, given_fields, merge_for_resume, resolve_options

PLAN_HINT = "run `satnet plan-and-preprocess RAW_DATASET_DIR -o {work_dir}` first"


@dataclass
class FoldRun:
    """The inputs of one fold's training, read and checked before anything is built."""

    config: str
    fold: str
    plans: Plans
    plans_text: str
    plan: ConfigurationPlan
    train_cases: list[str]
    val_cases: list[str]
    data_dir: Path
    fold_dir: Path

    @property
    def class_names(self) -> list[str]:
        """Foreground label names in label order (1..K-1)."""
        return [name for name, value in sorted(self.plans.labels.items(), key=lambda kv: kv[1]) if value != 0]


def load_fold_run(work_dir: str | Path, config: str, fold: int | str) -> FoldRun:
    """Plans, the fold's cases and the preprocessed data, each checked with an error naming the fix."""
    work_dir = Path(work_dir)
    layout = WorkDir(work_dir)
    plans = load_plans(work_dir)
    try:
        plan = plans.configuration(config)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {layout.plans}); plan it with `satnet plan-and-preprocess --configs`") from None
    cases = fold_cases(load_splits(work_dir), fold)
    fold = str(fold)
    data_dir = plan.data_dir(work_dir)
    missing = [c for c in dict.fromkeys(cases.train + cases.val) if not is_complete(data_dir, c)]
    if missing:
        where = "does not exist" if not data_dir.is_dir() else f"lacks {len(missing)} of the fold's cases (first: {missing[0]})"
        raise MissingFileError(
            f"the preprocessed data of configuration {config!r}, {data_dir}, {where}; "
            + PLAN_HINT.format(work_dir=work_dir)
            + f" (or `satnet preprocess RAW_DATASET_DIR -o {work_dir} --configs {config}` to finish it)"
        )
    return FoldRun(config, fold, plans, layout.plans.read_text(encoding="utf-8-sig"), plan, cases.train, cases.val,
                   data_dir, layout.fold_dir(config, fold))


def refuse_existing_run(fold_dir: Path, config: str, fold: str) -> None:
    """A fresh start must not overwrite a run's checkpoints (days of training) by accident."""
    found = [p.name for p in (checkpoint_file(fold_dir, w) for w in ("latest", "final")) if p.is_file()]
    if found:
        raise ConfigError(
            f"{fold_dir} already holds a training run ({', '.join(found)}): add --resume to continue it, or delete "
            f"that folder to train {config} fold {fold} again from scratch"
        )


def with_checkpoint_plans(run: FoldRun, checkpoint: dict[str, Any]) -> FoldRun:
    """A resumed run keeps the plans it started with; its configuration must still match plans.json."""
    plans = Plans.from_dict(json.loads(checkpoint["plans_json"]), "plans_json of checkpoint_latest.pt")
    then = plans.configuration(run.config)
    if then.to_dict() != run.plan.to_dict():
        changed = [k for k, v in then.to_dict().items() if run.plan.to_dict().get(k) != v]
        raise ConfigError(
            f"configuration {run.config!r} in plans.json changed since this run started ({', '.join(changed)} "
            f"differ); a run can only be resumed with the plan it started with: restore plans.json, or train "
            f"without --resume after deleting {run.fold_dir}"
        )
    run.plans, run.plans_text, run.plan = plans, checkpoint["plans_json"], then
    return run


def resolve_run_options(
    options: TrainOptions, given: Collection[str] | None, checkpoint: dict[str, Any] | None, run: FoldRun
) -> TrainOptions:
    """The options the run trains with, resolved for this machine: a resumed run's are those it started with
    (checkpoint_latest.pt), changed only where `given` allows (satnet.training.options.merge_for_resume)."""
    if checkpoint is not None:
        stored = TrainOptions.from_dict(checkpoint["train_options"], "train_options of checkpoint_latest.pt")
        options = merge_for_resume(stored, options, given_fields(options, given))
        done = int(checkpoint["epoch"])
        if options.epochs < done:  # it would write checkpoint_final.pt at once, as if the run had ended
            raise ConfigError(
                f"--epochs {options.epochs} is fewer than the {done} epochs {checkpoint_file(run.fold_dir, 'latest')} "
                f"has already trained: give --epochs {done} or more to continue (leave it out to keep "
                f"{stored.epochs}), or train the fold again from scratch in another work folder"
            )
    ranks_per_node = ddp.context_from_environment().local_world_size
    return resolve_options(options, run.plan.batch_size, torch.cuda.is_available(), ranks_per_node)

