"""The memory model against real CPU training steps of every satnet network (arch x skip x dims x size).

Estimates go through the NetworkSpec path (built on the meta device); measurements run the
same spec's real network. Activations are compared at three sizes, the op-boundary peak of the step at the middle size.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from memory_measure import measure_training_step
from memory_testing import relative
from satnet.nets import build_network
from satnet.nets.spec import ARCH_NAMES, SKIP_MODES, NetworkSpec
from satnet.planning.memory import trace_training_step


# Activations of several MB at every size, so that the ~100 kB of host memory a real step adds
# (autograd nodes, allocator headers) stays well under the 2% tolerance.
SIZES = {2: [(96, 96), (128, 128), (160, 160)], 3: [(24, 24, 24), (32, 32, 32), (40, 40, 40)]}
# DI2IN shares the U-Net's encoder and gates; test_memory_di2in.py checks it at one size (the full grid took 41 s)
ARCHS = tuple(a for a in ARCH_NAMES if a != "di2in")


def spec_for(arch: str, skip: str, dims: int, **changes) -> NetworkSpec:
    kernel = 5 if arch == "vnet" else 3
    # small dense blocks keep the tiramisu's real CPU steps (the slow half of this test) short
    extra = {"convs_per_stage": [2, 2, 3], "growth_rate": 8} if arch == "tiramisu" else {}
    return NetworkSpec(arch=arch, spatial_dims=dims, in_channels=1, num_classes=3, features=[8, 16, 32],
                       kernel_sizes=[[kernel] * dims] * 3, strides=[[1] * dims, [2] * dims, [2] * dims], skip=skip,
                       **extra, **changes)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("arch, skip, dims, size", list(itertools.product(ARCHS, SKIP_MODES, (2, 3), range(3))))
def test_estimate_matches_real_cpu_run(arch, skip, dims, size):
    spec = spec_for(arch, skip, dims)
    patch = SIZES[dims][size]
    torch.manual_seed(0)
    net = build_network(spec)
    est = trace_training_step(spec, patch, 2)
    real = measure_training_step(net, patch, 2, in_channels=1, peak=size == 1, saved=False)
    assert relative(est.activations, real.activations) < 0.02, (est, real)
    if size == 1:
        assert relative(est.peak, real.peak) < 0.02, (est, real)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("arch, dims, changes", list(itertools.product(
    ARCHS, (2, 3), [dict(skip_channels=4), dict(skip_levels=["sat:2", "org"])])))
@pytest.mark.slow
def test_estimate_matches_real_cpu_run_for_k_map_and_per_level_skips(arch, dims, changes):
    spec = spec_for(arch, "sat", dims, **changes)
    patch = SIZES[dims][1]
    torch.manual_seed(0)
    est = trace_training_step(spec, patch, 2)
    real = measure_training_step(build_network(spec), patch, 2, in_channels=1, peak=True, saved=False)
    assert relative(est.activations, real.activations) < 0.02, (est, real)
    assert relative(est.peak, real.peak) < 0.02, (est, real)
