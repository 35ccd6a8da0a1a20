"""Seconds per training iteration, satnet beside nnU-Net v2, at the same network, patch and batch.

    python benchmarks/bench_train_vs_nnunet.py WORK_DIR                       # ~15 min on 2 shared cores
    python benchmarks/bench_train_vs_nnunet.py WORK_DIR --rounds 1 --iters 3  # ~6 min
    python benchmarks/bench_train_vs_nnunet.py WORK_DIR --variants 3d_org:fp32 3d_org:fp32:workers=0

WORK_DIR is satnet's work folder of Hippocampus planned like nnU-Net (`satnet plan-and-preprocess
../shared/data/Dataset004_Hippocampus --spacing auto --configs 3d` and again with `--skip org`):
configuration `3d_org` is nnU-Net's 3d_fullres network exactly (4 stages 32-64-128-256, plain
concatenated skips, instance norm, LeakyReLU, deep supervision; patch 40x56x40, batch 7); `3d` is
the same with satnet's default SAT skips. nnU-Net must be set up and preprocessed
(benchmarks/peers, docs/peers.md).

One iteration is timed as nnU-Net's timing trainer does it (benchmarks/peers/nnunet_trainers.py):
the wait for the next augmented batch plus the training step (forward, Dice + CE with deep
supervision, backward, gradient clipping at 12, SGD with Nesterov momentum). satnet runs its real
pieces in this process: `get_training_pipeline` (augmentation in background workers), the
network of the plan in the layout training uses, `train_step`. Each *round* runs nnU-Net
(`nnUNetv2_train` with the timing trainer, a fresh process) and then every satnet variant, each
`--warmup` untimed plus `--iters` timed iterations; the machine is shared, so the ratio of each
round's medians is the number to read. Results: benchmarks/results/train_vs_nnunet_*.json and the
table in docs/performance.md.

A variant is CONFIG:PRECISION[:key=value...] with keys
  workers=N  augmentation processes (default: the trainer's, cores - 2, at least 1; 0: in this process)
  threads=N  torch threads (default: torch's, one per core, as nnUNetv2_train sets)
  layers=torch  satnet before this benchmark's changes: torch's own InstanceNorm3d and Conv3d, contiguous
  compile=1  torch.compile (inductor) around the network; its first iteration is reported separately
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.perf_common import (  # noqa: E402
    fmt, import_peers, load_average, machine, machine_line, median, publish,
)
from satnet.nets import build_network  # noqa: E402
from satnet.nets import layers  # noqa: E402
from satnet.planning.plans import load_plans  # noqa: E402
from satnet.planning.splits import fold_cases, load_splits  # noqa: E402
from satnet.training.loop import count_outputs, make_precision, train_step  # noqa: E402
from satnet.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights  # noqa: E402
from satnet.training.options import TrainOptions, resolve_options  # noqa: E402
from satnet.training.pipeline import get_training_pipeline  # noqa: E402
from satnet.training.trainer import make_optimizer  # noqa: E402

DEFAULT_VARIANTS = ["3d_org:fp32", "3d_org:bf16", "3d:fp32", "3d_org:fp32:layers=torch"]
TORCH_LAYERS = {layers.Conv3d: nn.Conv3d, layers.Conv2d: nn.Conv2d,
                layers.InstanceNorm3d: nn.InstanceNorm3d, layers.InstanceNorm2d: nn.InstanceNorm2d}


@dataclass
class Variant:
    """One satnet setting: configuration, precision and the optional keys of the module docstring."""

    name: str
    config: str
    precision: str
    workers: int | None = None
    threads: int | None = None
    torch_layers: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, text: str) -> "Variant":
        config, precision, *rest = text.split(":")
        keys = dict(item.split("=", 1) for item in rest)
        unknown = set(keys) - {"workers", "threads", "layers", "compile"}
        if unknown or precision not in ("fp32", "bf16") or keys.get("layers", "torch") != "torch":
            raise SystemExit(f"variant {text!r}: expected CONFIG:fp32|bf16[:workers=N][:threads=N][:layers=torch]"
                             f"[:compile=1]")
        return cls(text, config, precision, int(keys["workers"]) if "workers" in keys else None,
                   int(keys["threads"]) if "threads" in keys else None, "layers" in keys,
                   keys.get("compile") == "1")


@dataclass
class Timing:
    """Per timed iteration: total, data wait and step seconds; plus what the run used."""

    total: list[float] = field(default_factory=list)
    data: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    first_iteration_s: float | None = None
    setup: dict = field(default_factory=dict)


def torch_layer_network(network: nn.Module) -> nn.Module:
    """The same network with torch's own Conv3d / InstanceNorm3d (satnet's layers add no state)."""
    for module in network.modules():
        if type(module) in TORCH_LAYERS:
            module.__class__ = TORCH_LAYERS[type(module)]
    return network


def time_satnet(work_dir: Path, v: Variant, iterations: int, warmup: int, fold: int = 0) -> Timing:
    """`warmup` + `iterations` satnet training iterations of variant `v`, each timed as data wait + step."""
    plans = load_plans(work_dir)
    plan = plans.configuration(v.config)
    cases = fold_cases(load_splits(work_dir), fold)
    options = resolve_options(TrainOptions(precision=v.precision, workers=v.workers, seed=0), plan.batch_size, False)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(v.threads or threads_before)
    precision = make_precision(options.precision, torch.device("cpu"), plan.network.spatial_dims)
    torch.manual_seed(0)
    network = build_network(plan.network, init=options.init)
    if v.torch_layers:
        network, precision.memory_format = torch_layer_network(network), torch.contiguous_format
    network.to(memory_format=precision.memory_format)
    outputs = count_outputs(plan.network, plan.patch_size)
    loss = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(outputs))
    optimizer = make_optimizer(network.parameters(), options)
    model = torch.compile(network) if v.compile else network
    timing = Timing(setup={"batch_size": plan.batch_size, "patch_size": plan.patch_size, "workers": options.workers,
                           "torch_threads": torch.get_num_threads(), "memory_format": str(precision.memory_format),
                           "features": plan.network.features, "skip": plan.network.skip})
    pipeline = get_training_pipeline(plan.data_dir(work_dir), cases.train, plan, num_workers=options.workers,
                                     seed=0, deep_supervision_outputs=outputs, pin_memory=False)
    try:
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            batch = next(pipeline)
            t1 = time.perf_counter()
            train_step(model, batch, loss, optimizer, precision, options.grad_clip).item()
            t2 = time.perf_counter()
            if i == 0:
                timing.first_iteration_s = round(t2 - t0, 3)
            if i >= warmup:
                timing.total.append(round(t2 - t0, 4))
                timing.data.append(round(t1 - t0, 4))
                timing.step.append(round(t2 - t1, 4))
    finally:
        pipeline.close()
        torch.set_num_threads(threads_before)
        del model, network, optimizer
        gc.collect()
    return timing


def time_nnunet(site, dataset: int, config: str, iterations: int, warmup: int, threads: int | None = None,
                da_workers: int | None = None) -> Timing:
    runs = import_peers()
    record = runs.time_iterations(site, dataset, config, iterations, warmup, da_workers=da_workers, threads=threads)
    return Timing(record["s_per_iteration"], record["data_wait_s"], record["step_s"], None,
                  {k: record[k] for k in ("batch_size", "patch_size", "n_proc_DA", "torch_threads", "wall_s")})


def run(args: argparse.Namespace) -> dict:
    from nnunet_env import NnunetSite

    site = NnunetSite()
    variants = [Variant.parse(v) for v in args.variants]
    record = {"machine": machine(), "iterations": args.iters, "warmup": args.warmup, "rounds": []}
    loads = [load_average()]
    for r in range(args.rounds):
        chunk = {"nnunet": None, "satnet": {}}
        if not args.no_nnunet:
            print(f"round {r + 1}: nnU-Net {args.nnunet_config}", flush=True)
            chunk["nnunet"] = vars(time_nnunet(site, args.dataset, args.nnunet_config, args.iters, args.warmup,
                                               args.nnunet_threads, args.nnunet_da_workers))
            loads.append(load_average())
        for v in variants:
            print(f"round {r + 1}: satnet {v.name}", flush=True)
            chunk["satnet"][v.name] = vars(time_satnet(args.work_dir, v, args.iters, args.warmup))
            loads.append(load_average())
        record["rounds"].append(chunk)
        print(summary_table(record, variants), flush=True)
    record["load_avg_range"] = [min(loads), max(loads)]
    record["summary"] = summarise(record, variants)
    return record


def summarise(record: dict, variants: list[Variant]) -> dict:
    """Per variant: medians over all timed iterations, and the median over rounds of satnet / nnU-Net."""
    out = {}
    nn_rounds = [c["nnunet"] for c in record["rounds"] if c["nnunet"]]
    out["nnunet"] = {k: median([t for c in nn_rounds for t in c[k]]) for k in ("total", "data", "step")}
    for v in variants:
        chunks = [c["satnet"][v.name] for c in record["rounds"]]
        row = {k: median([t for c in chunks for t in c[k]]) for k in ("total", "data", "step")}
        ratios = [median(c["satnet"][v.name]["total"]) / median(c["nnunet"]["total"])
                  for c in record["rounds"] if c["nnunet"]]
        row["ratio_to_nnunet"] = median(ratios)
        row["ratios_per_round"] = [round(x, 3) for x in ratios]
        row["first_iteration_s"] = median([c["first_iteration_s"] for c in chunks])
        out[v.name] = row
    return out


def summary_table(record: dict, variants: list[Variant]) -> str:
    s = summarise(record, variants)
    lines = ["| run | s / iteration | data wait s | step s | satnet / nnU-Net (per round) |", "|---|---|---|---|---|"]
    nn_row = s["nnunet"]
    if nn_row["total"] is not None:
        first = next(c["nnunet"] for c in record["rounds"] if c["nnunet"])["setup"]
        label = f"threads {first.get('torch_threads')}, DA workers {first.get('n_proc_DA')}"
        lines.append(f"| nnU-Net v2 3d_fullres fp32 ({label}) | {fmt(nn_row['total'])} | {fmt(nn_row['data'], 3)} | "
                     f"{fmt(nn_row['step'])} | 1 |")
    for v in variants:
        row = s[v.name]
        per_round = ", ".join(f"{x:.2f}" for x in row["ratios_per_round"])
        lines.append(f"| satnet {v.name} | {fmt(row['total'])} | {fmt(row['data'], 3)} | {fmt(row['step'])} | "
                     f"**{fmt(row['ratio_to_nnunet'])}** ({per_round}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("work_dir", type=Path, help="satnet work folder with the 3d and 3d_org plans of Hippocampus")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="satnet variants (module docstring)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per run (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--dataset", type=int, default=4, help="nnU-Net dataset id (default 4, Hippocampus)")
    parser.add_argument("--nnunet-config", default="3d_fullres")
    parser.add_argument("--no-nnunet", action="store_true", help="satnet variants only (no ratios)")
    parser.add_argument("--nnunet-threads", type=int, help="nnU-Net's torch threads (default: one per core)")
    parser.add_argument("--nnunet-da-workers", type=int, help="nnU-Net's augmentation processes (default: its own)")
    parser.add_argument("--name", default="train_vs_nnunet", help="results file benchmarks/results/NAME_*.json and "
                        "the docs/performance.md section bench_NAME (default train_vs_nnunet)")
    parser.add_argument("--no-write", action="store_true", help="print only; no results file, no docs table")
    args = parser.parse_args()
    import_peers()
    record = run(args)
    table = summary_table(record, [Variant.parse(v) for v in args.variants])
    text = (f"{machine_line(record)}\n\nMedian over {args.rounds} rounds x {args.iters} timed iterations "
            f"(after {args.warmup} warm-up) of each run; ratio: median over rounds of satnet's median / nnU-Net's "
            f"median of the same round.\n\n{table}\n")
    publish(args.name, record, text, write=not args.no_write)


if __name__ == "__main__":
    main()
