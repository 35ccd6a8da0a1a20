"""The planner sizes DI2IN under the memory budget like the other networks; its plans.json round-trips."""
from __future__ import annotations

import json
import math

import pytest

from satnet.contracts import dumps_json
from satnet.planning.fingerprint import synthetic_fingerprint
from satnet.planning.planner import PlannerOptions, plan_experiment
from satnet.planning.plans import Plans

GIB = 1024**3
BUDGET_GB = 0.2  # binds for these small CT-like cases (24x64x64 at 2.5x0.8x0.8 mm) and keeps the search short
MEDIAN = (24, 64, 64)


@pytest.fixture(scope="module")
def plans() -> Plans:
    ct = synthetic_fingerprint(num_cases=20, shape=MEDIAN, spacing=(2.5, 0.8, 0.8), jitter=0.0, crop_fraction=1.0)
    options = PlannerOptions(gpu_memory_gb=BUDGET_GB, arch="di2in", skip="sat", configs=["3d"], spacing="auto")
    return plan_experiment(ct, options)[0]


def test_di2in_plan_fits_a_binding_budget(plans):
    (conf,) = plans.configurations.values()
    net = conf.network
    assert net.arch == "di2in" and net.deep_supervision and net.skip == "sat"
    assert conf.estimated_memory.total <= BUDGET_GB * GIB
    assert math.prod(conf.patch_size) < math.prod(MEDIAN)  # the budget binds: the median case does not fit
    assert all(p % t == 0 for p, t in zip(conf.patch_size, net.total_stride()))
    assert net.kernel_sizes[0] == [1, 3, 3]  # 2.5 mm slices: no convolution across them at first


def test_di2in_plans_round_trip(plans):
    assert Plans.from_dict(json.loads(dumps_json(plans))) == plans
    assert plans.planner.arch == "di2in"
