"""The patch search: the largest balanced patch whose exact training-step memory fits the budget.

nnU-Net shrinks its starting patch one axis at a time by the network's total stride (16 or 32
voxels). Those steps change the patch volume by 20-33%, so a network that needs 7-10% less
memory (what SAT gates save on a 3D U-Net) usually lands on the very same patch. satnet instead
searches every legal patch, i.e. every patch that is divisible by the total stride of the
topology derived from it (sizes 4..7 x 2^n along a pooled axis, steps of 12-25%), that is
no larger than the starting patch and balanced (the patch-to-median ratios of the axes differ by
at most MAX_SPREAD), largest volume first, and returns the first whose exact estimate fits.

Exact estimates cost 0.3-1 s each at large patches, so the search does not run one per
candidate. Memory is a volume-independent part (parameters, gradients, optimiser state) plus a
part proportional to the patch volume, whose bytes per voxel hardly depend on the topology
(the full-resolution stages dominate). The smallest of each part seen so far, less MARGIN,
bounds every later candidate's memory from below, and candidates whose bound exceeds the budget
are skipped without an estimate; the first candidate estimated to fit is the answer, so a
fitting patch is never skipped unless a topology's bytes per voxel fall more than MARGIN below
the smallest seen.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np

from satnet.planning.plans import MemoryEstimate
from satnet.planning.topology import Topology, fit_patch_to_topology

MAX_SPREAD = 1.25  # max over axes of min(patch/median, 1), divided by the min over axes
MARGIN = 0.05  # how far below its estimate a topology's bytes per voxel may lie (measured: within 3%)

Estimate = Callable[[Topology, Sequence[int]], MemoryEstimate]


def legal_sizes(cap: int) -> list[int]:
    """Sizes an axis can take up to `cap`: 1..7, then m * 2^n for m in 4..7 (never more)."""
    sizes = set(range(1, min(cap, 7) + 1))
    n = 1
    while 4 * 2**n <= cap:
        sizes.update(m * 2**n for m in range(4, 8) if m * 2**n <= cap)
        n += 1
    sizes.add(cap)
    return sorted(sizes)


def balanced_candidates(cap: Sequence[int], median: Sequence[int]) -> Iterator[list[int]]:
    """Balanced patches no larger than `cap`, largest volume first (ties: most balanced, then largest axes)."""
    grids = np.meshgrid(*[np.array(legal_sizes(c)) for c in cap], indexing="ij")
    patches = np.stack([g.ravel() for g in grids], axis=1)  # (N, dims)
    ratios = np.minimum(patches / np.maximum(np.asarray(median, dtype=float), 1.0), 1.0)
    spread = ratios.max(axis=1) / ratios.min(axis=1)
    keep = spread <= MAX_SPREAD + 1e-9
    patches, spread = patches[keep], spread[keep]
    volume = np.prod(patches.astype(float), axis=1)
    order = np.lexsort([*(-patches[:, a] for a in reversed(range(patches.shape[1]))), spread, -volume])
    for i in order:
        yield [int(v) for v in patches[i]]


def largest_fitting_patch(
    cap: Sequence[int], median: Sequence[int], spacing: Sequence[float], kernel: int, budget: int, estimate: Estimate
) -> tuple[list[int], Topology, MemoryEstimate] | None:
    """The first balanced legal patch (see module docstring) whose estimate fits `budget`, or None."""
    fixed = math.inf  # smallest volume-independent part seen (parameters, gradients, optimiser state)
    per_voxel = math.inf  # smallest volume-dependent bytes per patch voxel seen
    for patch in balanced_candidates(cap, median):
        fitted, topo = fit_patch_to_topology(patch, spacing, kernel)
        if fitted != patch or len(topo.strides) < 2:  # an encoder-decoder needs at least one downsampling
            continue
        volume = float(math.prod(patch))
        if per_voxel < math.inf and (fixed + per_voxel * volume) * (1 - MARGIN) > budget:
            continue  # surely too large: skip the exact estimate
        est = estimate(topo, patch)
        constant = est.parameters + est.gradients + est.optimizer
        fixed = min(fixed, constant)
        per_voxel = min(per_voxel, (est.total - constant) / volume)
        if est.total <= budget:
            return patch, topo, est
    return None
