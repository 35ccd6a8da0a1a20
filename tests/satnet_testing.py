"""Helpers shared by tests in several folders (imported by name: `from satnet_testing import ...`).

They live here rather than in conftest.py because several test folders have a conftest.py of
their own, and `from conftest import` would then pick whichever was imported first.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate, ResamplingPlan

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
