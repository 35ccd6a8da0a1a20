"""CPU training iteration time: fp32 against bf16 autocast, contiguous against channels_last memory format.

    python benchmarks/bench_train.py                 # about 2-3 minutes on 2 shared CPU cores
    python benchmarks/bench_train.py --repeats 5 --threads 1

One training iteration is satnet.training.loop.train_step: forward, Dice + CE with deep
supervision, backward, gradient clipping and an SGD step, on a random batch already in memory
(data loading is docs/benchmarks/dataloader.md's subject). Two plans of nnU-Net's sizes for the
workspace's datasets, with SAT skips:

- Hippocampus 3D: patch 40x56x40, U-Net 32-64-128-256 (4 stages, stride 2);
- ISIC 2D: patch 256x256, 3 channels, U-Net 32-64-128-256-512-512 (6 stages, stride 2).

Batch 1 rather than the plans' 9 and 12: one iteration at full batch took 16-31 s on 2 shared cores
(a 7-minute run); the time per sample hardly depends on the batch (batch 2 took about 2/9 of batch
9's time), and the ratios are the point.

The four settings run interleaved (one iteration each, in turn, after a warm-up iteration each),
so the load of the shared machine falls on all of them alike; the table gives the median time
per iteration and the ratio to fp32 contiguous. Writes the table to docs/benchmarks/train_cpu.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.nets import build_network, reference_spec  # noqa: E402
from satnet.training.loop import Precision, count_outputs, train_step  # noqa: E402
from satnet.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "train_cpu.md"
PLANS = {
    "Hippocampus 3D 40x56x40, batch 1": dict(dims=3, channels=1, classes=3, patch=(40, 56, 40), batch=1,
                                            features=[32, 64, 128, 256]),
    "ISIC 2D 256x256, batch 1": dict(dims=2, channels=3, classes=2, patch=(256, 256), batch=1,
                                    features=[32, 64, 128, 256, 512, 512]),
}
SETTINGS = ("fp32 contiguous", "fp32 channels_last", "bf16 contiguous", "bf16 channels_last")


def make_setting(name: str, dims: int) -> Precision:
    dtype = torch.bfloat16 if name.startswith("bf16") else None
    layout = (torch.channels_last_3d if dims == 3 else torch.channels_last) if "last" in name else torch.contiguous_format
    return Precision(torch.device("cpu"), dtype, None, layout)


def time_plan(plan: dict, repeats: int) -> dict[str, list[float]]:
    dims, n = plan["dims"], len(plan["features"])
    spec = reference_spec("unet", dims, "sat", in_channels=plan["channels"], num_classes=plan["classes"],
                          features=plan["features"], kernel_sizes=[[3] * dims] * n,
                          strides=[[1] * dims] + [[2] * dims] * (n - 1), deep_supervision=True)
    outputs = count_outputs(spec, plan["patch"])
    loss = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(outputs))
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(plan["batch"], plan["channels"], *plan["patch"], generator=generator)
    full = torch.randint(0, plan["classes"], (plan["batch"], 1, *plan["patch"]), generator=generator)
    target = [full[(slice(None), slice(None)) + (slice(None, None, 2**i),) * dims] for i in range(outputs)]
    runs = {}
    for name in SETTINGS:
        torch.manual_seed(0)
        precision = make_setting(name, dims)
        model = build_network(spec).to(memory_format=precision.memory_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        runs[name] = (model, optimizer, precision)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for repeat in range(repeats + 1):  # the first round warms up oneDNN's kernels and the allocator
        for name, (model, optimizer, precision) in runs.items():
            start = time.perf_counter()
            train_step(model, {"data": data, "target": target}, loss, optimizer, precision, grad_clip=12.0)
            if repeat:
                times[name].append(time.perf_counter() - start)
    return times


def table(results: dict[str, dict[str, list[float]]], threads: int) -> str:
    lines = [f"Training iteration on the CPU ({platform.processor() or platform.machine()}, {threads} torch "
             f"thread(s), load average before the run {os.getloadavg()[0]:.1f}); median seconds per iteration "
             f"(ratio to fp32 contiguous), {len(next(iter(next(iter(results.values())).values())))} iterations each:",
             "", "| plan | " + " | ".join(SETTINGS) + " |", "|---" * (len(SETTINGS) + 1) + "|"]
    for plan, times in results.items():
        base = statistics.median(times[SETTINGS[0]])
        cells = [f"{statistics.median(times[s]):.2f} s ({statistics.median(times[s]) / base:.2f})" for s in SETTINGS]
        lines.append(f"| {plan} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured iterations per setting (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch", type=int, nargs=2, default=None, metavar=("B3D", "B2D"),
                        help="batch sizes of the 3D and the 2D plan (default 1 1)")
    parser.add_argument("--no-write", action="store_true", help=f"print only, do not write {OUT.name}")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    plans = dict(PLANS)
    if args.batch:
        plans = {name.replace("batch 1", f"batch {b}"): {**plan, "batch": b} for (name, plan), b in zip(PLANS.items(), args.batch)}
    results = {name: time_plan(plan, args.repeats) for name, plan in plans.items()}
    text = table(results, torch.get_num_threads()).replace(f"before the run {os.getloadavg()[0]:.1f}",
                                                           f"before the run {load:.1f}")
    text += "\nCommand: `python benchmarks/bench_train.py " + " ".join(sys.argv[1:]) + "`\n"
    print(text)
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text("# CPU training iteration: precision and memory format\n\n" + text)


if __name__ == "__main__":
    main()
