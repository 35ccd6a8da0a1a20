"""Tiny synthetic datasets in nnU-Net's raw layout, for tests and `satnet demo`.

3D: a noisy "body" (non-zero inside, exactly zero outside, so cropping has work to do)
holding up to two ellipsoids of distinct intensity (labels 1 and 2), anisotropic spacing and,
by default, an oblique direction and a non-zero origin, written as NIfTI with SimpleITK.
2D: RGB PNG images with a coloured disc ("lesion", label 1), like the ISIC layout.

Writes files directly with SimpleITK / Pillow (not through satnet.io) so that tests of
satnet.io read data it did not write itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

OBLIQUE_DIRECTION_XYZ = (  # a rotation of 30 degrees about z, as SimpleITK's row-major 3x3
    0.8660254037844387, -0.5, 0.0,
    0.5, 0.8660254037844387, 0.0,
    0.0, 0.0, 1.0,
)


def _ellipsoid(shape: Sequence[int], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii))
    return dist <= 1.0


def synthetic_case_3d(
    shape: Sequence[int], rng: np.random.Generator, num_labels: int = 2, spacing: Sequence[float] = (3.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair, both (Z, Y, X); image float32, label uint8 in 0..num_labels.

    Object radii are given in mm and converted with `spacing`, so objects look round in
    physical space whatever the voxel spacing.
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=float)
    extent_mm = np.asarray(shape) * spacing
    body = _ellipsoid(shape, [s / 2 - 0.5 for s in shape], [s * 0.47 for s in shape])
    image = rng.normal(100.0, 10.0, size=shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    intensities = [60.0, -45.0]
    for k in range(num_labels):
        radius_mm = rng.uniform(0.13, 0.2) * extent_mm.min()
        radii = np.maximum(radius_mm / spacing, 1.0)
        lo = np.ceil(radii + 1)
        hi = np.asarray(shape) - 1 - np.ceil(radii + 1)
        center = [rng.uniform(a, max(a, b)) for a, b in zip(lo, hi)]
        obj = _ellipsoid(shape, center, radii) & body
        label[obj & (label == 0)] = k + 1
        image[obj] += intensities[k % len(intensities)]
    image[~body] = 0.0
    return image, label


def hounsfield_like(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A `synthetic_case_3d` image as a CT-like one in HU, (Z, Y, X) float32: air about -1000 outside the body,
    soft tissue about 40, label 1 about 100 (a contrast-enhanced organ), label 2 about 1200 (bone-like),
    clipped to [-1024, 1500] like a scanner's range."""
    body = image != 0
    hu = np.where(body, image - 60.0, rng.normal(-1000.0, 15.0, size=image.shape))
    hu[label == 2] += 1200.0
    return np.clip(hu, -1024.0, 1500.0).astype(np.float32)


def _write_nifti(array_zyx: np.ndarray, path: Path, spacing_zyx, origin_xyz, direction_xyz) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing([float(s) for s in reversed(spacing_zyx)])
    img.SetOrigin([float(o) for o in origin_xyz])
    img.SetDirection([float(d) for d in direction_xyz])
    sitk.WriteImage(img, str(path), useCompression=True)


def _write_dataset_json(root: Path, channel_names: dict, labels: dict, n: int, ending: str, name: str) -> None:
    data = {
        "name": name,
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": n,
        "file_ending": ending,
    }
    (root / "dataset.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def make_dataset_3d(
    root: str | Path,
    num_cases: int = 3,
    shape: Sequence[int] = (16, 20, 24),
    spacing: Sequence[float] = (3.0, 1.0, 1.0),
    num_labels: int = 2,
    oblique: bool = True,
    seed: int = 0,
    num_test: int = 0,
    channel_name: str = "MRI",
    hounsfield: bool = False,
) -> Path:
    """Write a 3D dataset in nnU-Net raw layout under `root` and return `root`.

    Cases are `case_000`, `case_001`, ...; with `num_test` > 0, further cases go to
    imagesTs/ and labelsTs/. Shapes and spacing are (Z, Y, X). hounsfield: CT-like intensities
    (`hounsfield_like`); pass channel_name="CT" too for CT normalisation.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    direction = OBLIQUE_DIRECTION_XYZ if oblique else (1, 0, 0, 0, 1, 0, 0, 0, 1)
    origin = (-12.5, 30.25, 7.0) if oblique else (0.0, 0.0, 0.0)
    for split, count, offset in (("Tr", num_cases, 0), ("Ts", num_test, num_cases)):
        if count == 0:
            continue
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            case = f"case_{offset + i:03d}"
            image, label = synthetic_case_3d(shape, rng, num_labels, spacing)
            if hounsfield:
                image = hounsfield_like(image, label, rng)
            _write_nifti(image, root / f"images{split}" / f"{case}_0000.nii.gz", spacing, origin, direction)
            _write_nifti(label, root / f"labels{split}" / f"{case}.nii.gz", spacing, origin, direction)
    labels = {"background": 0, **{f"object{k + 1}": k + 1 for k in range(num_labels)}}
    _write_dataset_json(root, {"0": channel_name}, labels, num_cases, ".nii.gz", root.name)
    return root


def make_dataset_2d_rgb(
    root: str | Path, num_cases: int = 4, size: Sequence[int] = (32, 40), seed: int = 0
) -> Path:
    """Write a 2D RGB PNG dataset (one `_0000.png` per case holding R, G, B) under `root`."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    h, w = int(size[0]), int(size[1])
    for i in range(num_cases):
        case = f"img_{i:03d}"
        skin = np.array([200, 160, 140], dtype=float) + rng.normal(0, 8, size=(h, w, 3))
        r = rng.uniform(0.2, 0.3) * min(h, w)
        c = (rng.uniform(r + 1, h - r - 1), rng.uniform(r + 1, w - r - 1))
        disc = _ellipsoid((h, w), c, (r, r))
        skin[disc] = np.array([90, 50, 40]) + rng.normal(0, 8, size=(int(disc.sum()), 3))
        Image.fromarray(np.clip(skin, 0, 255).astype(np.uint8), mode="RGB").save(root / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(disc.astype(np.uint8), mode="L").save(root / "labelsTr" / f"{case}.png")
    _write_dataset_json(root, {"0": "R", "1": "G", "2": "B"}, {"background": 0, "lesion": 1}, num_cases, ".png", root.name)
    return root
