"""Network topology from a patch size and spacing: strides, kernel sizes, features per stage.

nnU-Net's rule, in (Z, Y, X): an axis is pooled (stride 2) while its feature map stays at least
MIN_FEATURE_MAP voxels after pooling and its current spacing is within 2x of the finest
current spacing among the axes that can still be pooled; an axis whose spacing is more than 2x
the finest gets kernel size 1 (a (1, 3, 3) kernel) until pooling the fine axes has brought it
within 2x, and keeps the full kernel from then on. Features are 32 * 2^stage, capped at 320 (3D)
or 512 (2D).

Until 2026-12-07 the finest spacing was taken over every axis, including one too small to pool
any more, and kernels were derived afresh at each stage: once a thin axis stopped pooling, the
other axes, coarser by then, lost their kernel (a 16x256x256 patch at 3x1x1 mm got a (3, 1, 1)
bottleneck) or stopped pooling early (128x128x8 at 1 mm: 4 stages instead of 6). Plans already
written keep their topology (plans.json stores it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MAX_STAGES = {2: 7, 3: 6}


@dataclass
class Topology:
    strides: list[list[int]]  # per stage, per axis; stage 0 is all 1
    kernel_sizes: list[list[int]]
    features: list[int]

    @property
    def total_stride(self) -> list[int]:
        return [math.prod(s[a] for s in self.strides) for a in range(len(self.strides[0]))]


def derive_topology(patch_size: Sequence[int], spacing: Sequence[float], kernel: int = 3) -> Topology:
    """Topology for a patch (per axis, same length as `spacing`).

    `kernel` is the in-plane kernel size (3 for unet and tiramisu, 5 for vnet); an axis that is
    too coarse to convolve along gets 1.
    """
    dims = len(patch_size)
    current_spacing = [float(s) for s in spacing]
    size = [int(p) for p in patch_size]
    strides = [[1] * dims]
    kernels = [_kernels(current_spacing, kernel, [1] * dims)]
    while len(strides) < MAX_STAGES[dims]:
        poolable = [a for a in range(dims) if size[a] >= 2 * MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(current_spacing[a] for a in poolable)
        stride = [2 if (a in poolable and current_spacing[a] <= 2 * finest) else 1 for a in range(dims)]
        size = [sz // s for sz, s in zip(size, stride)]
        current_spacing = [sp * s for sp, s in zip(current_spacing, stride)]
        strides.append(stride)
        kernels.append(_kernels(current_spacing, kernel, kernels[-1]))
    features = [min(BASE_FEATURES * 2**i, MAX_FEATURES[dims]) for i in range(len(strides))]
    return Topology(strides=strides, kernel_sizes=kernels, features=features)


def _kernels(spacing: Sequence[float], kernel: int, previous: Sequence[int]) -> list[int]:
    """The full kernel along an axis within 2x of the finest spacing, or that had it at the stage before."""
    finest = min(spacing)
    return [kernel if (p == kernel or s <= 2 * finest) else 1 for s, p in zip(spacing, previous)]


def fit_patch_to_topology(patch_size: Sequence[int], spacing: Sequence[float], kernel: int = 3) -> tuple[list[int], Topology]:
    """Round `patch_size` up to multiples of the topology's total stride (re-deriving until stable).

    Rounding up (as nnU-Net does) keeps a patch derived from the median case shape at least that
    large; the data loader pads cases smaller than the patch. Returns the patch and its topology.
    """
    patch = [int(p) for p in patch_size]
    for _ in range(10):
        topo = derive_topology(patch, spacing, kernel)
        stride = topo.total_stride
        fitted = [-(-p // s) * s for p, s in zip(patch, stride)]
        if fitted == patch:
            return patch, topo
        patch = fitted
    return patch, derive_topology(patch, spacing, kernel)
