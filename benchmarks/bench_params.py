"""Parameter counts of every network x skip mode x dimension, and a comparison with the SAT paper's Table 3.

    python benchmarks/bench_params.py                      # print the tables (markdown)
    python benchmarks/bench_params.py --write docs/benchmarks/params.md

Counts are exact (networks are built on the meta device, no memory, a few seconds). The paper
(Taghanaki et al., "Select, Attend, and Transfer", Table 3) reports for skin (ISIC 2017) a U-Net
with 772,401 parameters (ORG) and 531,338 (SAT), and about -20.7% for the Tiramisu; it does not
give the widths, so the "paper-like" models below are our closest inference (docs/architecture.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.nets import NetworkSpec, count_parameters, parameter_table, reference_spec  # noqa: E402
from satnet.nets.spec import ARCH_NAMES  # noqa: E402

PAPER_UNET_SKIN = (772_401, 531_338)
PAPER_TIRAMISU_SKIN_CHANGE = -0.207


def skin_unet(skip: str) -> NetworkSpec:
    """2D U-Net for RGB skin images: 5 stages, widths 10-20-40-80-160 (the base width whose ORG count
    is closest to the paper's), 2 x (3x3 conv) per stage, no norm (a plain Keras U-Net), 2 classes."""
    n = 5
    return NetworkSpec(
        arch="unet", spatial_dims=2, in_channels=3, num_classes=2, features=[10 * 2**i for i in range(n)],
        kernel_sizes=[[3, 3]] * n, strides=[[1, 1]] + [[2, 2]] * (n - 1), skip=skip, deep_supervision=False,
        norm="none",
    )


def skin_tiramisu(layers: list[int], growth: int, skip: str, dense_gates: bool = True) -> NetworkSpec:
    """2D FC-DenseNet for RGB skin images: first conv 48, batch norm, 2 classes."""
    n = len(layers)
    return NetworkSpec(
        arch="tiramisu", spatial_dims=2, in_channels=3, num_classes=2, features=[48] * n,
        kernel_sizes=[[3, 3]] * n, strides=[[1, 1]] + [[2, 2]] * (n - 1), convs_per_stage=layers,
        growth_rate=growth, skip=skip, deep_supervision=False, norm="batch", dense_gates=dense_gates,
    )


TIRAMISUS = {
    "FC-DenseNet56 (4 layers/block, k=12)": ([4] * 6, 12),
    "FC-DenseNet67 (5 layers/block, k=16)": ([5] * 6, 16),
    "FC-DenseNet103 (4-5-7-10-12, 15, k=16)": ([4, 5, 7, 10, 12, 15], 16),
}


def reference_table() -> list[str]:
    rows = parameter_table()
    lines = [
        "| arch | dims | org | st | at | sat | sat vs org |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for i in range(0, len(rows), 4):
        group = {r["skip"]: r for r in rows[i:i + 4]}
        counts = " | ".join(f"{group[s]['parameters']:,}" for s in ("org", "st", "at", "sat"))
        change = group["sat"]["change_vs_org"]
        lines.append(f"| {rows[i]['arch']} | {rows[i]['spatial_dims']}D | {counts} | {change:+.1%} |")
    return lines


# The skip variants of the study (docs/results.md): k attention maps, and per-level mixes.
VARIANTS = {"sat": {}, "sat2": {"skip_channels": 2}, "sat4": {"skip_channels": 4}, "sat8": {"skip_channels": 8},
            "sat-org": {"skip_levels": ["sat", "org"]}, "sat4-org": {"skip_levels": ["sat:4", "org"]}}


def variant_table() -> list[str]:
    lines = ["| arch | dims | org | " + " | ".join(VARIANTS) + " |", "|---|---|---:|" + "---:|" * len(VARIANTS)]
    for arch in ARCH_NAMES:
        for dims in (2, 3):
            org = count_parameters(reference_spec(arch, dims, "org"))
            cells = []
            for changes in VARIANTS.values():
                count = count_parameters(reference_spec(arch, dims, "sat", **changes))
                cells.append(f"{count:,} ({count / org - 1:+.1%})")
            lines.append(f"| {arch} | {dims}D | {org:,} | " + " | ".join(cells) + " |")
    return lines


def paper_table() -> list[str]:
    lines = [
        "| model | ORG | SAT | SAT vs ORG | paper (skin, Table 3) |",
        "|---|---:|---:|---:|---|",
    ]
    org, sat = count_parameters(skin_unet("org")), count_parameters(skin_unet("sat"))
    p_org, p_sat = PAPER_UNET_SKIN
    lines.append(
        f"| U-Net 10-20-40-80-160, no norm | {org:,} | {sat:,} | {sat / org - 1:+.1%} | "
        f"{p_org:,} -> {p_sat:,} ({p_sat / p_org - 1:+.1%}) |"
    )
    for name, (layers, growth) in TIRAMISUS.items():
        org = count_parameters(skin_tiramisu(layers, growth, "org"))
        for dense_gates, label in ((True, "long + dense-block gates"), (False, "long-skip gates only")):
            sat = count_parameters(skin_tiramisu(layers, growth, "sat", dense_gates))
            lines.append(
                f"| {name}, {label} | {org:,} | {sat:,} | {sat / org - 1:+.1%} | {PAPER_TIRAMISU_SKIN_CHANGE:+.1%} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    text = "\n".join([
        "# Parameter counts",
        "",
        "Written by `python benchmarks/bench_params.py --write docs/benchmarks/params.md`; see docs/architecture.md.",
        "",
        "## Every network at the reference size",
        "",
        "5 stages, 1 input channel, 3 classes, no deep supervision, instance norm, stride 2; features",
        "32-64-128-256-320 with 3x3(x3) kernels (vnet 5x5(x5)); tiramisu first conv 48, growth 16,",
        "blocks 4-5-7-10 and bottleneck 12 (`satnet.nets.reference_spec`).",
        "",
        *reference_table(),
        "",
        "## k attention maps and per-level skips",
        "",
        "The same networks with `--skip-channels K` (satK) and `--skip-levels` (sat-org: SAT at full resolution,",
        "plain skips below; sat4-org: the same with 4 maps); in brackets the change against org.",
        "",
        *variant_table(),
        "",
        "## Skin models against the paper",
        "",
        *paper_table(),
        "",
    ])
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
