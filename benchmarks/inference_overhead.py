"""Measure what the sliding window and the metrics cost around the work they wrap (CPU, by hand).

    python benchmarks/inference_overhead.py            # writes docs/benchmarks/inference_overhead.md

1. Sliding window: a whole case predicted with a no-op predictor (x[:, :1] * 1, so the network
   costs nothing) against the bare minimum, the same tiles cut and passed to the same predictor
   without any accumulation. The difference is the inferer's own cost (padding, weighting,
   accumulation, normalisation), per tile and as a share of the bare loop.
2. Metrics: `confusion_counts` by per-label boolean masks against one bincount, for K labels
   (this sets the PER_LABEL_MAX threshold in satnet/evaluation/metrics.py).
Side by side in one run, the fastest of `--repeats` alternating runs (the machine is shared).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from satnet.evaluation import metrics
from satnet.evaluation.metrics import confusion_counts
from satnet.inference.sliding_window import sliding_window_predict, tile_grid


def fastest_seconds(fns, repeats: int) -> list[float]:
    """Fastest of `repeats` runs of each function, the functions alternating so load hits all alike."""
    for fn in fns:
        fn()  # warm-up: allocator and thread pool
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def bare_tiles(predictor, image: torch.Tensor, patch, step: float, batch: int) -> None:
    corners = list(itertools.product(*tile_grid(image.shape[1:], patch, step)))
    for i in range(0, len(corners), batch):
        tiles = torch.stack(
            [image[(slice(None), *(slice(s, s + p) for s, p in zip(c, patch)))] for c in corners[i : i + batch]]
        )
        predictor(tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    default_out = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "inference_overhead.md"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()
    torch.set_num_threads(2)
    lines = ["# Inference overhead (CPU)", "", f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"fastest of {args.repeats} alternating runs; command: `python benchmarks/inference_overhead.py`", ""]

    lines += ["| sliding window case | tiles | bare loop (s) | sliding_window_predict (s) | overhead per tile (ms) |",
              "|---|---|---|---|---|"]
    for shape, patch, classes in [((1, 96, 160, 160), (48, 80, 80), 3), ((3, 1, 512, 512), (256, 256), 2)]:
        image = torch.randn(shape)
        predictor = lambda x, k=classes: x[:, :1].expand(-1, k, *x.shape[2:]) * 1  # noqa: E731
        tile_patch = patch if len(patch) == 3 else (1, *patch)
        tiles = len(list(itertools.product(*tile_grid(shape[1:], patch, 0.5))))
        bare, full = fastest_seconds(
            [lambda: bare_tiles(predictor, image, tile_patch, 0.5, 4),
             lambda: sliding_window_predict(predictor, image, patch, classes)],
            args.repeats,
        )
        lines.append(f"| {list(shape)}, patch {list(patch)}, {classes} classes | {tiles} | {bare:.3f} | {full:.3f} | "
                     f"{1000 * (full - bare) / tiles:.2f} |")

    lines += ["", "| metrics, 200x256x256 uint8: labels | per-label masks (s) | one bincount (s) |", "|---|---|---|"]
    rng = np.random.default_rng(0)
    for k in (2, 8, 16, 32):
        reference = rng.integers(0, k + 1, size=(200, 256, 256), dtype=np.uint8)
        prediction = rng.integers(0, k + 1, size=(200, 256, 256), dtype=np.uint8)
        labels = list(range(1, k + 1))

        def counts(per_label_max: int) -> None:
            metrics.PER_LABEL_MAX = per_label_max
            confusion_counts(reference, prediction, labels)

        seconds = fastest_seconds([lambda: counts(k), lambda: counts(0)], args.repeats)
        lines.append(f"| {k} | {seconds[0]:.3f} | {seconds[1]:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
