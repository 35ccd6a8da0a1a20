"""Fixtures for the preprocessing tests: a configuration plan built from a few choices."""
from __future__ import annotations

import pytest

from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate, ResamplingPlan


def build_plan(
    spacing, norms: list[ChannelNormalization], spatial_dims: int = 3, num_classes: int = 3, **resampling
) -> ConfigurationPlan:
    """A valid ConfigurationPlan with a tiny network; only what preprocessing reads matters."""
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
    return build_plan
