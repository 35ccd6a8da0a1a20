"""satnet's CPU layers against PyTorch's own, one layer at a time (the why behind docs/performance.md).

Two measurements, each pair interleaved (A, B, A, B, ...) so machine noise hits both alike,
medians of `--repeats` timed calls after warm-up:

1. Batch-1 fp32 3D convolution (3x3x3, stride 1) at the shapes of a Hippocampus U-Net's stages:
   `F.conv3d` (PyTorch sends small batch-1 inputs to its native im2col kernel) against
   `satnet.nets.layers.convolution` (always oneDNN). Forward only; GFLOP/s = 2 x MACs / time.
2. Instance norm + LeakyReLU, forward and backward, at a training batch of the Hippocampus plan
   (B 7, 32 channels, 40x56x40): `torch.nn.InstanceNorm3d` on a contiguous input, and satnet's
   `InstanceNorm3d` on a contiguous input (group norm) and on a channels_last_3d input (group-norm
   forward, satnet's own backward), against PyTorch's group norm on the same channels_last input.

    PYTHONPATH=. python benchmarks/bench_layers.py [--repeats 7] [--threads 2] [--no-write]

Writes benchmarks/results/layers_<time>.json and the `bench_layers` section of docs/performance.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import machine, machine_line, publish  # noqa: E402

from satnet.nets import layers  # noqa: E402

# (channels, spatial): the stages of nnU-Net's Hippocampus 3d_fullres U-Net (patch 40x56x40) and satnet's 2 mm one.
CONV_SHAPES = [(32, (40, 56, 40)), (64, (20, 28, 20)), (128, (10, 14, 10)), (256, (5, 7, 5)), (32, (20, 28, 20))]
NORM_SHAPE = (7, 32, 40, 56, 40)


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, the calls taken in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def torch_conv_kernel(x: torch.Tensor, w: torch.Tensor) -> str:
    """Which kernel `F.conv3d` picks for this input: "oneDNN" or "native" (read from the profiler's op names)."""
    from torch.profiler import profile

    with torch.no_grad(), profile() as prof:
        F.conv3d(x, w, None, 1, 1)
    names = {event.key for event in prof.key_averages()}
    return "oneDNN" if "aten::mkldnn_convolution" in names else "native"


def conv_rows(repeats: int) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    for channels, spatial in CONV_SHAPES:
        x = torch.randn(1, channels, *spatial)
        w = torch.randn(channels, channels, 3, 3, 3) * 0.05
        b = torch.zeros(channels)
        with torch.no_grad():
            same = (F.conv3d(x, w, b, 1, 1) - layers.convolution(x, w, b, (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)).abs().max()
            med = interleaved({"torch": lambda: F.conv3d(x, w, b, 1, 1),
                               "satnet": lambda: layers.convolution(x, w, b, (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)},
                              repeats)
        flop = 2 * channels * channels * 27 * x[0, 0].numel()
        rows.append({"channels": channels, "spatial": list(spatial), "gflop": flop / 1e9,
                     "torch_kernel": torch_conv_kernel(x, w),
                     "torch_s": med["torch"], "satnet_s": med["satnet"], "max_abs_difference": float(same),
                     "torch_gflops": flop / 1e9 / med["torch"], "satnet_gflops": flop / 1e9 / med["satnet"]})
    return rows


def norm_rows(repeats: int) -> dict:
    torch.manual_seed(0)
    b, c = NORM_SHAPE[:2]
    base = torch.randn(*NORM_SHAPE)
    grad = torch.randn(*NORM_SHAPE)
    last = torch.channels_last_3d

    def step(norm: torch.nn.Module, x0: torch.Tensor, g: torch.Tensor) -> Callable[[], None]:
        def run():
            x = x0.detach().requires_grad_(True)
            y = F.leaky_relu(norm(x), 0.01, inplace=True)
            y.backward(g)
        return run

    torch_norm = torch.nn.InstanceNorm3d(c, affine=True)
    ours = layers.InstanceNorm3d(c, affine=True)

    def torch_group_norm(x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, c, ours.weight, ours.bias, ours.eps)

    x_last, g_last = base.contiguous(memory_format=last), grad.contiguous(memory_format=last)
    med = interleaved({
        "torch InstanceNorm3d, contiguous": step(torch_norm, base, grad),
        "satnet InstanceNorm3d, contiguous (group norm)": step(ours, base, grad),
        "torch group norm, channels_last_3d": step(torch_group_norm, x_last, g_last),
        "satnet InstanceNorm3d, channels_last_3d (own backward)": step(ours, x_last, g_last),
    }, repeats)
    return {"shape": list(NORM_SHAPE), "seconds": med}


def markdown(record: dict) -> str:
    lines = [machine_line(record), "",
             f"Medians of {record['repeats']} interleaved calls after warm-up; ratio = PyTorch's time / satnet's.", "",
             "**Batch-1 fp32 convolution, 3x3x3** (forward; `F.conv3d` against satnet's `convolution`, oneDNN):", "",
             "| channels | volume | F.conv3d kernel | F.conv3d s | GFLOP/s | satnet s | GFLOP/s | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in record["conv"]:
        lines.append(f"| {r['channels']} | {'x'.join(map(str, r['spatial']))} | {r['torch_kernel']} | {r['torch_s']:.4f} | "
                     f"{r['torch_gflops']:.0f} | {r['satnet_s']:.4f} | {r['satnet_gflops']:.0f} | "
                     f"**{r['torch_s'] / r['satnet_s']:.2f}x** |")
    lines += ["", "Where F.conv3d's kernel is oneDNN already, both columns run the same kernel: those rows show "
              "the run's noise, not a difference."]
    norm = record["norm"]
    ref = norm["seconds"]["torch InstanceNorm3d, contiguous"]
    lines += ["", f"**Instance norm + LeakyReLU, forward + backward** ({'x'.join(map(str, norm['shape']))}):", "",
              "| layer, input layout | s | torch InstanceNorm3d / this |", "|---|---|---|"]
    for name, s in norm["seconds"].items():
        lines.append(f"| {name} | {s:.3f} | {ref / s:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = machine()["load_avg_1min"]
    record = {"machine": machine(), "repeats": args.repeats, "conv": conv_rows(args.repeats),
              "norm": norm_rows(args.repeats)}
    record["load_avg_range"] = sorted([load_before, machine()["load_avg_1min"]])
    publish("layers", record, markdown(record), write=not args.no_write)


if __name__ == "__main__":
    main()
