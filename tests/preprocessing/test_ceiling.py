"""The resampling ceiling: Dice of a perfect prediction after the round trip to the planned spacing and back."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np

from satnet.planning.plans import ChannelNormalization
from satnet.preprocessing.ceiling import ceiling_warning, dice_per_label, round_trip
from satnet.preprocessing.stage import plan as plan_stage
from satnet.planning.planner import PlannerOptions
from satnet.synthetic import make_dataset_3d
from satnet_testing import build_plan


def _plan(spacing, axis_order=(0, 1, 2)):
    """A 3d plan at `spacing` (in `axis_order`, as plans.json holds it)."""
    return dataclasses.replace(build_plan(spacing, [ChannelNormalization(channel="MRI", scheme="zscore")]),
                               axis_order=list(axis_order))


def _geometry(shape, spacing):
    return SimpleNamespace(shape=tuple(shape), spacing=tuple(spacing))


def test_labels_already_on_the_target_grid_keep_dice_1():
    seg = np.zeros((12, 16, 16), dtype=np.int8)
    seg[3:9, 4:12, 5:11] = 1
    seg[4:7, 6:9, 6:9] = 2
    image = np.ones((1, *seg.shape), dtype=np.float32)
    back = round_trip(image, _geometry(seg.shape, (2, 2, 2)), seg, _plan((2, 2, 2)), 3)
    assert dice_per_label(seg, back, [1, 2]) == {1: 1.0, 2: 1.0}


def test_a_thin_structure_loses_dice_at_a_coarser_spacing():
    seg = np.zeros((16, 24, 24), dtype=np.int8)
    seg[4:12, 10, 4:20] = 1  # a sheet one voxel (1 mm) thick
    seg[4:12, 14:20, 4:20] = 2  # a slab six voxels thick
    image = np.ones((1, *seg.shape), dtype=np.float32)
    dice = dice_per_label(seg, round_trip(image, _geometry(seg.shape, (1, 1, 1)), seg, _plan((2, 2, 2)), 3), [1, 2])
    assert dice[1] < 0.8 and dice[1] < dice[2] < 1.0
    assert "--spacing auto" in ceiling_warning(_plan((2, 2, 2)), {"sheet": dice[1], "slab": dice[2]})
    assert ceiling_warning(_plan((2, 2, 2)), {"slab": 0.99}) is None
    # a configuration that reorders the axes resamples to the same raw-order spacing: the same ceiling
    reordered = round_trip(image, _geometry(seg.shape, (1, 1, 1)), seg, _plan((3, 2, 2), axis_order=(2, 0, 1)), 3)
    assert np.array_equal(reordered, round_trip(image, _geometry(seg.shape, (1, 1, 1)), seg, _plan((2, 2, 3)), 3))


def test_plan_stores_the_ceiling_in_plans_json(tmp_path):
    raw = make_dataset_3d(tmp_path / "raw")  # spacing (3, 1, 1)
    plan_stage(raw, tmp_path / "same", PlannerOptions(configs=["3d"], spacing=[3.0, 1.0, 1.0]), workers=1)
    plan_stage(raw, tmp_path / "coarse", PlannerOptions(configs=["3d"], spacing=[3.0, 4.0, 4.0]), workers=1)
    same = json.loads((tmp_path / "same" / "plans.json").read_text())["configurations"]["3d"]["resampling_ceiling"]
    coarse = json.loads((tmp_path / "coarse" / "plans.json").read_text())["configurations"]["3d"]["resampling_ceiling"]
    assert set(same) == set(coarse) == {"object1", "object2"}
    assert all(v == 1.0 for v in same.values())
    assert all(v < 1.0 for v in coarse.values())
