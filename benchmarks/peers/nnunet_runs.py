"""The nnU-Net v2 runs of the peer benchmarks, one function each, each returning a JSON-ready dict.

Every function runs nnU-Net's own console commands from its venv (`NnunetSite`), measured by
`measure.run_measured` (wall seconds, peak memory of the process tree), and adds what nnU-Net's
files say (plans, the trainers' JSON). Logs go to SCRATCH/runs/logs/. The command line is
run_nnunet.py; docs/peers.md explains the protocol and gives the exact commands.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import time
from pathlib import Path
from typing import Sequence

from measure import RunResult, run_measured
from nnunet_env import (NnunetSite, PeerSetupError, nnunet_default_folds, same_folds, satnet_folds)

BUDGET_TRAINER = "nnUNetTrainer_satnetBudget"
TIMING_TRAINER = "nnUNetTrainer_satnetTiming"


def _context(kind: str, site: NnunetSite) -> dict:
    """Fields every result starts with: what was run, when, and how busy the machine was."""
    return {"kind": kind, "tool": "nnunetv2", "nnunet_version": _nnunet_version(site),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_count": os.cpu_count(),
            "load_avg_1min_before": round(os.getloadavg()[0], 2)}


def _nnunet_version(site: NnunetSite) -> str | None:
    found = sorted((site.venv / "lib").glob("python3*/site-packages/nnunetv2-*.dist-info"))
    return found[-1].name.removesuffix(".dist-info").split("-")[1] if found else None


def _run(site: NnunetSite, name: str, command: Sequence, env_extra: dict[str, str] | None = None) -> RunResult:
    """Run an nnU-Net command measured; a failure raises with the log's last lines and its path."""
    logs = site.runs / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}.log"
    result = run_measured(command, env=site.env(env_extra), log_path=log)
    if result.returncode != 0:
        tail = "\n".join(line for _, line in result.lines[-25:])
        raise RuntimeError(f"{shlex.join(result.command)} exited with {result.returncode}; "
                           f"last lines:\n{tail}\nfull log: {log}")
    return result


def _measured(result: RunResult) -> dict:
    out = result.summary()
    out["command"] = shlex.join(out["command"])
    out["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    return out


# ---------------------------------------------------------------------------------------------
# plan and preprocess


def time_plan_and_preprocess(site: NnunetSite, dataset_id: int, configs: Sequence[str] = ("3d_fullres", "2d"),
                             num_processes: int = 2, num_processes_fingerprint: int = 2) -> dict:
    """Time `nnUNetv2_plan_and_preprocess -d ID -c CONFIGS -np N -npfp N` from scratch.

    The dataset's preprocessed folder is deleted first (so the fingerprint is extracted again);
    an existing splits_final.json is kept. Phases are timed from the lines nnU-Net prints.
    """
    record = _context("plan_and_preprocess", site)
    name = site.dataset_name(dataset_id)
    target = site.preprocessed / name
    splits = site.splits_file(dataset_id)
    kept_splits = splits.read_text() if splits.is_file() else None
    shutil.rmtree(target, ignore_errors=True)
    command = [site.tool("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", *configs,
               "-np", num_processes, "-npfp", num_processes_fingerprint, "--no_pbar"]
    result = _run(site, f"{name}_plan", command)
    if kept_splits is not None:
        splits.write_text(kept_splits)
    record.update(dataset=name, configs=list(configs), np=num_processes, npfp=num_processes_fingerprint,
                  **_measured(result), phases_s=_plan_phases(result, configs),
                  plans=_plans_summary(site.plans_file(dataset_id), configs),
                  preprocessed_mib=round(sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 2**20, 1))
    return record


def _plan_phases(result: RunResult, configs: Sequence[str]) -> dict[str, float]:
    """Seconds per phase, from the line nnU-Net prints at its start to the next phase's (or the end).

    "startup" is the time to the first phase (Python and torch imports); "preprocessing" is all
    configurations together, each configuration also on its own.
    """
    marks = [("fingerprint", "Fingerprint extraction..."), ("planning", "Experiment planning..."),
             ("preprocessing", "Preprocessing...")] + [(c, f"Configuration: {c}...") for c in configs]
    # Sorted by time only: lines printed in the same millisecond keep the order nnU-Net prints them in.
    found = sorted(((t, key) for key, text in marks if (t := result.first_time(text)) is not None),
                   key=lambda mark: mark[0])
    ends = [t for t, _ in found[1:]] + [result.wall_s]
    phases = {"startup": found[0][0]} if found else {}
    phases.update({key: round(end - t, 2) for (t, key), end in zip(found, ends)})
    if "preprocessing" in phases:
        phases["preprocessing"] = round(result.wall_s - result.first_time("Preprocessing..."), 2)
    return phases


def _plans_summary(plans_file: Path, configs: Sequence[str]) -> dict:
    """Spacing, patch, batch and network width of each configuration nnU-Net planned."""
    plans = json.loads(plans_file.read_text())["configurations"]
    out = {}
    for c in configs:
        if c not in plans:
            out[c] = None  # nnU-Net skips configurations a dataset does not get (3d_lowres, ...)
            continue
        p, arch = plans[c], plans[c]["architecture"]["arch_kwargs"]
        out[c] = {"spacing": p["spacing"], "patch_size": p["patch_size"], "batch_size": p["batch_size"],
                  "features_per_stage": arch.get("features_per_stage"), "n_stages": arch.get("n_stages")}
    return out


# ---------------------------------------------------------------------------------------------
# splits


def write_splits(site: NnunetSite, dataset_id: int, satnet_splits: Path | None = None) -> dict:
    """Write nnU-Net's splits_final.json from satnet's splits (its default KFold when None).

    Checks and reports whether the folds equal satnet's default KFold(5, shuffle=True,
    random_state=12345) over the sorted case ids, and nnU-Net's own default split.
    """
    record = _context("splits", site)
    case_ids = site.case_ids(dataset_id)
    folds, satnet_default = satnet_folds(satnet_splits, case_ids)
    nnunet_default = nnunet_default_folds(site, case_ids)
    path = site.splits_file(dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(folds, indent=2))
    record.update(dataset=site.dataset_name(dataset_id), splits_file=str(path),
                  satnet_splits=str(satnet_splits) if satnet_splits else "satnet make_splits (default)",
                  num_cases=len(case_ids), num_folds=len(folds),
                  fold_sizes=[[len(f["train"]), len(f["val"])] for f in folds],
                  equals_satnet_default_kfold=satnet_default,
                  equals_nnunet_default_split=same_folds(folds, nnunet_default),
                  fold0_val=sorted(folds[0]["val"]))
    return record


def fold_cases(site: NnunetSite, dataset_id: int, fold: int) -> dict[str, list[str]]:
    """{"train": [...], "val": [...]} of `fold` in splits_final.json."""
    path = site.splits_file(dataset_id)
    if not path.is_file():
        raise PeerSetupError(f"{path} not found: run `run_nnunet.py splits {dataset_id}` after `plan` first")
    folds = json.loads(path.read_text())
    if not 0 <= fold < len(folds):
        raise PeerSetupError(f"fold must be 0..{len(folds) - 1} ({path}), not {fold}")
    return folds[fold]


def _check_preprocessed(site: NnunetSite, dataset_id: int, config: str) -> None:
    plans = site.plans_file(dataset_id)
    if not plans.is_file() or config not in json.loads(plans.read_text())["configurations"]:
        raise PeerSetupError(f"no nnU-Net plan for {config} in {plans}: run "
                             f"`run_nnunet.py plan {dataset_id} --configs {config}` first")
    fold_cases(site, dataset_id, 0)


# ---------------------------------------------------------------------------------------------
# training


def _train_command(site: NnunetSite, dataset_id: int, config: str, fold: int, trainer: str) -> list:
    return [site.tool("nnUNetv2_train"), dataset_id, config, fold, "-tr", trainer, "-device", "cpu"]


def _machine_env(da_workers: int | None, threads: int | None) -> dict[str, str]:
    """Data augmentation processes (nnU-Net's default: min(12, cores)) and torch threads (default: cores)."""
    env = {} if da_workers is None else {"nnUNet_n_proc_DA": str(da_workers)}
    return env | ({} if threads is None else {"NNUNET_TORCH_THREADS": str(threads)})


def time_iterations(site: NnunetSite, dataset_id: int, config: str, iterations: int = 10, warmup: int = 3,
                    fold: int = 0, da_workers: int | None = None, threads: int | None = None) -> dict:
    """Seconds per training iteration at nnU-Net's plan: median over `iterations` after `warmup`."""
    _check_preprocessed(site, dataset_id, config)
    record = _context("iteration_time", site)
    fold_dir = site.fold_dir(dataset_id, TIMING_TRAINER, config, fold)
    shutil.rmtree(fold_dir, ignore_errors=True)
    env = {"NNUNET_TIMING_ITERS": str(iterations), "NNUNET_TIMING_WARMUP": str(warmup)}
    env |= _machine_env(da_workers, threads)
    result = _run(site, f"{site.dataset_name(dataset_id)}_{config}_itertime",
                  _train_command(site, dataset_id, config, fold, TIMING_TRAINER), env)
    record.update(dataset=site.dataset_name(dataset_id), **json.loads(
        (fold_dir / "peers_iteration_timing.json").read_text()), **_measured(result))
    return record


def train_with_budget(site: NnunetSite, dataset_id: int, config: str, fold: int = 0,
                      budget_min: float | None = None, epochs: int | None = None, iterations: int | None = None,
                      val_iterations: int | None = None, da_workers: int | None = None,
                      threads: int | None = None) -> dict:
    """Train fold `fold` with nnU-Net's recipe for `epochs` x `iterations`, stopped by `budget_min`.

    A previous run of this trainer, configuration and fold is deleted first. Unset numbers keep
    the trainer's defaults (1000 epochs x 250 iterations, 50 validation iterations, no budget).
    """
    _check_preprocessed(site, dataset_id, config)
    record = _context("train", site)
    fold_dir = site.fold_dir(dataset_id, BUDGET_TRAINER, config, fold)
    shutil.rmtree(fold_dir, ignore_errors=True)
    settings = {"NNUNET_BUDGET_MIN": budget_min, "NNUNET_EPOCHS": epochs, "NNUNET_ITERS": iterations,
                "NNUNET_VAL_ITERS": val_iterations}
    env = {k: str(v) for k, v in settings.items() if v is not None} | _machine_env(da_workers, threads)
    result = _run(site, f"{site.dataset_name(dataset_id)}_{config}_fold{fold}_train",
                  _train_command(site, dataset_id, config, fold, BUDGET_TRAINER), env)
    record.update(dataset=site.dataset_name(dataset_id), **json.loads(
        (fold_dir / "peers_training.json").read_text()), **_measured(result),
        fold_dir=str(fold_dir), checkpoint=str(fold_dir / "checkpoint_final.pth"))
    return record


# ---------------------------------------------------------------------------------------------
# prediction


def time_prediction(site: NnunetSite, dataset_id: int, config: str, fold: int = 0, trainer: str = BUDGET_TRAINER,
                    num_cases: int | None = None, tta_modes: Sequence[bool] = (True, False),
                    npp: int = 3, nps: int = 3, checkpoint: str = "checkpoint_final.pth") -> dict:
    """Predict the fold's first `num_cases` validation cases (sorted; all when None) with and
    without mirroring TTA, time each run, and score it with nnU-Net's evaluation.

    Per run: wall seconds for the whole `nnUNetv2_predict` (and per case), the start-up until
    the first case reaches the network, and each case's network seconds (nnU-Net's "Predicting"
    to "done with" lines). npp/nps: nnU-Net's preprocessing and export processes (its defaults).
    """
    record = _context("predict", site)
    name = site.dataset_name(dataset_id)
    cases = sorted(fold_cases(site, dataset_id, fold)["val"])[:num_cases]
    run_dir = site.runs / name / f"predict_{trainer}_{config}_fold{fold}"
    inputs = _link_inputs(site, dataset_id, cases, run_dir / "input")
    runs = []
    for tta in tta_modes:
        out = run_dir / ("pred_tta" if tta else "pred_no_tta")
        shutil.rmtree(out, ignore_errors=True)
        command = [site.tool("nnUNetv2_predict"), "-i", inputs, "-o", out, "-d", dataset_id, "-c", config,
                   "-f", fold, "-tr", trainer, "-chk", checkpoint, "-device", "cpu", "-npp", npp, "-nps", nps,
                   "--disable_progress_bar"] + ([] if tta else ["--disable_tta"])
        result = _run(site, f"{name}_{config}_fold{fold}_predict_{'tta' if tta else 'notta'}", command)
        runs.append({"tta": tta, "prediction_dir": str(out), **_prediction_times(result, len(cases)),
                     **_measured(result), **_evaluate(site, dataset_id, out)})
    record.update(dataset=name, config=config, fold=fold, trainer=trainer, checkpoint=checkpoint, cases=cases,
                  npp=npp, nps=nps, runs=runs)
    return record


def _link_inputs(site: NnunetSite, dataset_id: int, cases: Sequence[str], folder: Path) -> Path:
    """A fresh folder of symlinks to the cases' channel files (nnUNetv2_predict reads a folder)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for case in cases:
        files = site.image_files(dataset_id, case)
        if not files:
            raise PeerSetupError(f"no image files for case {case} in {site.raw / site.dataset_name(dataset_id)}")
        for f in files:
            (folder / f.name).symlink_to(f)
    return folder


def _prediction_times(result: RunResult, num_cases: int) -> dict:
    starts, ends = result.times("Predicting "), result.times("done with ")
    if len(starts) != num_cases or len(ends) != num_cases:
        raise RuntimeError(f"expected {num_cases} 'Predicting'/'done with' lines from nnUNetv2_predict, found "
                           f"{len(starts)}/{len(ends)}; see {result.log_path}")
    network = [round(e - s, 3) for s, e in zip(starts, ends)]
    return {"num_cases": num_cases, "s_per_case": round(result.wall_s / num_cases, 3),
            "startup_s": round(starts[0], 3), "network_s_per_case": network,
            "median_network_s_per_case": round(statistics.median(network), 3),
            "after_last_case_s": round(result.wall_s - ends[-1], 3)}


def _evaluate(site: NnunetSite, dataset_id: int, prediction_dir: Path) -> dict:
    """nnU-Net's own Dice (nnUNetv2_evaluate_folder) of the predicted cases only (--chill)."""
    raw = site.raw / site.dataset_name(dataset_id)
    summary_file = prediction_dir / "nnunet_summary.json"  # satnet evaluate writes summary.json
    _run(site, f"{site.dataset_name(dataset_id)}_evaluate",
         [site.tool("nnUNetv2_evaluate_folder"), "-djfile", raw / "dataset.json", "-pfile",
          site.plans_file(dataset_id), "-o", summary_file, "-np", 1, "--chill", raw / "labelsTr", prediction_dir])
    summary = json.loads(summary_file.read_text())
    return {"dice_foreground_mean": round(summary["foreground_mean"]["Dice"], 4),
            "dice_per_class": {k: round(v["Dice"], 4) for k, v in summary["mean"].items()},
            "nnunet_summary": str(summary_file),
            "satnet_evaluate": f"satnet evaluate {raw / 'labelsTr'} {prediction_dir}"}
