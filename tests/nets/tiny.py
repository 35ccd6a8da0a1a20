"""Tiny NetworkSpecs shared by the network tests."""
from __future__ import annotations

from satnet.nets.spec import NetworkSpec

SHAPES = {2: (32, 48), 3: (16, 32, 24)}


def tiny_spec(arch: str, dims: int, skip: str = "sat", **changes) -> NetworkSpec:
    """3 stages, features 8-16-32, stride 2, kernel 3; tiramisu: 2 layers per block, growth 4."""
    fields = dict(
        arch=arch, spatial_dims=dims, in_channels=2, num_classes=3, features=[8, 16, 32],
        kernel_sizes=[[3] * dims] * 3, strides=[[1] * dims] + [[2] * dims] * 2, skip=skip,
        convs_per_stage=[2, 2, 2] if arch == "tiramisu" else None, growth_rate=4,
    )
    fields.update(changes)
    return NetworkSpec(**fields)

