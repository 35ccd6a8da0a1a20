"""Activation memory kept for backward, per skip mode, with the fused and the unfused SAT gate.

    python benchmarks/bench_gate_memory.py      # under a minute on 2 CPU cores

Counts the bytes of every distinct storage autograd saves during one training forward (batch 1,
fp32, a 48^3 patch) of a 4-stage 3D U-Net (32-64-128-256) and a 4-stage 3D Tiramisu (first conv 48,
growth 16, blocks 4-5-7 + bottleneck 10). This is the activation part of training memory that the
skip mode changes; weights, gradients and optimizer state are not included. The count is exact
and deterministic (no timing: CPU timings on a shared machine say little about GPU training).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.nets import build_network, reference_spec  # noqa: E402
from satnet.nets.registry import saved_storage_bytes  # noqa: E402

PATCH = (48, 48, 48)
MODES = ("org", "st", "at", "sat", "sat-unfused")


def make_model(arch: str, mode: str) -> torch.nn.Module:
    skip = mode.split("-")[0]
    n = 4
    spec = reference_spec(
        arch, 3, skip, features=[32, 64, 128, 256] if arch == "unet" else [48] * n,
        kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        convs_per_stage=None if arch == "unet" else [4, 5, 7, 10],
    )
    torch.manual_seed(0)
    model = build_network(spec)
    for _, gate in model.gates():
        gate.fused = not mode.endswith("unfused")
    return model


def main() -> None:
    x = torch.randn(1, 1, *PATCH)
    print("| arch | skip | saved for backward (MiB) | vs org |")
    print("|---|---|---:|---:|")
    for arch in ("unet", "tiramisu"):
        base = None
        for mode in MODES:
            nbytes = saved_storage_bytes(make_model(arch, mode).train(), x)
            base = base or nbytes
            print(f"| {arch} | {mode} | {nbytes / 2**20:.1f} | {nbytes / base - 1:+.1%} |")


if __name__ == "__main__":
    main()
