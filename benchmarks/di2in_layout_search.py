"""Which DI2IN layouts give the SAT paper's parameter counts (2,353,089 ORG, 2,063,053 SAT)? Pure arithmetic.

    python benchmarks/di2in_layout_search.py

1. The SAT saving (ORG - SAT = 290,036) depends only on the skip widths C and the output widths D of the
   3x3x3 convolutions that read them: a one-map transfer removes 27 (C - 1) D weights and adds the gate's
   W (C) and 1x1 attention conv (C + 1). Lists every set of 1-4 (C, D) pairs from WIDTHS that sums to it.
2. With the skips of the only doubling solution (C = 16-32-64-128, D = C / 2), counts whole networks over
   the choices the papers leave open and lists those within 100 parameters of both totals.
The layout found is built and counted for real in benchmarks/bench_params.py (docs/benchmarks/params.md) and
tests/nets/test_di2in.py; docs/architecture.md explains it.
"""
from __future__ import annotations

import itertools

PAPER_ORG, PAPER_SAT = 2_353_089, 2_063_053
WIDTHS = (8, 16, 24, 32, 48, 64, 96, 128, 256, 512)
K3 = 27  # a 3x3x3 kernel


def conv(cin: int, cout: int, kernel: int = K3, bias: bool = True) -> int:
    return cin * cout * kernel + (cout if bias else 0)


def saving(c: int, d: int) -> int:
    return (c - 1) * K3 * d - (2 * c + 1)


def skip_solutions() -> list[tuple[tuple[int, int], ...]]:
    pairs = [(c, d) for c in WIDTHS for d in WIDTHS]
    return [combo for n in (1, 2, 3, 4) for combo in itertools.combinations_with_replacement(pairs, n)
            if sum(saving(c, d) for c, d in combo) == PAPER_ORG - PAPER_SAT]


def network(sat: bool, bottleneck: int, encoder_convs: int, strided_first: bool, extra_decoder_convs: int, up: str,
            norm_params: int, bias: bool, heads: str) -> int:
    """Parameters of a 5-level DI2IN: skips 16-32-64-128, decoder 8-16-32-64, 1 input channel, sigmoid outputs."""
    skips, decoder = [16, 32, 64, 128], [8, 16, 32, 64]
    total, cin = 0, 1
    for level, width in enumerate(skips + [bottleneck]):
        convs = encoder_convs + (1 if level > 0 and not strided_first else 0)
        for _ in range(convs):
            total += conv(cin, width, bias=bias) + norm_params * width
            cin = width
    below = bottleneck
    for level in reversed(range(4)):
        total += {"interpolation": 0, "transposed 2": conv(below, below, 8, bias),
                  "transposed 3": conv(below, below, K3, bias)}[up]
        total += (2 * skips[level] + 1) if sat else 0  # the gate: W and the 1x1 attention conv
        total += conv(below + (1 if sat else skips[level]), decoder[level], bias=bias) + norm_params * decoder[level]
        for _ in range(extra_decoder_convs):
            total += conv(decoder[level], decoder[level], bias=bias) + norm_params * decoder[level]
        below = decoder[level]
    outputs = {"one output": decoder[:1], "3 heads": decoder[:3], "4 heads": decoder}
    total += sum(conv(w, 1, 1) for w in outputs[heads.replace(" + fusion", "")])
    return total + (conv(len(outputs[heads.replace(" + fusion", "")]), 1, 1) if "fusion" in heads else 0)


CHOICES = dict(
    bottleneck=(128, 256, 512), encoder_convs=(1, 2, 3), strided_first=(True, False), extra_decoder_convs=(0, 1, 2),
    up=("interpolation", "transposed 2", "transposed 3"), norm_params=(0, 2, 4), bias=(True, False),
    heads=("one output", "3 heads", "4 heads", "3 heads + fusion", "4 heads + fusion"),
)


def main() -> None:
    solutions = skip_solutions()
    print(f"skip widths (C, D) whose one-map SAT saving is {PAPER_ORG - PAPER_SAT:,}: {len(solutions)}")
    for combo in solutions:
        print("  ", combo)
    rows = []
    for values in itertools.product(*CHOICES.values()):
        layout = dict(zip(CHOICES, values))
        org, sat = network(False, **layout), network(True, **layout)
        if abs(org - PAPER_ORG) <= 100 and abs(sat - PAPER_SAT) <= 100:
            rows.append((abs(org - PAPER_ORG), org, sat, layout))
    print(f"layouts within 100 parameters of both totals (of {len(list(itertools.product(*CHOICES.values())))}):")
    for _, org, sat, layout in sorted(rows, key=lambda r: r[0]):
        print(f"   ORG {org:,}  SAT {sat:,}  {layout}")


if __name__ == "__main__":
    main()
