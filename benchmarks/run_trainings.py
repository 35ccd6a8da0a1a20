"""Train several configurations of one work folder at one equal budget, one after another.

Each run is `satnet train WORK_DIR CONFIG FOLD` with the same epochs x iterations x batch and
the same seed (so every configuration sees the same sequence of patches), followed by its final
validation. Wall-clock seconds of training and validation, and the load average, are appended
to a JSON lines file, one object per run. Finished runs (checkpoint_final.pt and
validation/summary.json present) are skipped, so the script can be rerun after an interruption;
an interrupted run resumes with --resume.

    PYTHONPATH=. python benchmarks/run_trainings.py WORK_DIR CONFIG [CONFIG ...] --fold 0 \\
        --epochs 15 --iterations 20 --batch-size 12 --log benchmarks/results/isic_runs.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "satnet.cli", *argv], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--fold", default="0")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `satnet train` flags")
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    for config in args.configs:
        fold_dir = args.work_dir / "results" / config / f"fold_{args.fold}"
        if (fold_dir / "checkpoint_final.pt").is_file() and (fold_dir / "validation" / "summary.json").is_file():
            print(f"{config}: done already", flush=True)
            continue
        flags = ["--epochs", str(args.epochs), "--iterations-per-epoch", str(args.iterations), "--val-iterations",
                 str(args.val_iterations), "--seed", str(args.seed), "--workers", str(args.workers), "--no-validation",
                 "-q", *args.extra]
        if args.batch_size:
            flags += ["--batch-size", str(args.batch_size)]
        resume = ["--resume"] if (fold_dir / "checkpoint_latest.pt").is_file() else []
        load_before = os.getloadavg()[0]
        train_s = run(["train", str(args.work_dir), config, args.fold, *flags, *resume])
        valid_s = run(["train", str(args.work_dir), config, args.fold, "--validation-only", "-q"])
        record = {
            "config": config, "fold": args.fold, "epochs": args.epochs, "iterations": args.iterations,
            "batch_size": args.batch_size, "seed": args.seed, "workers": args.workers, "extra": args.extra,
            "resumed": bool(resume), "train_seconds": round(train_s, 1), "validation_seconds": round(valid_s, 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        with args.log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
