"""Importance maps that weight each tile's prediction in the sliding window.

A network sees less context near the border of its patch, so its predictions there are less
reliable; nnU-Net therefore weights each tile with a Gaussian centred on the patch (sigma =
patch / 8 per axis) when averaging overlapping tiles. We build the same map, with two choices
written down here:

- The map is the product of sampled 1D Gaussians exp(-d^2 / (2 sigma^2)), evaluated in closed
  form rather than by blurring a delta with `scipy.ndimage.gaussian_filter` as nnU-Net does.
  Both sample the same function; the closed form needs no scipy call, has no 4-sigma truncation
  and is exact in float64 before the cast.
- The centre is (p - 1) / 2, the middle of the patch, rather than nnU-Net's p // 2, so the map
  is symmetric under flips: mirroring test-time augmentation then sees the same weights.

The map is scaled to a peak of 1; any zero (possible only for a tiny sigma_scale, or after an
underflow) is replaced by the smallest non-zero value so every voxel of every tile counts.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from satnet.errors import ConfigError

DEFAULT_SIGMA_SCALE = 1.0 / 8  # nnU-Net's choice: the weight at a patch edge is exp(-8) of the centre's


def check_patch_size(patch_size: Sequence[int]) -> tuple[int, ...]:
    """Return `patch_size` as a tuple of ints; raise ConfigError unless it holds 1 to 3 positive integers."""
    sizes = tuple(patch_size)
    if not 1 <= len(sizes) <= 3 or any(isinstance(p, bool) or int(p) != p or p < 1 for p in sizes):
        raise ConfigError(f"patch_size must be 1 to 3 positive integers (Z, Y, X), not {list(sizes)}")
    return tuple(int(p) for p in sizes)


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = DEFAULT_SIGMA_SCALE) -> torch.Tensor:
    """Gaussian weights for one patch, shape `patch_size`, float32 on the CPU, peak 1, all > 0.

    sigma along each axis is `patch_size[axis] * sigma_scale` voxels. Returns a new tensor that
    the caller may modify; `cached_importance_map` is the shared, read-only version.
    """
    return cached_importance_map(check_patch_size(patch_size), float(sigma_scale)).clone()


@lru_cache(maxsize=8)
def cached_importance_map(patch_size: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    """`gaussian_importance_map`, computed once per (patch_size, sigma_scale). Do not modify the result."""
    check_patch_size(patch_size)
    if not sigma_scale > 0:
        raise ConfigError(f"sigma_scale must be > 0, not {sigma_scale}")
    weights = torch.ones((), dtype=torch.float64)
    for axis, p in enumerate(patch_size):
        d = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        sigma = p * sigma_scale
        profile = torch.exp(-(d**2) / (2 * sigma**2))  # (p,)
        shape = [1] * len(patch_size)
        shape[axis] = p
        weights = weights * profile.reshape(shape)  # outer product, one axis at a time
    weights = (weights / weights.max()).to(torch.float32)
    zero = weights == 0
    if zero.any():
        weights[zero] = weights[~zero].min()
    return weights


def uniform_importance_map(patch_size: Sequence[int]) -> torch.Tensor:
    """Equal weights (all 1), shape `patch_size`, float32 on the CPU: plain averaging of overlaps."""
    return torch.ones(check_patch_size(patch_size), dtype=torch.float32)

