"""The plan-and-preprocess stage: check, fingerprint, plan, split, preprocess.

Each step writes its file atomically into WORK_DIR and can be rerun alone (`satnet plan`,
`satnet preprocess`). Preprocessing is resumable: a case is complete when its JSON exists
(see satnet/io/cases.py), so a rerun after a kill only does the missing cases, and the result
is byte-identical to an uninterrupted run. A stamp file (`preprocessed/<id>/stamp.json`) records
what determines the preprocessed data; if the plan changes, stale cases are removed first. Each
case's JSON records its raw files (size and SHA-256); a case whose raw files changed is made
again, and its label copied again into gt_segmentations (satnet/preprocessing/sources.py).
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Sequence

from satnet.contracts import (
    atomic_write_json,
    check_writable_folder,
    dumps_json,
    read_json_or_none,
    remove_temporaries,
)
from satnet.errors import InputError, SatnetError, command
from satnet.io.cases import is_complete, save_case
from satnet.io.checks import RawDataset, check_dataset
from satnet.io.dataset import DatasetJson, check_work_dir_outside_raw, load_dataset_json
from satnet.io.images import read_image, read_label
from satnet.io.pool import map_cases
from satnet.io.raw_cases import RawCase
from satnet.io.workdir import WorkDir
from satnet.planning.fingerprint import compute_fingerprint, save_fingerprint
from satnet.planning.planner import GIB, PlannerOptions, merge_plans, plan_experiment
from satnet.planning.plans import ConfigurationPlan, Plans, load_plans, save_plans
from satnet.planning.splits import make_splits, save_splits
from satnet.preprocessing.case import preprocess_case
from satnet.preprocessing.ceiling import ceiling_line, ceiling_warning, resampling_ceiling
from satnet.preprocessing.sources import CaseSources, copy_reference_labels, hash_sources, remove_outdated_cases

log = logging.getLogger(__name__)
STAMP_FILE = "stamp.json"


def ensure_writable(work_dir: Path) -> None:
    """Fail before any work is done when WORK_DIR cannot be written; creates nothing."""
    check_writable_folder(work_dir, "work folder", "fix its permissions or choose another with -o")


def plan(raw_dir: Path, work_dir: Path, options: PlannerOptions, workers: int) -> tuple[RawDataset, Plans]:
    """Check the dataset, then write fingerprint.json, plans.json and splits.json.

    Everything that can fail (the checks, the fingerprint, the planner, the splits) runs before
    the first file is written, so a failed plan leaves WORK_DIR as it was.
    """
    check_work_dir_outside_raw(raw_dir, work_dir)
    dataset = check_dataset(raw_dir, workers=workers)  # raises with every problem before anything is written
    splits = make_splits([c.case_id for c in dataset.cases])
    ensure_writable(work_dir)
    fingerprint = compute_fingerprint(dataset, workers=workers)
    plans, warnings = plan_experiment(fingerprint, options)
    warnings += _add_resampling_ceilings(dataset, plans, workers)
    for w in warnings:
        log.warning("warning: %s", w)
    existing = _existing_plans(work_dir)
    merged = merge_plans(existing, plans)
    _refuse_replacing_trained(existing, merged, work_dir)
    if existing is not None and merged is plans and existing.configurations.keys() - plans.configurations.keys():
        log.warning("warning: %s/plans.json belonged to a dataset with other labels or channels; replaced",
                    work_dir)
    save_fingerprint(fingerprint, work_dir)
    save_plans(merged, work_dir)
    save_splits(splits, work_dir)
    return dataset, plans


def _add_resampling_ceilings(dataset: RawDataset, plans: Plans, workers: int) -> list[str]:
    """Set each configuration's resampling_ceiling (one computation per spacing), log it; the warnings."""
    warnings, done = [], {}
    for conf in plans.configurations.values():
        key = (tuple(conf.raw_spacing()), conf.network.spatial_dims)  # the axis order changes no Dice
        if key not in done:
            done[key] = resampling_ceiling(dataset.cases, conf, plans.labels, workers)
        conf.resampling_ceiling, cases = done[key]
        log.info("%s", ceiling_line(conf, conf.resampling_ceiling, cases))
        warning = ceiling_warning(conf, conf.resampling_ceiling)
        if warning:
            warnings.append(warning)
    return warnings


# What a configuration's training depends on; the rest of its plan (memory estimate, ceiling, median shape) informs.
TRAINED_WITH = ("spacing", "patch_size", "batch_size", "normalization", "network", "resampling", "axis_order")


def _refuse_replacing_trained(existing: Plans | None, merged: Plans, work_dir: Path) -> None:
    """Raise before anything is written when the new plans.json would drop or change what a configuration with
    trained folds (a checkpoint under results/<name>) was trained with: plans.json must keep describing them."""
    for name, old in (existing.configurations.items() if existing is not None else ()):
        results = WorkDir(work_dir).results_dir(name)
        if not any(results.glob("fold_*/checkpoint_*.pt")):
            continue
        new = merged.configurations.get(name)
        was, now = old.to_dict(), new.to_dict() if new is not None else {}
        changed = [key for key in TRAINED_WITH if was[key] != now.get(key)]
        if changed:
            what = "drop it" if new is None else f"change its {', '.join(changed)}"
            raise InputError(
                f"configuration {name!r} has trained folds in {results}, and this plan would {what} (other options "
                f"than it was planned with, another dataset, or a satnet whose planner or default skip changed): "
                f"plans.json must keep describing them; plan into another work folder (-o), or move {results} "
                f"away to plan {name!r} anew"
            )


def _existing_plans(work_dir: Path) -> Plans | None:
    """The plans already in WORK_DIR, or None (absent, or invalid: then they are replaced)."""
    if not WorkDir(work_dir).plans.is_file():
        return None
    try:
        return load_plans(work_dir)
    except SatnetError as exc:
        log.warning("warning: replacing unreadable %s (%s)", WorkDir(work_dir).plans, str(exc).splitlines()[0])
        return None


def _stamp(plan: ConfigurationPlan, plans: Plans) -> dict:
    """What determines the preprocessed arrays of a data folder."""
    stamp = {
        "spacing": plan.spacing, "normalization": plan.to_dict()["normalization"],
        "resampling": plan.to_dict()["resampling"], "labels": plans.labels, "channel_names": plans.channel_names,
    }
    return {**stamp, "axis_order": plan.axis_order} if plan.transposed else stamp  # older stamps have none


def _prepare_folder(folder: Path, stamp: dict) -> None:
    stamp_path = folder / STAMP_FILE
    # compared as data, so a change of JSON layout alone is no change
    if stamp_path.is_file() and read_json_or_none(stamp_path) != json.loads(dumps_json(stamp)):
        log.warning("plans changed since %s was preprocessed: removing its %s old case files", folder,
                    sum(1 for _ in folder.iterdir()))
        for p in folder.iterdir():
            if p.suffix in (".npy", ".json", ".tmp"):
                p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    remove_temporaries(folder)  # left by a killed run
    atomic_write_json(stamp_path, stamp)


def preprocess_one(item: tuple[RawCase, CaseSources], plan: ConfigurationPlan, labels: dict[str, int],
                   folder: Path) -> str:
    """Preprocess one case and save it with the record of its raw files (hashed before they were read)."""
    case, sources = item
    image, geometry = read_image(case.image_files)
    seg = read_label(case.label_file)[0] if case.label_file is not None else None
    data, seg_out, props = preprocess_case(image, geometry, seg, plan, case.case_id, labels)
    props.sources = list(sources.files)
    save_case(folder, props, data, seg_out)
    return case.case_id


def preprocess(dataset: RawDataset, plans: Plans, work_dir: Path, configs: Sequence[str], workers: int) -> None:
    """Preprocess every case for each configuration's data folder, skipping complete cases whose raw files
    are unchanged (satnet.preprocessing.sources), and copy the labels that changed into gt_segmentations."""
    sources = hash_sources(dataset, work_dir, workers)
    folders = {}
    for name in configs:
        conf = plans.configuration(name)
        folders.setdefault(conf.data_dir(work_dir), (name, conf))
    for folder, (_, conf) in folders.items():
        _prepare_folder(folder, _stamp(conf, plans))
        remove_outdated_cases(folder, dataset, sources)  # before the reference copies change: they are compared
    copy_reference_labels(sources, work_dir)
    for folder, (name, conf) in folders.items():
        todo = [(c, sources[c.case_id]) for c in dataset.cases if not is_complete(folder, c.case_id)]
        if len(todo) < len(dataset.cases):
            log.info("%s: %d of %d cases already preprocessed", folder, len(dataset.cases) - len(todo), len(dataset.cases))
        work = functools.partial(preprocess_one, plan=conf, labels=plans.labels, folder=folder)
        map_cases(work, todo, workers, f"preprocess {name}")


def check_planned_for(dataset_json: DatasetJson, plans: Plans, work_dir: Path) -> None:
    """Raise InputError, before anything is written, when WORK_DIR's plans.json was made for a dataset with
    other channels, labels or file ending than `dataset_json`."""
    raw, plans_file = dataset_json.path.parent, WorkDir(work_dir).plans
    compared = (  # (what, this dataset's, the plans', how the message shows it)
        ("channels", dataset_json.channel_names, plans.channel_names, lambda names: ", ".join(names.values())),
        ("labels", dataset_json.labels, plans.labels, lambda labels: ", ".join(f"{k}={v}" for k, v in labels.items())),
        ("file ending", dataset_json.file_ending, plans.file_ending, str),
    )
    differ = {what: (show(mine), show(theirs)) for what, mine, theirs, show in compared if mine != theirs}
    if differ:
        details = "; ".join(f"{k}: {raw} has {mine}, {plans_file} {theirs}" for k, (mine, theirs) in differ.items())
        raise InputError(
            f"{work_dir} was planned for another dataset ({'/'.join(differ)} differ: {details}); plan it again with "
            f"`{command('satnet', 'plan-and-preprocess', raw, '-o', work_dir)}`, or choose another -o"
        )


def preprocess_from_plans(raw_dir: Path, work_dir: Path, configs: Sequence[str] | None, workers: int) -> Plans:
    """`satnet preprocess`: preprocess with an existing WORK_DIR/plans.json, made for this dataset."""
    check_work_dir_outside_raw(raw_dir, work_dir)
    plans = load_plans(work_dir)
    check_planned_for(load_dataset_json(raw_dir), plans, work_dir)  # before the files are read or anything written
    dataset = check_dataset(raw_dir, workers=workers)
    preprocess(dataset, plans, work_dir, configs or list(plans.configurations), workers)
    return plans


def _skip_words(spec) -> str:
    """"sat", "sat with 4 maps", "sat with 2 maps, org, org (per level)"."""
    levels = [f"{s.mode} with {s.channels} maps" if s.channels > 1 else s.mode for s in spec.level_skips()]
    words = levels[0] if len(set(levels)) == 1 else ", ".join(levels) + " (per level, full resolution first)"
    unused = len(spec.skip_levels or ()) - len(levels)
    if unused > 0:  # the planner chose fewer stages than the per-level skips name
        words += (f" [{','.join(spec.skip_levels)} names {len(spec.skip_levels)} levels, this network has "
                  f"{len(levels)}: the last {unused} unused]")
    return words


def _axes_words(conf: ConfigurationPlan) -> str:
    """" (axes X, Z, Y: the coarse X first)" when the configuration reorders the scans' axes, else ""."""
    if not conf.transposed:
        return ""
    names = ", ".join("ZYX"[a] for a in conf.axis_order)
    return f" (axes {names}: the coarse {'ZYX'[conf.axis_order[0]]} first)"


def summary(plans: Plans) -> str:
    """A few lines per configuration: spacing, patch, batch, stages, memory against the budget."""
    lines = [f"plans for {plans.dataset_name} ({plans.planner.arch}, memory for {plans.planner.precision} training):"]
    for conf in plans.configurations.values():
        mem = conf.estimated_memory
        lines.append(
            f"  {conf.name}: skip {_skip_words(conf.network)}, spacing {'x'.join(f'{s:g}' for s in conf.spacing)} mm"
            f"{_axes_words(conf)}, patch "
            f"{'x'.join(map(str, conf.patch_size))}, batch {conf.batch_size}, {conf.network.num_stages} stages, "
            f"features {conf.network.features[0]}..{max(conf.network.features)}, estimated "
            f"{mem.total / GIB:.2f} of {conf.memory_budget_bytes / GIB:.2f} GiB "
            f"(activations {mem.activations / GIB:.2f} GiB)"
        )
    return "\n".join(lines)
