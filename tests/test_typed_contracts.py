"""PlannerOptions (plans.json's `planner`) and CheckpointMeta are typed, and the files they describe keep their bytes."""
from __future__ import annotations

import json

from satnet.contracts import dumps_json
from satnet.io.checkpoints import REQUIRED_KEYS, CheckpointMeta
from satnet.planning.plans import PlannerOptions, Plans
from tests.inference.fakes import tiny_plans

# The `planner` object as plans.json has always written it (PlannerOptions.as_dict before it was typed).
PLANNER_KEYS = ["gpu_memory_gb", "arch", "skip", "skip_channels", "skip_levels", "spacing", "configs", "optimizer",
                "precision", "gate_init"]


def test_planner_options_write_the_same_object_and_read_it_back():
    options = PlannerOptions(gpu_memory_gb=8, spacing=[1, 2, 2], configs=("3d",), skip_levels=["sat:4", "org"])
    data = options.to_dict()
    assert list(data) == PLANNER_KEYS and data == options.as_dict()
    assert data["spacing"] == [1.0, 2.0, 2.0] and data["configs"] == ["3d"] and data["gpu_memory_gb"] == 8
    assert PlannerOptions.from_dict(json.loads(json.dumps(data))) == options


def test_old_planner_objects_load_with_their_meaning():
    assert PlannerOptions.from_dict({}).precision == "fp32"  # sized for fp32 before the planner recorded it
    assert PlannerOptions.from_dict({"gpu_memory_gb": 24.0, "arch": "vnet"}) == PlannerOptions(
        gpu_memory_gb=24.0, arch="vnet", precision="fp32")


def test_plans_json_keeps_its_bytes_through_a_load_and_a_save():
    plans = tiny_plans()
    plans.planner = PlannerOptions(gpu_memory_gb=8.0)
    text = dumps_json(plans)
    again = Plans.from_dict(json.loads(text))
    assert isinstance(again.planner, PlannerOptions) and dumps_json(again) == text
    legacy = json.loads(text) | {"planner": {}}  # a plans.json written with an empty planner (tests, old files)
    assert Plans.from_dict(legacy).planner == PlannerOptions(precision="fp32")


def test_checkpoint_meta_lays_out_the_checkpoint_as_before_and_reads_it_back():
    meta = CheckpointMeta(config="3d", fold="0", network={"arch": "unet"}, plans_json="{}", epoch=3,
                          satnet_version="x")
    ckpt = meta.checkpoint({"w": 1}, optimizer={}, log={})
    assert list(ckpt) == ["format_version", "satnet_version", "config", "fold", "network", "plans_json", "state_dict",
                          "epoch", "optimizer", "log"]
    assert set(REQUIRED_KEYS) <= set(ckpt) and CheckpointMeta.of(ckpt) == meta
    old = {k: v for k, v in ckpt.items() if k != "satnet_version"} | {"fold": 0}  # no version, an int fold
    assert CheckpointMeta.of(old) == CheckpointMeta("3d", "0", {"arch": "unet"}, "{}", 3)
