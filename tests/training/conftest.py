"""Tiny preprocessed cases and configuration plans for the data loading and augmentation tests."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate
from satnet_testing import write_case


def small_object_case(shape: Sequence[int], channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise image with a 3x3x3 (or thinner where the case is) box of label 1 and a voxel of label 2
    near a corner, so random patches usually miss the foreground."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    seg = np.zeros((1, *shape), dtype=np.int8)
    seg[0, -3:, -3:, -3:] = 1
    seg[0, 0, 0, 0] = 2
    return image, seg


@pytest.fixture(scope="session")
def cases_3d(tmp_path_factory) -> tuple[Path, list[str]]:
    """Four 2-channel cases of different shapes, one smaller than a 16x16x16 patch, one without foreground."""
    folder = tmp_path_factory.mktemp("preprocessed_3d")
    shapes = [(24, 40, 36), (30, 28, 44), (10, 12, 14), (20, 20, 20)]
    for i, shape in enumerate(shapes):
        image, seg = small_object_case(shape, channels=2, seed=i)
        if i == 3:
            seg[:] = 0
        write_case(folder, f"case_{i}", image, seg, seed=i)
    return folder, [f"case_{i}" for i in range(len(shapes))]


@pytest.fixture(scope="session")
def cases_2d(tmp_path_factory) -> tuple[Path, list[str]]:
    """Three 3-channel cases stored as (3, Z, Y, X): two single-slice images and one 5-slice volume."""
    folder = tmp_path_factory.mktemp("preprocessed_2d")
    for i, shape in enumerate([(1, 48, 40), (1, 20, 24), (5, 40, 40)]):
        image, seg = small_object_case(shape, channels=3, seed=10 + i)
        write_case(folder, f"img_{i}", image, seg, seed=i)
    return folder, [f"img_{i}" for i in range(3)]


def _training_plan(
    patch_size: Sequence[int],
    batch_size: int,
    in_channels: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    deep_supervision: bool = True,
    num_classes: int = 3,
    nonzero_mask: bool = False,
) -> ConfigurationPlan:
    """A valid ConfigurationPlan with a 3-stage network of strides 1, 2, 2 per axis."""
    dims = len(patch_size)
    network = NetworkSpec(
        arch="unet", spatial_dims=dims, in_channels=in_channels, num_classes=num_classes, features=[4, 8, 16],
        kernel_sizes=[[3] * dims] * 3, strides=[[1] * dims, [2] * dims, [2] * dims],
        deep_supervision=deep_supervision,
    )
    norm = [ChannelNormalization(channel=str(c), scheme="zscore", use_nonzero_mask=nonzero_mask) for c in range(in_channels)]
    return ConfigurationPlan(
        name=f"{dims}d", spacing=list(spacing), patch_size=list(patch_size), batch_size=batch_size, normalization=norm,
        network=network, estimated_memory=MemoryEstimate(0, 0, 0, 0, 0), memory_budget_bytes=1,
    )


@pytest.fixture(scope="session")
def training_plan():
    """`training_plan(patch_size, batch_size, in_channels, spacing=(1, 1, 1), deep_supervision=True,
    num_classes=3, nonzero_mask=False)` -> ConfigurationPlan (see tests/conftest.py's `preprocessing_plan`
    for plans by spacing and normalization)."""
    return _training_plan
