"""The skip-mode study (docs/results.md, "SAT without the accuracy cost"): train configurations x seeds at
one fixed budget per dataset, two runs side by side at one thread each, one JSON line per finished run.

    PYTHONPATH=. python benchmarks/study.py run hip:3d_org:1 hip:3d:1 isic:2d_org:1 ... [--parallel 2]
    PYTHONPATH=. python benchmarks/study.py list          # which rows benchmarks/results/study_runs.jsonl holds
    PYTHONPATH=. python benchmarks/study.py speed hip isic  # s / it of every configuration, side by side
    PYTHONPATH=. python benchmarks/study.py table --datasets hip isic --name study

A job is DATASET:CONFIG:SEED. DATASET names a work folder planned and preprocessed beforehand (STUDY_ROOT/<dataset>,
`--root`, default ../study beside the repository; the commands are in BUDGETS), CONFIG one of its plans.json configurations, SEED the
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
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
# satnet from this checkout, as the training subprocesses (PYTHONPATH=ROOT): an installed or editable satnet
# elsewhere may be reinstalled while a study runs (a CI check in a clone re-points an editable install), and the
# first run of hip:3d_org:1 lost its row to an import in the middle of such a reinstall.
sys.path.insert(0, str(ROOT))

from perf_common import cpu_isa, cpu_model  # noqa: E402
from study_table import (  # noqa: E402,F401 (the table's functions, re-exported for the tests and callers)
    RUNS, SPEED, SEEDS, TOLERANCE, aggregate, choose_default, load_rows, load_speed, markdown, paired_to_org,
    write_table,
)
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
# The SAT paper's recipe (Adadelta: lr 1, rho 0.95, constant lr, Glorot init; `satnet train --optimizer adadelta`
# implies the rest) at the full ISIC budget, in the same work folder (its runs in isic/adadelta_seed_<s>).
# DI2IN (issue 19) at the Hippocampus budget, in a work folder of its own (the same data, splits and spacing;
# plans.json holds the DI2IN configurations `3d` (SAT) and `3d_org`).
BUDGETS["hip_di2in"] = {**BUDGETS["hip"], "made_by": "satnet plan-and-preprocess ../shared/data/Dataset004_Hippocampus "
                        "-o STUDY_ROOT/hip_di2in --configs 3d --arch di2in, then satnet plan ... --arch di2in --skip org"}
BUDGETS["isic_adadelta"] = {**BUDGETS["isic"], "folder": "isic", "prefix": "adadelta_seed_",
                            "train_flags": ["--optimizer", "adadelta"]}
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


def machine() -> str:
    """"2 cores, AMD EPYC (no AVX512)": the model name alone does not tell an AVX2 EPYC from an AVX-512 one, whose
    training steps differ in time by about 2x (docs/results.md, section 9)."""
    return f"{os.cpu_count()} cores, {cpu_model()} ({cpu_isa()})"


def work_folder(root: Path, dataset: str) -> Path:
    return root / BUDGETS[dataset].get("folder", dataset)


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
    flags += budget.get("train_flags", [])
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
               machine=machine(), threads=1, date=time.strftime("%Y-%m-%d %H:%M"))
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
        "train_flags": budget.get("train_flags", []),
        "network": plan.network.to_dict(), "parameters": count_parameters(plan.network),
        "train_activation_mb": round(est.activations / 2**20, 1), "inference_peak_mb": round(est.inference / 2**20, 2),
        "seconds_per_iteration": round(sorted(seconds)[len(seconds) // 2] / budget["iterations"], 3),
        "per_class": per_class, "label_names": summary.get("label_names", {}),
        "dice_mean": round(sum(v["dice"] for v in per_class.values()) / len(per_class), 4),
        "case_dice": {c["case"]: {k: m["dice"] for k, m in c["metrics"].items()} for c in summary["per_case"]},
        "curve": [{"epoch": e["epoch"], "pseudo_dice": e["mean_dice"], "ema_dice": e["ema_dice"]} for e in log["epochs"]],
    }


# ---------------------------------------------------------------------------------------------
# Seconds per iteration, measured side by side



def measure_speed(root: Path, dataset: str, configs: list[str], rounds: int) -> dict[str, dict]:
    """Median seconds of one training step per configuration, at the study's patch and batch, one thread.

    The runs' own wall time per iteration depends on what else shared the machine while each ran, so the
    table's s / it comes from here instead: every configuration's network in one process, one step of each in
    turn (after a warm-up round), on a random batch already in memory, so the load falls on all alike. A step
    is satnet's own (satnet.training.loop.train_step: forward, Dice + CE with deep supervision, backward,
    clipping, SGD with nnU-Net's momentum); data loading and augmentation (the same for every variant) are
    left out.
    """
    import statistics

    import torch

    from satnet.nets import build_network
    from satnet.planning.plans import load_plans
    from satnet.training.loop import Precision, train_step
    from satnet.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights

    torch.set_num_threads(1)
    plans, budget = load_plans(work_folder(root, dataset)), BUDGETS[dataset]
    generator = torch.Generator().manual_seed(0)
    precision = Precision(torch.device("cpu"), None, None, torch.contiguous_format)
    steps = {}
    for config in configs:
        plan = plans.configuration(config)
        batch = budget["batch_size"] or plan.batch_size
        torch.manual_seed(0)
        model = build_network(plan.network)
        data = torch.randn(batch, plan.network.in_channels, *plan.patch_size, generator=generator)
        with torch.no_grad():
            outputs = model(data)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        target = [torch.randint(0, plan.network.num_classes, (batch, 1, *o.shape[2:]), generator=generator)
                  for o in outputs]
        loss = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(len(outputs)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        steps[config] = (model, {"data": data, "target": target}, loss, optimizer)
    times: dict[str, list[float]] = {c: [] for c in configs}
    load = os.getloadavg()[0]
    for repeat in range(rounds + 1):  # round 0 warms up oneDNN's kernels and the allocator
        for config, (model, batch, loss, optimizer) in steps.items():
            start = time.perf_counter()
            train_step(model, batch, loss, optimizer, precision, grad_clip=12.0)
            if repeat:
                times[config].append(time.perf_counter() - start)
    return {config: {"seconds_per_iteration": round(statistics.median(t), 3), "rounds": rounds,
                     "batch_size": steps[config][1]["data"].shape[0], "load_before": round(load, 2),
                     "load_after": round(os.getloadavg()[0], 2), "threads": 1,
                     "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
            for config, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and validate DATASET:CONFIG:SEED jobs, --parallel at a time")
    r.add_argument("jobs", nargs="+")
    r.add_argument("--parallel", type=int, default=2)
    r.add_argument("--root", type=Path, default=ROOT.parent / "study",
                   help="STUDY_ROOT, the folder of the planned work folders (default ../study beside the repository)")
    r.add_argument("--runs", type=Path, default=RUNS)
    r.add_argument("--epochs", type=int, help="override the dataset's budget (a smoke test; the row records it)")
    r.add_argument("--iterations", type=int, help="override the dataset's iterations per epoch (as --epochs)")
    ls = sub.add_parser("list", help="the rows of the runs file")
    ls.add_argument("--runs", type=Path, default=RUNS)
    tb = sub.add_parser("table", help="aggregate the rows: docs/results_<name>.md, its JSON and curves")
    tb.add_argument("--runs", type=Path, default=RUNS)
    tb.add_argument("--name", default="study")
    tb.add_argument("--datasets", nargs="+", help="only these datasets (e.g. hip_pilot)")
    sp = sub.add_parser("speed", help=f"seconds per training step of each configuration, side by side "
                                      f"(into {SPEED.relative_to(ROOT)}, which `table` reads)")
    sp.add_argument("datasets", nargs="+", help="datasets of the study (their configurations with rows in --runs)")
    sp.add_argument("--root", type=Path, default=ROOT.parent / "study")
    sp.add_argument("--runs", type=Path, default=RUNS)
    sp.add_argument("--rounds", type=int, default=10, help="measured steps per configuration (default 10)")
    sp.add_argument("--configs", nargs="+", help="these configurations of every dataset named (default: those with rows)")
    args = parser.parse_args()
    if args.command == "speed":
        results = load_speed()
        for dataset in args.datasets:
            configs = args.configs or list(dict.fromkeys(r["config"] for r in load_rows(args.runs)
                                                         if r["dataset"] == dataset))
            results[dataset] = measure_speed(args.root, dataset, configs, args.rounds)
            print(dataset, json.dumps({c: v["seconds_per_iteration"] for c, v in results[dataset].items()}))
        tmp = SPEED.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(SPEED)
        return
    if args.command == "table":
        rows = [r for r in load_rows(args.runs) if not args.datasets or r["dataset"] in args.datasets]
        table = write_table(rows, args.name)
        print("\n".join(markdown(table)))
        print(choose_default(table))
        return
    if args.command == "list":
        for row in sorted(done_jobs(args.runs)):
            print(":".join(map(str, row)))
        return
    for job in args.jobs:
        dataset = job.split(":")[0]
        planned = dataset in BUDGETS and (work_folder(args.root, dataset) / "plans.json").is_file()
        if job.count(":") != 2 or not job.rsplit(":", 1)[1].isdigit() or not planned:
            parser.error(f"job {job!r}: expected DATASET:CONFIG:SEED (SEED a whole number) with DATASET one of "
                         f"{', '.join(BUDGETS)} and a planned work folder under {args.root} "
                         f"(made by: {BUDGETS.get(dataset, {}).get('made_by')})")
    for budget in BUDGETS.values():
        budget.update({k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v})
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    for job in args.jobs:  # before the pool: two jobs of one seed linking the same folder at once collide
        dataset, _, seed = job.split(":")
        seed_dir(args.root, dataset, int(seed))
    with ThreadPoolExecutor(args.parallel) as pool:
        for future in [pool.submit(_run_reported, args.root, job, args.runs) for job in args.jobs]:
            future.result()


def _run_reported(root: Path, job: str, runs: Path) -> dict | None:
    """run_job, with any failure printed when it happens (the queue goes on with the next job)."""
    try:
        return run_job(root, job, runs)
    except Exception:
        import traceback

        print(f"{job}: failed:\n{traceback.format_exc()}", flush=True)
        return None


if __name__ == "__main__":
    main()
