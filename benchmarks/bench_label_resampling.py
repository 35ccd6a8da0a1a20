"""Which label resampling mode should be the default: "onehot_linear" or "nearest"?

Two measurements, both printed as markdown tables (paste into docs/preprocessing.md):

1. Hippocampus (../shared/data/Dataset004_Hippocampus, 1 mm isotropic, labels 1 and 2):
   resample each label to 2 mm and back to 1 mm with the same mode; Dice per label against
   the original, and the time of both resamplings per case (beside the time of resampling an
   image of the same shape with the cubic spline, for scale).
2. Synthetic objects with a known truth: ellipsoids defined in mm are rasterised (voxel
   centres inside) on a source grid and on a target grid; the source label is resampled to
   the target grid and compared with the target rasterisation. Big objects (radii 6-12 mm)
   and small ones (radii 1.5-3 mm), downsampling, upsampling and an anisotropic source.

Run from the repository root:  python benchmarks/bench_label_resampling.py [--cases N]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from satnet.preprocessing.resample import LABEL_MODES, compute_new_shape, resample_image, resample_label

HIPPOCAMPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Dataset004_Hippocampus"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2.0 * np.sum(a & b) / total) if total else 1.0


def hippocampus_table(num_cases: int) -> str:
    import SimpleITK as sitk

    files = sorted((HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))[:num_cases]
    if not files:
        return f"(Hippocampus skipped: no labels under {HIPPOCAMPUS})\n"
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(f))).astype(np.int8) for f in files]
    rows = ["| mode | Dice label 1 | Dice label 2 | ms per case (down + up) |", "|---|---|---|---|"]
    start = time.perf_counter()  # for scale: the cubic resampling of an image of the same shape
    for seg in labels:
        image = seg[None].astype(np.float32)
        small = resample_image(image, [1.0] * 3, [2.0] * 3)
        resample_image(small, [2.0] * 3, new_shape=seg.shape)
    rows.append(f"| (image, cubic, for scale) | | | {1000 * (time.perf_counter() - start) / len(labels):.2f} |")
    for mode in LABEL_MODES:
        scores, seconds = [], 0.0
        for seg in labels:
            start = time.perf_counter()
            small = resample_label(seg, compute_new_shape(seg.shape, [1.0] * 3, [2.0] * 3), [1.0] * 3, mode=mode)
            back = resample_label(small, seg.shape, [2.0] * 3, mode=mode)
            seconds += time.perf_counter() - start
            scores.append([dice(back == k, seg == k) for k in (1, 2)])
        mean = np.mean(scores, axis=0)
        rows.append(f"| {mode} | {mean[0]:.4f} | {mean[1]:.4f} | {1000 * seconds / len(labels):.2f} |")
    return f"Hippocampus, {len(labels)} cases, 1 mm -> 2 mm -> 1 mm:\n\n" + "\n".join(rows) + "\n"


def rasterise(extent_mm, spacing, objects) -> np.ndarray:
    """Label map of the ellipsoids [(label, centre_mm, radii_mm)] sampled at voxel centres."""
    shape = [int(round(e / s)) for e, s in zip(extent_mm, spacing)]
    centres = np.ogrid[tuple(slice(0, n) for n in shape)]
    centres = [(c + 0.5) * s for c, s in zip(centres, spacing)]
    seg = np.zeros(shape, dtype=np.int8)
    for label, centre, radii in objects:
        inside = sum(((c - m) / r) ** 2 for c, m, r in zip(centres, centre, radii)) <= 1.0
        seg[inside & (seg == 0)] = label
    return seg


def random_objects(rng, extent_mm, radius_range, count) -> list:
    objects = []
    for i in range(count):
        radii = rng.uniform(*radius_range, size=3)
        centre = [rng.uniform(r + 1, e - r - 1) for r, e in zip(radii, extent_mm)]
        objects.append((1 + i % 2, centre, radii))
    return objects


def synthetic_table(repeats: int = 20) -> str:
    extent = (48.0, 48.0, 48.0)
    scenarios = [  # name, source spacing, target spacing
        ("down 1 -> 2 mm", (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),
        ("up 2 -> 1 mm", (2.0, 2.0, 2.0), (1.0, 1.0, 1.0)),
        ("up 1.5 -> 0.8 mm", (1.5, 1.5, 1.5), (0.8, 0.8, 0.8)),
        ("(4, 1.5, 1.5) -> 1 mm (separate-z)", (4.0, 1.5, 1.5), (1.0, 1.0, 1.0)),
    ]
    rows = ["| objects | scenario | mode | mean Dice | min Dice | ms per case |", "|---|---|---|---|---|---|"]
    for size_name, radius_range, count in (("big (6-12 mm)", (6.0, 12.0), 2), ("small (1.5-3 mm)", (1.5, 3.0), 6)):
        for name, source, target in scenarios:
            for mode in LABEL_MODES:
                rng = np.random.default_rng(0)
                scores, seconds = [], 0.0
                for _ in range(repeats):
                    objects = random_objects(rng, extent, radius_range, count)
                    seg, truth = rasterise(extent, source, objects), rasterise(extent, target, objects)
                    start = time.perf_counter()
                    out = resample_label(seg, truth.shape, source, mode=mode)
                    seconds += time.perf_counter() - start
                    scores += [dice(out == k, truth == k) for k in (1, 2) if (truth == k).any()]
                rows.append(
                    f"| {size_name} | {name} | {mode} | {np.mean(scores):.4f} | {np.min(scores):.4f} | "
                    f"{1000 * seconds / repeats:.2f} |"
                )
    return f"Synthetic ellipsoids in a 48 mm cube, {repeats} random draws per row:\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="Hippocampus cases to use (default: all 200)")
    parser.add_argument("--repeats", type=int, default=20, help="random draws per synthetic row")
    args = parser.parse_args()
    print(hippocampus_table(args.cases))
    print(synthetic_table(args.repeats))


if __name__ == "__main__":
    main()
