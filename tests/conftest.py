"""Shared fixtures: tiny synthetic datasets written to a temporary folder per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate, ResamplingPlan
from satnet.synthetic import make_dataset_2d_rgb, make_dataset_3d

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def dataset_3d(tmp_path_factory) -> Path:
    """3 cases of 16x20x24 voxels, spacing (3, 1, 1), oblique direction, labels 0..2 (read-only: copy to edit)."""
    return make_dataset_3d(tmp_path_factory.mktemp("raw") / "Dataset900_Synth3D", num_cases=3)


@pytest.fixture(scope="session")
def dataset_2d(tmp_path_factory) -> Path:
    """4 RGB PNG cases of 32x40 pixels with a lesion label (read-only: copy to edit)."""
    return make_dataset_2d_rgb(tmp_path_factory.mktemp("raw") / "Dataset901_Synth2D", num_cases=4)


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/data, or skip the test when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"{path} is absent (../shared/data is only present in the satnet development workspace)")
    return path


def build_plan(
    spacing, norms: list[ChannelNormalization], spatial_dims: int = 3, num_classes: int = 3, **resampling
) -> ConfigurationPlan:
    """A valid ConfigurationPlan with a tiny network; for tests of preprocessing and export."""
    net = NetworkSpec(
        arch="unet", spatial_dims=spatial_dims, in_channels=len(norms), num_classes=num_classes,
        features=[4, 8], kernel_sizes=[[3] * spatial_dims] * 2, strides=[[1] * spatial_dims, [2] * spatial_dims],
    )
    return ConfigurationPlan(
        name=f"{spatial_dims}d", spacing=list(spacing), patch_size=[8] * spatial_dims, batch_size=2,
        normalization=norms, network=net, estimated_memory=MemoryEstimate(0, 0, 0, 0, 0),
        memory_budget_bytes=0, resampling=ResamplingPlan(**resampling),
    )


@pytest.fixture
def make_plan():
    """`make_plan(spacing, norms, spatial_dims=3, num_classes=3, **resampling)` -> ConfigurationPlan."""
    return build_plan
