"""Batches per second of the full training pipeline (read, augment, to tensors), 0 / 1 / 2 workers.

Two settings shaped like the shared datasets:
- Hippocampus-like 3D: 20 one-channel cases of about 36 x 50 x 35 voxels (labels 0..2), patch
  40 x 56 x 40, batch 9, 4-stage network (3 deep-supervision outputs).
- ISIC-like 2D: 20 RGB cases of 1 x 256 x 256 (labels 0..1), patch 256 x 256, batch 12,
  7-stage network (6 deep-supervision outputs).

Cases are synthetic (satnet.synthetic for 3D, a disc on noise for 2D), written with save_case
into a temporary folder. Each run first takes one batch (worker start-up, page cache), then
counts batches for a fixed time. Run: `python benchmarks/bench_dataloader.py [--seconds 10]`;
it prints markdown tables and writes them to docs/benchmarks/dataloader.md. About 2.5 minutes.
A second table compares the time per batch for three read sizes (the cost of the exact read).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.io.cases import CaseProperties, save_case  # noqa: E402
from satnet.io.geometry import ImageGeometry  # noqa: E402
from satnet.nets import deep_supervision_scales  # noqa: E402
from satnet.nets.spec import NetworkSpec  # noqa: E402
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate  # noqa: E402
from satnet.synthetic import synthetic_case_3d  # noqa: E402
from satnet.training.augmentation import (  # noqa: E402
    default_augmentation,
    enlarged_patch_size,
    training_transforms,
)
from satnet.training.dataloader import PatchDataLoader  # noqa: E402
from satnet.training.pipeline import SingleProcessAugmenter, get_training_pipeline  # noqa: E402

NUM_CASES = 20


def _save(folder: Path, case_id: str, image: np.ndarray, seg: np.ndarray, rng: np.random.Generator) -> None:
    """image (C, Z, Y, X) float32, seg (1, Z, Y, X); up to 1000 sampled locations per label."""
    locations = {}
    for label in range(1, int(seg.max()) + 1):
        where = np.argwhere(seg[0] == label)
        if len(where):
            locations[str(label)] = where[rng.choice(len(where), min(1000, len(where)), replace=False)].tolist()
    shape = list(image.shape[1:])
    geometry = ImageGeometry(shape=shape, spacing=[1.0] * 3, origin=[0.0] * 3, direction=[1, 0, 0, 0, 1, 0, 0, 0, 1])
    props = CaseProperties(case_id, geometry, [[0, s] for s in shape], shape, shape, [1.0] * 3, locations)
    save_case(folder, props, image, seg)


def make_hippocampus_like(folder: Path, rng: np.random.Generator) -> list[str]:
    for i in range(NUM_CASES):
        shape = (int(rng.integers(32, 41)), int(rng.integers(45, 56)), int(rng.integers(31, 40)))
        image, label = synthetic_case_3d(shape, rng, num_labels=2, spacing=(1.0, 1.0, 1.0))
        image = (image - image.mean()) / image.std()
        _save(folder, f"hippo_{i:03d}", image[None].astype(np.float32), label[None].astype(np.int8), rng)
    return [f"hippo_{i:03d}" for i in range(NUM_CASES)]


def make_isic_like(folder: Path, rng: np.random.Generator) -> list[str]:
    yy, xx = np.mgrid[:256, :256]
    for i in range(NUM_CASES):
        cy, cx, r = rng.uniform(70, 186), rng.uniform(70, 186), rng.uniform(25, 60)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image = rng.uniform(0.5, 0.9, size=(3, 1, 256, 256)).astype(np.float32)
        image[:, 0, disc] *= 0.4
        _save(folder, f"isic_{i:04d}", image, disc[None, None].astype(np.int8), rng)
    return [f"isic_{i:04d}" for i in range(NUM_CASES)]


def make_plan(patch: list[int], batch: int, channels: int, classes: int, stages: int) -> ConfigurationPlan:
    dims = len(patch)
    network = NetworkSpec(
        arch="unet", spatial_dims=dims, in_channels=channels, num_classes=classes,
        features=[32 * 2**i for i in range(stages)], kernel_sizes=[[3] * dims] * stages,
        strides=[[1] * dims] + [[2] * dims] * (stages - 1),
    )
    norm = [ChannelNormalization(channel=str(c), scheme="zscore") for c in range(channels)]
    return ConfigurationPlan(
        name=f"{dims}d", spacing=[1.0, 1.0, 1.0], patch_size=patch, batch_size=batch, normalization=norm,
        network=network, estimated_memory=MemoryEstimate(0, 0, 0, 0, 0), memory_budget_bytes=1,
    )


def measure(folder: Path, ids: list[str], plan: ConfigurationPlan, workers: int, seconds: float) -> tuple[float, float]:
    """(seconds to the first batch, batches per second after it)."""
    start = time.perf_counter()
    with get_training_pipeline(folder, ids, plan, num_workers=workers, seed=0, pin_memory=False) as pipeline:
        next(pipeline)
        first = time.perf_counter() - start
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            next(pipeline)
            count += 1
        rate = count / (time.perf_counter() - t0)
    return first, rate


def compare_read_sizes(folder: Path, ids: list[str], plan: ConfigurationPlan, seconds: float) -> list[str]:
    """Seconds per batch (0 workers) of the 3D setting for three read sizes, interleaved twice.

    The exact read (enlarged_patch_size), the size nnU-Net's get_patch_size gives for this patch
    (89 x 97 x 78, margins rounded up to even: 90 x 98 x 80) and no margin at all.
    """
    config = default_augmentation(plan.patch_size, plan.spacing)
    reads = {
        "exact": enlarged_patch_size(plan.patch_size, config),
        "nnU-Net's size": [90, 98, 80],
        "no margin": list(plan.patch_size),
    }
    transform = training_transforms(plan.patch_size, config, deep_supervision_scales(plan.network)[:3])
    times: dict[str, list[float]] = {name: [] for name in reads}
    for repeat in range(2):
        for name, read in reads.items():
            loader = PatchDataLoader(folder, ids, plan.patch_size, plan.batch_size, read_size=read, seed=repeat)
            pipeline = SingleProcessAugmenter(loader, transform, seed=repeat)
            next(pipeline)
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2:
                next(pipeline)
                count += 1
            times[name].append((time.perf_counter() - t0) / count)
    return [
        f"| {name} | {'x'.join(map(str, reads[name]))} | {' / '.join(f'{t:.3f}' for t in times[name])} |"
        for name in reads
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per setting (default 10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "dataloader.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = []
        for name, make, plan in (
            ("Hippocampus-like 3D", make_hippocampus_like, make_plan([40, 56, 40], 9, 1, 3, 4)),
            ("ISIC-like 2D", make_isic_like, make_plan([256, 256], 12, 3, 2, 7)),
        ):
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            settings.append((name, folder, make(folder, rng), plan))
        for name, folder, ids, plan in settings:
            read = enlarged_patch_size(plan.patch_size, default_augmentation(plan.patch_size, plan.spacing))
            for workers in args.workers:
                first, rate = measure(folder, ids, plan, workers, args.seconds)
                patch = "x".join(map(str, plan.patch_size))
                rows.append(
                    f"| {name} | {patch} (read {'x'.join(map(str, read))}) | {plan.batch_size} | {workers} | "
                    f"{rate:.2f} | {rate * plan.batch_size:.1f} | {first:.2f} |"
                )
                print(rows[-1], flush=True)
        name, folder, ids, plan = settings[0]
        read_rows = compare_read_sizes(folder, ids, plan, args.seconds)
        print("\n".join(read_rows), flush=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    table = "\n".join(
        [
            "# Training pipeline throughput",
            "",
            f"`python benchmarks/bench_dataloader.py --seconds {args.seconds:g}` on {platform.processor() or platform.machine()}, "
            f"{cores} usable cores, {time.strftime('%Y-%m-%d')}. Full training augmentation, deep-supervision targets, "
            "torch tensors; pin_memory off. Shared, noisy machine: compare rows of one run only.",
            "",
            "| setting | patch | batch | workers | batches/s | samples/s | s to first batch |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "## Cost of the exact enlarged read (Hippocampus-like 3D, 0 workers)",
            "",
            "Seconds per batch, two interleaved repeats, for the read that holds every rotation at the largest "
            "zoom, the smaller read nnU-Net's get_patch_size gives, and no margin (see docs/training_data.md).",
            "",
            "| read | size | s per batch (repeat 1 / 2) |",
            "|---|---|---|",
            *read_rows,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
