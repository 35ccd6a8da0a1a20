"""`satnet demo` with every epoch (no time budget), planned with the current default skip or with SAT at every level.

    OMP_NUM_THREADS=1 python benchmarks/bench_demo_skips.py sat-org /tmp/demo_default &
    OMP_NUM_THREADS=1 python benchmarks/bench_demo_skips.py sat /tmp/demo_sat

`sat` plans as satnet did before 2026-12-08 (DEFAULT_SKIP at every level); `sat-org` is today's default. Prints the
held-out Dice per label and the wall seconds. The demo's data, split and seed are fixed, so the two runs differ
only in their skips. Results: docs/results.md, section 9.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import satnet.planning.plans as plans_module
from satnet.cli import main
from satnet.demo import DemoSettings, run_demo


def run(skip: str, out: Path) -> dict:
    if skip == "sat":
        plans_module.DEFAULT_SKIP_LEVELS = None  # the planner's default before the skip study: SAT at every level
    started = time.time()
    code = run_demo(out, main, DemoSettings(time_budget_minutes=None))
    if code:
        raise SystemExit(f"the demo failed (exit code {code}); see its output above")
    summary = json.loads((out / "summary.json").read_text())
    network = json.loads((out / "work" / "plans.json").read_text())["configurations"]["3d"]["network"]
    return {"skip": skip, "skip_levels": network.get("skip_levels"), "seconds": round(time.time() - started),
            "dice": {k: round(v["dice"]["mean"], 3) for k, v in summary["per_class"].items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("skip", choices=["sat-org", "sat"])
    parser.add_argument("out", type=Path, help="a new folder for the demo's files")
    args = parser.parse_args()
    print(json.dumps(run(args.skip, args.out)))
