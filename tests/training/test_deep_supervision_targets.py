"""Deep-supervision targets sampled on the network's own grid (satnet.nets.deep_supervision_offsets)."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from satnet.errors import ConfigError
from satnet.nets import NetworkSpec, deep_supervision_offsets, deep_supervision_scales
from satnet.training.augmentation import DeepSupervisionTargets
from satnet.training.pipeline import get_validation_pipeline


def network(arch: str, stages: int = 4) -> NetworkSpec:
    return NetworkSpec(arch=arch, spatial_dims=3, in_channels=1, num_classes=2, features=[4] * stages,
                       kernel_sizes=[[3, 3, 3]] * stages, strides=[[1, 1, 1]] + [[2, 2, 2]] * (stages - 1))


def sphere(centre, radius: float, size: int = 48) -> np.ndarray:
    grid = np.indices((size,) * 3, dtype=np.float64)
    inside = sum((grid[a] - centre[a]) ** 2 for a in range(3)) <= radius**2
    return inside.astype(np.float32)[None, None]  # (1, 1, Z, Y, X), float32 as SpatialTransform yields


def centroid_shift(target: np.ndarray, factor: int, offset: float, centre) -> np.ndarray:
    """Per axis, the target's centroid with its voxel i placed at factor * i + offset, minus `centre`."""
    positions = np.indices(target.shape, dtype=np.float64) * factor + offset
    return np.array([(positions[a] * target).sum() / target.sum() for a in range(3)]) - centre


def test_whole_offsets_are_sampled_exactly():
    seg = np.random.default_rng(0).integers(0, 3, size=(2, 1, 12, 6, 9)).astype(np.float32)
    full, half, third = DeepSupervisionTargets([[1, 1, 1], [0.5, 0.5, 1], [1 / 3, 1 / 3, 1 / 3]],
                                               [[0, 0, 0], [0, 1, 0], [1, 1, 1]])(target=seg)["target"]
    assert full is seg or np.array_equal(full, seg)
    assert np.array_equal(half, seg[:, :, ::2, 1::2, :]) and half.flags.c_contiguous
    assert np.array_equal(third, seg[:, :, 1::3, 1::3, 1::3])  # an odd factor's centre is a voxel
    default = DeepSupervisionTargets([[1, 1, 1], [0.5, 0.5, 0.5]])(target=seg)["target"]
    assert np.array_equal(default[1], seg[:, :, ::2, ::2, ::2])  # unet, di2in: every f-th from the first


def test_half_offsets_take_either_nearest_voxel_per_sample_and_axis():
    seg = np.random.default_rng(1).integers(0, 5, size=(16, 1, 8, 8, 8)).astype(np.float32)
    np.random.seed(0)
    quarter = DeepSupervisionTargets([[0.25] * 3], [[1.5] * 3])(target=seg)["target"][0]
    assert quarter.shape == (16, 1, 2, 2, 2)
    chosen = set()
    for b in range(16):
        starts = [s for s in itertools.product((1, 2), repeat=3)
                  if np.array_equal(quarter[b], seg[b, :, s[0]::4, s[1]::4, s[2]::4])]
        assert len(starts) == 1, f"sample {b} is none of the 8 samplings around the centres"
        chosen.add(starts[0])
    assert len(chosen) > 4  # drawn, not fixed


@pytest.mark.parametrize("arch", ["vnet", "tiramisu", "unet", "di2in"])
def test_targets_are_centred_on_the_networks_coarse_grid(arch):
    """A sphere's targets, placed where the network puts its output voxels, have the sphere's centre (on
    average over the draws): before, vnet and tiramisu targets were (f - 1) / 2 input voxels off."""
    spec = network(arch)
    scales, offsets = deep_supervision_scales(spec), deep_supervision_offsets(spec)
    rng = np.random.default_rng(2)
    np.random.seed(2)
    transform = DeepSupervisionTargets(scales, offsets)
    block = arch in ("vnet", "tiramisu")  # where the network puts output voxel i: f*i (+ (f - 1) / 2 for
    # kernel = stride downsampling), as tests/nets/test_deep_supervision_geometry.py measures
    shifts = {1: [], 2: []}
    for _ in range(40):
        centre = rng.uniform(19, 28, size=3)
        for level, target in enumerate(transform(target=sphere(centre, 9.0))["target"]):
            if level:
                placed = (2**level - 1) / 2 if block else 0.0
                shifts[level].append(centroid_shift(target[0, 0], 2**level, placed, centre))
    for level, values in shifts.items():
        assert np.abs(np.mean(values, axis=0)).max() < 0.15, (level, np.mean(values, axis=0))


def test_offsets_must_fit_the_scales():
    with pytest.raises(ConfigError, match="one entry per scale"):
        DeepSupervisionTargets([[1, 1], [0.5, 0.5]], [[0, 0]])
    with pytest.raises(ConfigError, match="whole or half voxels"):
        DeepSupervisionTargets([[0.5, 0.5]], [[0.25, 0]])
    with pytest.raises(ConfigError, match="whole or half voxels"):
        DeepSupervisionTargets([[0.5, 0.5]], [[2, 0]])


@pytest.mark.parametrize("arch, starts", [("vnet", (0, 1)), ("unet", (0, 0))])
def test_the_pipelines_sample_on_the_networks_grid(cases_3d, training_plan, arch, starts):
    folder, ids = cases_3d
    plan = training_plan([8, 8, 8], 6, in_channels=2)
    plan = dataclasses.replace(plan, network=plan.network.replace(arch=arch))
    pipeline = get_validation_pipeline(folder, ids, plan, num_workers=0, seed=0, deep_supervision_outputs=2)
    targets, = [t for t in pipeline.transform.transforms if isinstance(t, DeepSupervisionTargets)]
    assert targets.samples[1] == [(2, *starts)] * 3  # (factor, the voxels either side of the centre)
    full, half = next(pipeline)["target"]
    for b in range(full.shape[0]):
        candidates = [full[b, :, z::2, y::2, x::2] for z, y, x in itertools.product(set(starts), repeat=3)]
        assert any(half[b].equal(c) for c in candidates)
