"""The skip-mode study (docs/results.md, "SAT without the accuracy cost"): train configurations x seeds at
one fixed budget per dataset, two runs side by side at one thread each, one JSON line per finished run.

    PYTHONPATH=. python benchmarks/study.py run hip:3d_org:1 hip:3d:1 isic:2d_org:1 ... [--parallel 2]
    PYTHONPATH=. python benchmarks/study.py list          # which rows benchmarks/results/study_runs.jsonl holds

A job is DATASET:CONFIG:SEED. DATASET names a work folder planned and preprocessed beforehand (STUDY_ROOT/<dataset>,
`--root`, default /work/study; the commands are in BUDGETS), CONFIG one of its plans.json configurations, SEED the
`--seed` of `satnet train` (weights and data). Each seed trains in its own folder STUDY_ROOT/<dataset>/seed_<s>,
whose plans, splits and preprocessed data are links to the dataset's, so every seed and variant sees the same
data and the same plans. Augmentation runs in the training process (`--workers 0`): a run is a function of its
seed, and one interrupted by a stop resumes exactly (`--resume`, chosen by itself when checkpoint_latest.pt is
there). A job whose row is already in the JSONL file is skipped, so rerunning the same command finishes a study.

Each row: the budget, wall seconds of training and final validation, seconds per iteration, the CPU, the load
average, Dice / FPR / FNR per label (mean, std over cases) and per case, the pseudo-Dice curve per epoch,
parameters, and the exact memory model's training activations and inference peak at the run's patch and batch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "study_runs.jsonl"
# The budget of every run of a dataset (5x the iterations of docs/results.md's tables 5 and 6), and how its work
# folder was made (`satnet plan ... --skip org` etc. add the other variants to the same plans.json).
BUDGETS = {
    "hip": {"epochs": 100, "iterations": 25, "batch_size": None, "val_iterations": 5,
            "made_by": "satnet plan-and-preprocess ../shared/data/Dataset004_Hippocampus -o STUDY_ROOT/hip --configs 3d"},
    "isic": {"epochs": 75, "iterations": 20, "batch_size": 12, "val_iterations": 5,
             "made_by": "satnet plan-and-preprocess ../shared/data/Dataset017_ISIC2017 -o STUDY_ROOT/isic "
                        "--configs 2d --spacing 2"},
}
# The pilot that picks k and the per-level mix: the budget of docs/results.md's tables 5 and 6, one seed, in the
# same work folders (its runs in <folder>/pilot_seed_<s>).
BUDGETS["hip_pilot"] = {**BUDGETS["hip"], "epochs": 20, "folder": "hip", "prefix": "pilot_seed_"}
BUDGETS["isic_pilot"] = {**BUDGETS["isic"], "epochs": 15, "folder": "isic", "prefix": "pilot_seed_"}
SHARED = ("plans.json", "splits.json", "fingerprint.json", "preprocessed", "gt_segmentations")
_write_lock = threading.Lock()


def seed_dir(root: Path, dataset: str, seed: int) -> Path:
    """STUDY_ROOT/<folder>/seed_<s> (pilot_seed_<s> for a pilot), its shared inputs linked to the work folder's."""
    base = work_folder(root, dataset)
    folder = base / f"{BUDGETS[dataset].get('prefix', 'seed_')}{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link = folder / name
        if (base / name).exists() and not link.exists():
            link.symlink_to(Path("..") / name)
    return folder


def work_folder(root: Path, dataset: str) -> Path:
    return root / BUDGETS[dataset].get("folder", dataset)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def done_jobs(path: Path = RUNS) -> set[tuple[str, str, int, int, int]]:
    if not path.is_file():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["config"], r["seed"], r["epochs"], r["iterations"]) for r in rows}


def _satnet(argv: list[str], log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        subprocess.run([sys.executable, "-m", "satnet.cli", *argv], check=True, env=env, stdout=out, stderr=out)
    return time.perf_counter() - start


def run_job(root: Path, job: str, runs: Path) -> dict | None:
    dataset, config, seed_text = job.split(":")
    seed, budget = int(seed_text), BUDGETS[dataset]
    if (dataset, config, seed, budget["epochs"], budget["iterations"]) in done_jobs(runs):
        print(f"{job}: in {runs.name} already", flush=True)
        return None
    work = seed_dir(root, dataset, seed)
    fold_dir = work / "results" / config / "fold_0"
    log = work_folder(root, dataset) / f"{dataset}_{config}_seed{seed}.log"
    flags = ["--epochs", str(budget["epochs"]), "--iterations-per-epoch", str(budget["iterations"]),
             "--val-iterations", str(budget["val_iterations"]), "--seed", str(seed), "--workers", "0",
             "--no-validation"]
    if budget["batch_size"]:
        flags += ["--batch-size", str(budget["batch_size"])]
    train_s = None
    if not (fold_dir / "checkpoint_final.pt").is_file():
        resume = ["--resume"] if (fold_dir / "checkpoint_latest.pt").is_file() else []
        print(f"{job}: training{' (resumed)' if resume else ''}; log {log}", flush=True)
        load_before = os.getloadavg()[0]
        train_s = _satnet(["train", str(work), config, "0", *flags, *resume], log)
    else:
        load_before = os.getloadavg()[0]
    valid_s = _satnet(["train", str(work), config, "0", "--validation-only", "-q"], log)
    row = describe(work, dataset, config, seed, budget, fold_dir)
    row.update(train_seconds=None if train_s is None else round(train_s, 1), validation_seconds=round(valid_s, 1),
               load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
               machine=f"{os.cpu_count()} cores, {cpu_model()}", threads=1, date=time.strftime("%Y-%m-%d %H:%M"))
    with _write_lock, runs.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{job}: done, Dice {row['dice_mean']}", flush=True)
    return row


def describe(work: Path, dataset: str, config: str, seed: int, budget: dict, fold_dir: Path) -> dict:
    """The row of a finished run, from its files (validation summary, training log, plans) and the memory model."""
    from satnet.nets import count_parameters
    from satnet.planning.memory import estimate_memory
    from satnet.planning.plans import load_plans

    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    log = json.loads((fold_dir / "training_log.json").read_text())
    plan = load_plans(work).configuration(config)
    batch = budget["batch_size"] or plan.batch_size
    est = estimate_memory(plan.network, plan.patch_size, batch, precision="fp32")
    seconds = [e["seconds"] for e in log["epochs"]]
    per_class = {label: {m: summary["per_class"][label][m]["mean"] for m in ("dice", "fpr", "fnr")}
                 | {"dice_std": summary["per_class"][label]["dice"]["std"]} for label in summary["per_class"]}
    return {
        "dataset": dataset, "config": config, "seed": seed, "epochs": budget["epochs"],
        "iterations": budget["iterations"], "batch_size": batch, "patch": plan.patch_size,
        "network": plan.network.to_dict(), "parameters": count_parameters(plan.network),
        "train_activation_mb": round(est.activations / 2**20, 1), "inference_peak_mb": round(est.inference / 2**20, 2),
        "seconds_per_iteration": round(sorted(seconds)[len(seconds) // 2] / budget["iterations"], 3),
        "per_class": per_class, "label_names": summary.get("label_names", {}),
        "dice_mean": round(sum(v["dice"] for v in per_class.values()) / len(per_class), 4),
        "case_dice": {c["case"]: {k: m["dice"] for k, m in c["metrics"].items()} for c in summary["per_case"]},
        "curve": [{"epoch": e["epoch"], "pseudo_dice": e["mean_dice"], "ema_dice": e["ema_dice"]} for e in log["epochs"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and validate DATASET:CONFIG:SEED jobs, --parallel at a time")
    r.add_argument("jobs", nargs="+")
    r.add_argument("--parallel", type=int, default=2)
    r.add_argument("--root", type=Path, default=Path("/work/study"))
    r.add_argument("--runs", type=Path, default=RUNS)
    r.add_argument("--epochs", type=int, help="override the dataset's budget (a smoke test; the row records it)")
    r.add_argument("--iterations", type=int, help="override the dataset's iterations per epoch (as --epochs)")
    ls = sub.add_parser("list", help="the rows of the runs file")
    ls.add_argument("--runs", type=Path, default=RUNS)
    args = parser.parse_args()
    if args.command == "list":
        for row in sorted(done_jobs(args.runs)):
            print(":".join(map(str, row)))
        return
    for job in args.jobs:
        dataset = job.split(":")[0]
        if job.count(":") != 2 or dataset not in BUDGETS or not (work_folder(args.root, dataset) / "plans.json").is_file():
            parser.error(f"job {job!r}: expected DATASET:CONFIG:SEED with DATASET one of {', '.join(BUDGETS)} and "
                         f"a planned work folder under {args.root} (made by: {BUDGETS.get(dataset, {}).get('made_by')})")
    for budget in BUDGETS.values():
        budget.update({k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v})
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        for future in [pool.submit(run_job, args.root, job, args.runs) for job in args.jobs]:
            try:
                future.result()
            except subprocess.CalledProcessError as exc:
                print(f"failed: {exc}", flush=True)


if __name__ == "__main__":
    main()
