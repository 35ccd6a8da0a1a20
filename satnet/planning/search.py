"""The patch search: the largest balanced patch whose exact training-step memory fits the budget.

nnU-Net shrinks its starting patch one axis at a time by the network's total stride (16 or 32
voxels). Those steps change the patch volume by 20-33%, so a network that needs 7-10% less
memory (what SAT gates save on a 3D U-Net) usually lands on the very same patch. satnet instead
searches every legal patch, i.e. every patch that is divisible by the total stride of the
topology derived from it (sizes 4..7 x 2^n along a pooled axis, steps of 12-25%), that is
no larger than the starting patch and balanced (the patch-to-median ratios of the axes differ by
at most MAX_SPREAD), largest volume first, and returns the first whose exact estimate fits.

Exact estimates cost 0.3-1 s each at large patches, so the search does not run one per
candidate. For one topology (the network is a function of it), memory is a volume-independent
part (parameters, gradients, optimiser state: exact for every patch of that topology) plus a part
nearly proportional to the patch volume. Once a topology has been estimated, its constant plus
its smallest bytes per voxel seen, less MARGIN, bound the memory of its later candidates from
below, and a candidate whose bound exceeds the budget is skipped without an estimate; a topology
not seen yet is always estimated. The first candidate estimated to fit is the answer, so a
fitting patch is never skipped unless its bytes per voxel fall more than MARGIN below those of a
larger patch of the same topology.

The bound is kept per topology because the constant part is not shared: smaller patches get
fewer stages and far fewer parameters. An earlier bound took the smallest constant seen over all
topologies, which at small budgets (under about 0.3 GiB for a CT-like dataset) skipped every
patch that fitted: `--gpu-memory-gb 0.3` planned 24x24x20 at batch 26 instead of 48x48x48 at
batch 2, and 0.2 failed outright.
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


def legal_candidates(
    cap: Sequence[int], median: Sequence[int], spacing: Sequence[float], kernel: int
) -> Iterator[tuple[list[int], Topology]]:
    """The balanced legal patches (see module docstring) with their topologies, largest volume first."""
    for patch in balanced_candidates(cap, median):
        fitted, topo = fit_patch_to_topology(patch, spacing, kernel)
        if fitted == patch and len(topo.strides) >= 2:  # an encoder-decoder needs at least one downsampling
            yield patch, topo


def largest_fitting_patch(
    cap: Sequence[int], median: Sequence[int], spacing: Sequence[float], kernel: int, budget: int, estimate: Estimate
) -> tuple[list[int], Topology, MemoryEstimate] | None:
    """The first balanced legal patch (see module docstring) whose estimate fits `budget`, or None."""
    seen: dict[str, tuple[int, float]] = {}  # per topology: constant part, smallest bytes per voxel seen
    for patch, topo in legal_candidates(cap, median, spacing, kernel):
        volume = float(math.prod(patch))
        key = repr(topo)
        if key in seen:
            constant, per_voxel = seen[key]
            if (constant + per_voxel * volume) * (1 - MARGIN) > budget:
                continue  # surely too large: skip the exact estimate
        est = estimate(topo, patch)
        constant = est.parameters + est.gradients + est.optimizer
        per_voxel = (est.total - constant) / volume
        if key in seen:
            per_voxel = min(per_voxel, seen[key][1])
        seen[key] = (constant, per_voxel)
        if est.total <= budget:
            return patch, topo, est
    return None


def smallest_legal_patch(cap: Sequence[int], median: Sequence[int], spacing: Sequence[float],
                         kernel: int) -> tuple[list[int], Topology] | None:
    """The smallest patch largest_fitting_patch would try (with its topology), or None if it tries none."""
    last = None
    for last in legal_candidates(cap, median, spacing, kernel):
        pass
    return last
