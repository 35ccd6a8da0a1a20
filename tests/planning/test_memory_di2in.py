"""The memory model against real CPU training steps of DI2IN: plain and SAT skips in 3D, k maps over anisotropic
strides, and a per-level mix with ST in 2D (at and st skips are the U-Net's gates, checked in test_memory_nets.py).

The estimate (the spec built on the meta device) must be within 5% of the bytes autograd saved for backward in
a real step, and within 2% of the activations the step held, as for the other networks (test_memory_nets.py).
"""
from __future__ import annotations

import pytest
import torch

from memory_measure import measure_training_step
from memory_testing import relative
from satnet.nets import build_network
from satnet.nets.spec import NetworkSpec
from satnet.planning.memory import trace_training_step


CASES = [  # dims, patch, changes
    (3, (32, 32, 32), dict(skip="org")),
    (3, (32, 32, 32), dict(skip="sat")),
    (3, (16, 32, 32), dict(skip="at", skip_channels=4, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])),
    (2, (128, 128), dict(skip="sat", skip_levels=["sat:2", "st"])),
]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("dims, patch, changes", CASES)
def test_di2in_estimate_matches_saved_bytes_of_a_real_step(dims, patch, changes):
    fields = dict(arch="di2in", spatial_dims=dims, in_channels=1, num_classes=3, features=[8, 16, 32],
                  kernel_sizes=[[3] * dims] * 3, strides=[[1] * dims] + [[2] * dims] * 2)
    spec = NetworkSpec(**{**fields, **changes})
    torch.manual_seed(0)
    est = trace_training_step(spec, patch, 2)
    real = measure_training_step(build_network(spec), patch, 2, in_channels=1, peak=False, saved=True)
    assert relative(est.saved, real.saved) < 0.05, (est, real)
    assert relative(est.activations, real.activations) < 0.02, (est, real)
