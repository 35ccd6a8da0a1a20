"""Resampling images, labels and probabilities between voxel grids (scipy.ndimage).

Conventions
- Arrays are numpy (C, Z, Y, X) or (Z, Y, X); spacings are mm per voxel in the same order.
- Grids are aligned by their outer edges (scipy's grid_mode=True, the half-voxel convention
  of skimage and nnU-Net): voxel i of an axis covers [i, i + 1) * spacing, so resampling to a
  new shape keeps the physical extent and resampling back lands on the same voxel centres.
- New shapes are round(shape * spacing / target_spacing), at least 1 voxel per axis.

Separate-z (nnU-Net's rule for anisotropic data): when the current spacing, or else the
target spacing, has max / min > anisotropy_threshold and exactly one coarsest axis, that
axis is resampled with nearest neighbour (order 0) and the other two, slice by slice, with
the requested order. Interpolating across 3-5 mm slices with a cubic spline invents
structure between slices that were never acquired; nearest keeps each slice as it was.

Boundary mode: "mirror" for spline orders >= 2 (scipy's spline prefilter supports it
natively, while "nearest" makes scipy pad the array and prefilter a float64 copy; measured in
benchmarks/bench_image_resampling.py), "nearest" (repeat the edge voxel) for orders 0 and 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

LABEL_MODES = ("onehot_linear", "nearest")


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> list[int]:
    """Spatial shape (Z, Y, X) after resampling from `spacing` to `target_spacing` (mm)."""
    if not len(shape) == len(spacing) == len(target_spacing):
        raise ValueError(f"shape {shape}, spacing {spacing} and target {target_spacing} differ in length")
    return [max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing)]


def separate_z_axis(
    spacing: Sequence[float], new_spacing: Sequence[float], anisotropy_threshold: float = 3.0
) -> int | None:
    """The axis to resample with nearest neighbour, or None for plain 3D interpolation.

    The current spacing decides when it is anisotropic (max / min > threshold), else the
    target spacing. Two equally coarse axes (e.g. (1, 3, 3) mm) give None, as in nnU-Net.
    """
    for sp in (np.asarray(spacing, dtype=float), np.asarray(new_spacing, dtype=float)):
        if sp.max() / sp.min() > anisotropy_threshold:
            coarse = np.flatnonzero(sp == sp.max())
            return int(coarse[0]) if coarse.size == 1 else None
    return None


def _choose_axis(
    shape: Sequence[int], new_shape: Sequence[int], spacing: Sequence[float], anisotropy_threshold: float
) -> int | None:
    """The axis to pick by nearest neighbour: separate-z's coarse axis, else an axis whose size
    does not change (picking along it is the identity, exact and cheaper than interpolating
    at the old positions), else None."""
    new_spacing = [s * o / n for s, o, n in zip(spacing, shape, new_shape)]
    axis = separate_z_axis(spacing, new_spacing, anisotropy_threshold)
    if axis is None:
        same = [a for a, (o, n) in enumerate(zip(shape, new_shape)) if o == n]
        axis = same[0] if 0 < len(same) < len(shape) else None
    return axis


def nearest_indices(old_size: int, new_size: int) -> np.ndarray:
    """Source index of each new voxel along one axis: floor((i + 0.5) * old / new), exactly."""
    return (2 * np.arange(new_size, dtype=np.intp) + 1) * old_size // (2 * new_size)


def _zoom(array: np.ndarray, new_shape: Sequence[int], order: int, out: np.ndarray) -> None:
    """Interpolate `array` (any rank) onto `new_shape` with a spline of `order`, into `out`."""
    if tuple(array.shape) == tuple(new_shape):
        out[...] = array
        return
    factors = [n / o for n, o in zip(new_shape, array.shape)]
    mode = "mirror" if order >= 2 else "nearest"
    ndimage.zoom(array, factors, output=out, order=order, mode=mode, grid_mode=True)


def _resize(array: np.ndarray, new_shape: Sequence[int], order: int, axis: int | None, out: np.ndarray) -> None:
    """Resample one (Z, Y, X) volume into `out` (new_shape), separately along `axis` when given.

    Along `axis` the voxels are picked by nearest neighbour, the other axes are interpolated
    slice by slice. Picking commutes with per-slice work, so it goes first when it drops
    slices and last when it repeats them: fewest slices to interpolate either way.
    """
    if axis is None:
        _zoom(array, new_shape, order, out)
        return
    pick = nearest_indices(array.shape[axis], new_shape[axis])
    slices = np.moveaxis(array, axis, 0)  # (S, a, b), a view
    target = np.moveaxis(out, axis, 0)  # (S', a', b'), a view into out
    if len(pick) <= slices.shape[0]:
        for dst, src in zip(target, pick):
            _zoom(slices[src], dst.shape, order, dst)
        return
    inplane = np.empty((slices.shape[0],) + target.shape[1:], dtype=out.dtype)
    for dst, src in zip(inplane, slices):
        _zoom(src, dst.shape, order, dst)
    for dst, src in zip(target, pick):
        dst[...] = inplane[src]


def resample_image(
    data: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float] | None = None,
    *,
    new_shape: Sequence[int] | None = None,
    order: int = 3,
    anisotropy_threshold: float = 3.0,
) -> np.ndarray:
    """Resample an image (C, Z, Y, X) to `target_spacing` or to `new_shape` (give one).

    spacing: the image's (Z, Y, X) mm per voxel. order: spline order (3 = cubic). Returns a
    new float32 array (C, z, y, x); separate-z as in the module docstring.
    """
    if (target_spacing is None) == (new_shape is None):
        raise ValueError("give exactly one of target_spacing and new_shape")
    shape = data.shape[1:]
    if new_shape is None:
        new_shape = compute_new_shape(shape, spacing, target_spacing)
    new_shape = [int(n) for n in new_shape]
    axis = _choose_axis(shape, new_shape, spacing, anisotropy_threshold)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)  # (C, z, y, x)
    for channel, dst in zip(data, out):
        _resize(channel.astype(np.float32, copy=False), new_shape, order, axis, dst)
    return out


def resample_probabilities(
    probs: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float], order: int = 1,
    anisotropy_threshold: float = 3.0,
) -> np.ndarray:
    """Resample class probabilities (K, Z, Y, X) at `spacing` to `new_shape`: float32 (K, z, y, x).

    Linear by default: it keeps every value in [0, 1] and the classes summing to 1, which a
    cubic spline (overshoot) would not. Separate-z as for images.
    """
    return resample_image(probs, spacing, new_shape=new_shape, order=order, anisotropy_threshold=anisotropy_threshold)


def resample_label(
    seg: np.ndarray,
    new_shape: Sequence[int],
    spacing: Sequence[float],
    mode: str = "onehot_linear",
    anisotropy_threshold: float = 3.0,
) -> np.ndarray:
    """Resample a label map (Z, Y, X) of values 0..K at `spacing` to `new_shape`; same dtype out.

    - "onehot_linear": each foreground label as a 0/1 volume, linearly interpolated
      (separate-z: nearest along the coarse axis); background is 1 minus their sum; argmax.
      Ties go to background, then to the lower label. Costs one interpolation per label
      present.
    - "nearest": each new voxel takes the label of the old voxel its centre falls in.
    The default and its measurement: docs/preprocessing.md.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, not {mode!r}")
    new_shape = [int(n) for n in new_shape]
    if list(seg.shape) == new_shape:
        return seg.copy()
    if mode == "nearest":
        return seg[np.ix_(*(nearest_indices(o, n) for o, n in zip(seg.shape, new_shape)))]
    axis = _choose_axis(seg.shape, new_shape, spacing, anisotropy_threshold)
    out = np.zeros(new_shape, dtype=seg.dtype)
    best = np.zeros(new_shape, dtype=np.float32)  # highest foreground score so far
    foreground = np.zeros(new_shape, dtype=np.float32)  # sum of foreground scores
    score = np.empty(new_shape, dtype=np.float32)
    for label in range(1, int(seg.max(initial=0)) + 1):
        onehot = seg == label
        if not onehot.any():
            continue
        _resize(onehot.astype(np.float32), new_shape, 1, axis, score)
        foreground += score
        wins = score > best
        best[wins] = score[wins]
        out[wins] = label
    out[1.0 - foreground >= best] = 0
    return out
