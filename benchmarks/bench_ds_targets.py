"""Deep-supervision targets: where they lie on the network's coarse grids, and what they cost per batch.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_ds_targets.py     # printed, quoted in docs/training.md

1. Alignment. Spheres of random radius (6 to 16 voxels) and sub-voxel centre in a 64^3 label are
   downsampled by factor f = 2, 4, 8: every f-th voxel from the first (offsets 0, what satnet did
   for every network), DeepSupervisionTargets with the network's offsets
   (satnet.nets.deep_supervision_offsets), and for vnet also the majority over each output
   voxel's window (the argmax of the average-pooled one-hot). Each target's voxel i is placed where the network puts
   its output voxel i, at f*i + offset (0 for unet/di2in, (f - 1) / 2 for vnet/tiramisu); the
   table gives the mean shift of the target's centroid from the sphere's centre per axis, in input
   voxels (its standard deviation over the spheres), and the mean of its volume over the sphere's.
2. Cost. One DeepSupervisionTargets call per batch, as the training pipeline makes it, on a
   Hippocampus-like 3D batch, a large 3D one and a 2D one; the fastest of --repeats runs, in this
   process (set OMP_NUM_THREADS=1 for the single-threaded figures).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from satnet.nets import NetworkSpec, deep_supervision_offsets, deep_supervision_scales
from satnet.training.augmentation import DeepSupervisionTargets

SIZE = 64


def spec(arch: str, spatial_dims: int, stages: int) -> NetworkSpec:
    return NetworkSpec(arch=arch, spatial_dims=spatial_dims, in_channels=1, num_classes=3, features=[4] * stages,
                       kernel_sizes=[[3] * spatial_dims] * stages,
                       strides=[[1] * spatial_dims] + [[2] * spatial_dims] * (stages - 1))


def sphere(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.uniform(20, SIZE - 21, size=3)
    radius = rng.uniform(6, 16)
    grid = np.indices((SIZE,) * 3, dtype=np.float64)
    inside = sum((grid[a] - centre[a]) ** 2 for a in range(3)) <= radius**2
    return inside.astype(np.float32)[None, None], centre


def alignment(samples: int) -> None:
    rng = np.random.default_rng(0)
    np.random.seed(0)
    print("shift of the target's centroid on the network's grid (input voxels per axis, its sd over the spheres), "
          "target volume / label volume")
    heads = ["every f-th from 0", "DeepSupervisionTargets", "window majority"]
    print(f"{'network':14s} {'f':>2s}  " + "  ".join(f"{h:>24s}" for h in heads))
    spheres = [sphere(rng) for _ in range(samples)]
    for arch in ("unet", "vnet"):
        net = spec(arch, 3, 5)
        scales, offsets = deep_supervision_scales(net), deep_supervision_offsets(net)
        methods = [DeepSupervisionTargets(scales, None), DeepSupervisionTargets(scales, offsets)]
        if arch == "vnet":  # the argmax of the average-pooled one-hot over each output voxel's window
            methods.append(lambda target: {"target": [window_majority(target, 2**s) for s in range(len(scales))]})
        results = [[] for _ in methods]
        for seg, centre in spheres:
            for rows, method in zip(results, methods):
                targets = method(target=seg)["target"]
                rows.append([_shift_and_volume(t[0, 0], 2**s, offsets[s][0], centre, seg.sum())
                             for s, t in enumerate(targets) if s > 0])
        for s in range(1, len(scales)):
            cells = []
            for rows in results:
                values = np.array([r[s - 1] for r in rows])
                cells.append(f"{np.nanmean(values[:, 0]):+.2f} (sd {np.nanstd(values[:, 0]):.2f}), "
                             f"{values[:, 1].mean():.3f}")
            name = "unet/di2in" if arch == "unet" else "vnet/tiramisu"
            print(f"{name:14s} {2**s:2d}  " + "  ".join(f"{c:>24s}" for c in cells))


def window_majority(seg: np.ndarray, factor: int) -> np.ndarray:
    """Per window of factor^3 voxels, the label most of them hold (ties: the lowest), binary labels."""
    b, c, *spatial = seg.shape
    windows = seg.reshape(b, c, *[x for n in spatial for x in (n // factor, factor)])
    return (windows.mean(axis=(3, 5, 7)) > 0.5).astype(seg.dtype)


def _shift_and_volume(target: np.ndarray, factor: int, offset: float, centre: np.ndarray, volume: float):
    positions = np.indices(target.shape, dtype=np.float64) * factor + offset
    count = target.sum()
    if count == 0:  # a small sphere missed at a coarse factor: no centroid (its volume ratio 0 still counts)
        return float("nan"), 0.0
    centroid = np.array([(positions[a] * target).sum() / count for a in range(3)])
    return float(np.mean(centroid - centre)), float(count * factor**3 / volume)


def cost(repeats: int) -> None:
    print(f"\nseconds per batch (fastest of {repeats}, alternating): offsets 0 (satnet before) against the "
          f"network's offsets")
    rng = np.random.default_rng(1)
    for name, patch, batch, stages in (("3D Hippocampus-like", (40, 56, 40), 9, 4),
                                       ("3D 128^3", (128, 128, 128), 2, 6),
                                       ("2D 512^2", (512, 512), 12, 8)):
        seg = rng.integers(0, 3, size=(batch, 1) + patch).astype(np.float32)  # float32, as SpatialTransform yields
        transforms = []
        for arch in ("unet", "vnet"):
            net = spec(arch, len(patch), stages)
            scales = deep_supervision_scales(net)
            transforms += [DeepSupervisionTargets(scales, o) for o in (None, deep_supervision_offsets(net))]
        times = [[] for _ in transforms]
        for _ in range(repeats):  # alternating, so that load from other processes hits all alike
            for t, transform in zip(times, transforms):
                t.append(_time(transform, seg))
        cells = [f"{min(t) * 1e3:.2f} ms" for t in times]
        print(f"  {name:20s} B {batch:2d}: unet {cells[0]} -> {cells[1]}, vnet {cells[2]} -> {cells[3]}")


def _time(transform: DeepSupervisionTargets, seg: np.ndarray) -> float:
    start = time.perf_counter()
    transform(target=seg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="spheres (default 200)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per variant (default 50)")
    args = parser.parse_args()
    alignment(args.samples)
    cost(args.repeats)


if __name__ == "__main__":
    main()
