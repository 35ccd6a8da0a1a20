"""Parameter counts of every network x skip mode x dimension, and a comparison with the SAT paper's Table 3.

    python benchmarks/bench_params.py                      # print the tables (markdown)
    python benchmarks/bench_params.py --write docs/benchmarks/params.md

Counts are exact (networks are built on the meta device, no memory, a few seconds). The paper
(Taghanaki et al., "Select, Attend, and Transfer", Table 3) reports for skin (ISIC 2017) a U-Net
with 772,401 parameters (ORG) and 531,338 (SAT), and about -20.7% for the Tiramisu; it does not
give the widths, so the "paper-like" models below are our closest inference (docs/architecture.md).
For liver CT it reports DI2IN with 2,353,089 (ORG) and 2,063,053 (SAT); the DI2IN table shows the
layout that gives exactly these and what each choice the papers leave open changes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.nets import NetworkSpec, count_parameters, parameter_table, reference_spec  # noqa: E402
from satnet.nets.di2in import di2in_decoder_widths  # noqa: E402
from satnet.nets.spec import ARCH_NAMES  # noqa: E402

PAPER_UNET_SKIN = (772_401, 531_338)
PAPER_TIRAMISU_SKIN_CHANGE = -0.207
PAPER_DI2IN_LIVER = (2_353_089, 2_063_053)  # the SAT paper's DI2IN (liver CT), one attention map per skip


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


def liver_di2in(skip: str, **changes) -> NetworkSpec:
    """3D DI2IN for CT: widths 16-32-64-128-128 (decoder 8-16-32-64), 3x3x3 kernels, stride 2, two convs per
    encoder stage (the first strided), batch norm, 2 classes, no deep-supervision heads (docs/architecture.md)."""
    n = 5
    fields = dict(
        arch="di2in", spatial_dims=3, in_channels=1, num_classes=2, features=[16, 32, 64, 128, 128],
        kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), skip=skip, deep_supervision=False,
        norm="batch",
    )
    return NetworkSpec(**{**fields, **changes})


def one_sigmoid_output(spec: NetworkSpec) -> int:
    """Parameters with one sigmoid output instead of satnet's num_classes softmax logits: the full-resolution
    1x1 head loses num_classes - 1 filters of (decoder width + bias); deep-supervision heads likewise."""
    widths = di2in_decoder_widths(spec)
    heads = widths if spec.deep_supervision else widths[:1]
    return count_parameters(spec) - (spec.num_classes - 1) * sum(w + 1 for w in heads)


DI2IN_CHOICES = {  # row label: (changes to liver_di2in, one sigmoid output)
    "16-32-64-128-128, first conv of each stage strided, one sigmoid output": ({}, True),
    "the same with satnet's two-logit softmax head": ({}, False),
    "... plus deep-supervision heads at the 4 decoder stages (satnet's training default)": (
        dict(deep_supervision=True), False),
    "... no norm layers (one sigmoid output)": (dict(norm="none"), True),
    "... bottleneck 256 instead of 128 (one sigmoid output)": (dict(features=[16, 32, 64, 128, 256]), True),
    "... a stride-2 conv before the two convs of each lower stage (one sigmoid output)": (
        dict(convs_per_stage=[2, 3, 3, 3, 3]), True),
}


def di2in_table() -> list[str]:
    lines = [
        "| DI2IN (3D, liver CT) | ORG | SAT | SAT vs ORG | paper (liver) |",
        "|---|---:|---:|---:|---|",
    ]
    p_org, p_sat = PAPER_DI2IN_LIVER
    for label, (changes, single) in DI2IN_CHOICES.items():
        count = one_sigmoid_output if single else count_parameters
        org, sat = count(liver_di2in("org", **changes)), count(liver_di2in("sat", **changes))
        lines.append(f"| {label} | {org:,} | {sat:,} | {sat / org - 1:+.1%} | "
                     f"{p_org:,} -> {p_sat:,} ({p_sat / p_org - 1:+.1%}) |")
    return lines


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
        "## DI2IN against the paper",
        "",
        "The SAT paper's DI2IN counts are reproduced exactly by the layout of the first row (docs/architecture.md says",
        "why); satnet's head gives one logit per class, so its `--arch di2in` at these widths has 9 parameters more (one",
        "1x1 filter of 8 weights and a bias). Batch and instance norm both have 2 parameters per channel: same counts.",
        "",
        *di2in_table(),
        "",
    ])
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
