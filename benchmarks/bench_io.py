"""Time satnet.io reading against the bare libraries, and check_dataset on whole datasets.

Run by hand from the repository root after `pip install -e .` (needs ../shared/data):

    python benchmarks/bench_io.py [--cases 50] [--workers 1 2]

Per-file times are the median of `--repeats` passes over `--cases` cases, measured side by
side in one run (the machine is shared, so compare ratios). Writes docs/benchmarks/io.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from satnet.io.checks import check_dataset
from satnet.io.images import read_image, read_label

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "io.md"


def per_file_ms(fn, files, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for f in files:
            fn(f)
        times.append((time.perf_counter() - start) / len(files) * 1e3)
    return statistics.median(times)


def bare_sitk(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def bare_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.moveaxis(np.asarray(image), -1, 0).astype(np.float32)


def bare_nibabel(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    load = os.getloadavg()[0]
    hippo, isic = DATA / "Dataset004_Hippocampus", DATA / "Dataset017_ISIC2017"
    h_images = sorted((hippo / "imagesTr").iterdir())[: args.cases]
    h_labels = sorted((hippo / "labelsTr").iterdir())[: args.cases]
    i_images = sorted((isic / "imagesTr").iterdir())[: args.cases]
    i_labels = sorted((isic / "labelsTr").iterdir())[: args.cases]
    rows = [
        ("Hippocampus image (.nii.gz, 1 channel)", per_file_ms(lambda f: read_image([f]), h_images, args.repeats),
         f"SimpleITK {per_file_ms(bare_sitk, h_images, args.repeats):.2f}, nibabel "
         f"{per_file_ms(bare_nibabel, h_images, args.repeats):.2f}"),
        ("Hippocampus label (.nii.gz)", per_file_ms(read_label, h_labels, args.repeats),
         f"SimpleITK {per_file_ms(bare_sitk, h_labels, args.repeats):.2f}"),
        ("ISIC image (.png, RGB 256x256)", per_file_ms(lambda f: read_image([f]), i_images, args.repeats),
         f"Pillow {per_file_ms(bare_pillow, i_images, args.repeats):.2f}"),
        ("ISIC label (.png)", per_file_ms(read_label, i_labels, args.repeats),
         f"Pillow {per_file_ms(lambda f: np.asarray(Image.open(f)), i_labels, args.repeats):.2f}"),
    ]
    lines = [
        "# satnet.io reading speed",
        "",
        f"`python benchmarks/bench_io.py --cases {args.cases}` on {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}; median of {args.repeats} passes over {args.cases} files, ms per file. "
        f"Load average at the start: {load:.1f} on {os.cpu_count()} CPUs (a shared machine: compare within a run).",
        "",
        "| file | satnet.io | bare library, same run |",
        "|---|---|---|",
        *[f"| {name} | {ms:.2f} | {bare} |" for name, ms, bare in rows],
        "",
        "check_dataset on the whole dataset (every image and label read and checked):",
        "",
        "| dataset | cases | workers | seconds |",
        "|---|---|---|---|",
    ]
    for root in (hippo, isic):
        for workers in args.workers:
            start = time.perf_counter()
            raw = check_dataset(root, workers=workers)
            lines.append(f"| {root.name} | {len(raw.cases)} | {workers} | {time.perf_counter() - start:.1f} |")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
