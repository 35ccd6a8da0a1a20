from __future__ import annotations

import math
import re

import numpy as np
import pytest

from satnet.contracts import dumps_json
from satnet.errors import ConfigError
from satnet.planning.fingerprint import Fingerprint, synthetic_fingerprint
from satnet.planning.planner import (
    PlannerOptions, auto_spacing, merge_plans, channel_normalization, plan_axis_order, plan_experiment,
    target_spacing,
)
from satnet.planning import search
from satnet.planning.plans import MemoryEstimate, Plans
from satnet.preprocessing.stage import summary

GIB = 1024**3


@pytest.fixture(scope="module")
def ct() -> Fingerprint:
    return synthetic_fingerprint()


def hippocampus_like() -> Fingerprint:
    return synthetic_fingerprint(num_cases=200, shape=(36, 50, 36), spacing=(1.0, 1.0, 1.0), channel="MRI",
                                 labels=("anterior", "posterior"), jitter=0.0, crop_fraction=1.0)


@pytest.mark.parametrize("gb", [3, 8, 24])
def test_sat_plan_gets_at_least_the_org_patch(ct, gb):
    org, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=gb, skip="org", configs=["3d"]))
    sat, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=gb, skip="sat", configs=["3d"]))
    (o,), (s,) = org.configurations.values(), sat.configurations.values()
    assert math.prod(s.patch_size) >= math.prod(o.patch_size)
    for conf in (o, s):
        assert conf.estimated_memory.total <= gb * GIB
        assert conf.memory_budget_bytes == gb * GIB
        assert all(p % t == 0 for p, t in zip(conf.patch_size, conf.network.total_stride()))
    if gb == 3:  # the budget binds: SAT's smaller skips buy a larger patch or batch
        assert math.prod(s.patch_size) * s.batch_size > math.prod(o.patch_size) * o.batch_size


def test_plans_are_sized_for_fp16_by_default_and_fp32_on_request(ct):
    """fp16 (what `satnet train` runs on CUDA) needs about half the activation memory of fp32, so the
    same budget holds a larger patch; plans.json records what the memory was counted for."""
    default, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=8, configs=["3d"]))
    fp32, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=8, configs=["3d"], precision="fp32"))
    assert (default.planner.precision, fp32.planner.precision) == ("fp16", "fp32")
    b, f = default.configurations["3d"], fp32.configurations["3d"]
    assert math.prod(b.patch_size) * b.batch_size >= 1.5 * math.prod(f.patch_size) * f.batch_size
    assert max(b.estimated_memory.total, f.estimated_memory.total) <= 8 * GIB


@pytest.mark.slow
def test_plans_are_deterministic_and_round_trip(ct):
    a, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=8))
    b, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=8))
    assert dumps_json(a) == dumps_json(b)
    assert Plans.from_dict(a.to_dict()) == a
    # same spacing: one preprocessed copy serves both configurations
    assert a.configurations["2d"].data_identifier == a.configurations["3d"].data_identifier == "spacing_2x2x2"


def test_variants_merge_into_one_plans_file(ct):
    sat, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=8, configs=["3d"]))
    org, _ = plan_experiment(ct, PlannerOptions(gpu_memory_gb=8, skip="org", arch="vnet", configs=["3d"]))
    merged = merge_plans(sat, org)
    assert list(merged.configurations) == ["3d", "3d_vnet_org"]
    assert merge_plans(merged, sat).configurations["3d"] == sat.configurations["3d"]


def test_small_budget_is_a_clear_error_quoting_a_need_above_it():
    with pytest.raises(ConfigError, match="raise --gpu-memory-gb") as info:
        plan_experiment(hippocampus_like(), PlannerOptions(gpu_memory_gb=0.003, configs=["3d"]))
    need = float(re.search(r"needs ([0-9.e-]+) GiB", str(info.value)).group(1))
    assert need > 0.003, info.value


def _made_up_estimate(topo, patch) -> MemoryEstimate:
    """Memory shaped like the real model's: parameters grow with the stages, activations with the volume."""
    params = 4 * sum(2 * 27 * f * f for f in topo.features)
    act = math.prod(patch) * 60 * len(topo.strides)
    return MemoryEstimate(activations=act, parameters=params, gradients=params, optimizer=params, total=act + 3 * params)


def test_search_bound_never_changes_the_plan_at_any_budget(monkeypatch):
    """The per-topology lower bound only skips estimates: the patch equals the one with no skipping.

    A bound shared by all topologies once skipped every fitting patch at small budgets (smaller
    patches have fewer stages, so far fewer parameters than the first patches estimated); that
    bound gives another patch at 45 of these 60 budgets.
    """
    cap, median, spacing = [224, 192, 192], [224, 185, 184], [2.0, 2.0, 2.0]  # the CT-like fingerprint at 2 mm
    candidates = list(search.legal_candidates(cap, median, spacing, 3))
    smallest, largest = (_made_up_estimate(t, p).total for p, t in (candidates[-1], candidates[0]))
    calls = {"bounded": 0, "exhaustive": 0}

    def counted(kind):
        def estimate(topo, patch):
            calls[kind] += 1
            return _made_up_estimate(topo, patch)
        return estimate

    for budget in np.geomspace(smallest, 1.1 * largest, 60).astype(int):
        bounded = search.largest_fitting_patch(cap, median, spacing, 3, int(budget), counted("bounded"))
        with monkeypatch.context() as m:
            m.setattr(search, "MARGIN", 1.0)  # (1 - MARGIN) = 0: no candidate is skipped
            exhaustive = search.largest_fitting_patch(cap, median, spacing, 3, int(budget), counted("exhaustive"))
        assert bounded[0] == exhaustive[0], budget
    assert calls["bounded"] < calls["exhaustive"] / 2, calls  # the bound did skip estimates


@pytest.mark.slow
def test_search_bound_leaves_the_real_estimate_plan_alone(monkeypatch):
    """MARGIN covers how far the real memory model's bytes per voxel vary within a topology."""
    fp = synthetic_fingerprint(shape=(80, 240, 240))  # a smaller CT: the bound skips 7 of the 9 candidates down to the fit
    bounded, _ = plan_experiment(fp, PlannerOptions(gpu_memory_gb=1.0, configs=["3d"]))
    monkeypatch.setattr(search, "MARGIN", 1.0)
    exhaustive, _ = plan_experiment(fp, PlannerOptions(gpu_memory_gb=1.0, configs=["3d"]))
    b, e = bounded.configurations["3d"], exhaustive.configurations["3d"]
    assert (b.patch_size, b.batch_size) == (e.patch_size, e.batch_size)


def test_default_spacing_is_2mm_and_warns_about_small_objects():
    fp = hippocampus_like()
    fp.label_stats[0].median_object_extent_mm = [12.0, 20.0, 14.0]  # 6 voxels along Z at 2 mm
    plans, warnings = plan_experiment(fp, PlannerOptions(gpu_memory_gb=8, configs=["3d"]))
    conf = plans.configurations["3d"]
    assert conf.spacing == [2.0, 2.0, 2.0]
    assert conf.median_shape == [18, 25, 18]
    assert len(warnings) == 1 and '"anterior"' in warnings[0] and "--spacing auto" in warnings[0]
    assert conf.batch_size >= 2


def test_batch_capped_at_5_percent_of_dataset_voxels():
    fp = hippocampus_like()
    plans, _ = plan_experiment(fp, PlannerOptions(gpu_memory_gb=40, spacing="auto", configs=["3d"]))
    conf = plans.configurations["3d"]
    assert conf.patch_size == [40, 56, 40]
    voxels = fp.total_voxels_at(conf.spacing)
    assert conf.batch_size == max(2, round(0.05 * voxels / math.prod(conf.patch_size)))


def test_auto_spacing_uses_10th_percentile_for_anisotropic_axis():
    fp = synthetic_fingerprint(num_cases=50, shape=(20, 512, 512), spacing=(5.0, 0.7, 0.7))
    spacing = auto_spacing(fp)
    z = sorted(c.spacing[0] for c in fp.cases)
    assert spacing[0] < sorted(z)[len(z) // 2]  # finer than the median along Z
    assert target_spacing(fp, [3, 1, 1]) == [3.0, 1.0, 1.0]


def test_auto_spacing_calls_an_axis_anisotropic_against_each_other_axis():
    # Z is 5x the finest axis but only 2.3x the coarser in-plane one: not anisotropic (nnU-Net), the median stays
    fp = synthetic_fingerprint(num_cases=50, shape=(20, 512, 512), spacing=(3.5, 0.7, 1.5))
    z = sorted(c.spacing[0] for c in fp.cases)
    assert auto_spacing(fp)[0] == pytest.approx((z[24] + z[25]) / 2)  # the median, not the 10th percentile


def test_a_coarse_axis_other_than_z_is_put_first():
    fp = synthetic_fingerprint(num_cases=20, shape=(192, 192, 20), spacing=(0.7, 0.7, 3.5))
    plans, _ = plan_experiment(fp, PlannerOptions(spacing="auto", configs=["2d", "3d"]))
    for conf in plans.configurations.values():  # X (raw axis 2) first, Z and Y after it, in their order
        assert conf.axis_order == [2, 0, 1] and conf.transposed
        assert conf.spacing[0] > 3 * max(conf.spacing[1:]) and conf.raw_spacing()[2] == conf.spacing[0]
        assert conf.median_shape[0] < min(conf.median_shape[1:])  # the thin axis, now the first
        assert conf.data_identifier.endswith("_axes201")
    assert plans.configurations["3d"].patch_size[0] < min(plans.configurations["3d"].patch_size[1:])
    assert plan_axis_order([1.0, 4.0, 1.0]) == [1, 0, 2] and plan_axis_order([1.0, 1.0, 2.9]) == [0, 1, 2]
    for spacing in ("auto", "default"):  # thick slices along Z, or the isotropic default: the scans' order
        fp = synthetic_fingerprint(num_cases=20, shape=(20, 192, 192), spacing=(3.5, 0.7, 0.7))
        plans, _ = plan_experiment(fp, PlannerOptions(spacing=spacing, configs=["2d"]))
        conf = plans.configurations["2d"]
        assert conf.axis_order == [0, 1, 2] and not conf.transposed and "_axes" not in conf.data_identifier


def test_plans_without_an_axis_order_read_the_scans_order_and_a_bad_one_is_refused():
    plans, _ = plan_experiment(synthetic_fingerprint(num_cases=5), PlannerOptions(configs=["3d"]))
    data = plans.to_dict()
    del data["configurations"]["3d"]["axis_order"]  # plans.json from before the field
    assert Plans.from_dict(data).configurations["3d"].axis_order == [0, 1, 2]
    data["configurations"]["3d"]["axis_order"] = [2, 1]
    with pytest.raises(ConfigError, match=r"configurations\.3d.*axis_order must be a permutation"):
        Plans.from_dict(data, "plans.json")


def test_normalization_from_channel_names():
    ct = synthetic_fingerprint(num_cases=3)
    (n,) = channel_normalization(ct)
    assert n.scheme == "ct" and n.clip_low == -90.0 and n.clip_high == 250.0
    mri = synthetic_fingerprint(num_cases=3, channel="T2")
    assert channel_normalization(mri)[0].scheme == "zscore"
    raw = synthetic_fingerprint(num_cases=3, channel="noNorm")
    assert channel_normalization(raw)[0].scheme == "none"
    rescaled = synthetic_fingerprint(num_cases=3, channel="rescale_to_0_1")  # nnU-Net v2's name
    assert channel_normalization(rescaled)[0].scheme == "rescale"


def test_natural_2d_images_plan_only_2d_at_native_pixels():
    fp = synthetic_fingerprint(num_cases=20, shape=(1, 256, 256), spacing=(999.0, 1.0, 1.0), channel="R",
                               jitter=0.0, crop_fraction=1.0)
    fp.channel_names = {"0": "R", "1": "G", "2": "B"}
    fp.channels = fp.channels * 3
    fp.natural_image_2d = True
    plans, _ = plan_experiment(fp, PlannerOptions(gpu_memory_gb=8))
    assert list(plans.configurations) == ["2d"]
    conf = plans.configurations["2d"]
    assert conf.spacing[1:] == [1.0, 1.0]
    assert [n.scheme for n in conf.normalization] == ["rgb"] * 3
    assert conf.network.in_channels == 3 and conf.network.spatial_dims == 2
    with pytest.raises(ConfigError, match="use --configs 2d"):
        plan_experiment(fp, PlannerOptions(configs=["3d"]))


def test_bad_options():
    with pytest.raises(ConfigError, match='did you mean "sat"'):
        PlannerOptions(skip="satt")
    with pytest.raises(ConfigError, match="spacing"):
        PlannerOptions(spacing=[1, 2])


def test_batch_search_brackets_when_batch_2_overstates_the_per_sample_cost():
    from satnet.planning.plans import MemoryEstimate
    from satnet.planning.planner import _grow_batch

    def fake(spec, patch, batch):  # 1 GiB fixed + 2 GiB independent of the batch + 0.05 GiB per sample
        total = int((3 + 0.05 * batch) * GIB)
        return MemoryEstimate(activations=total - GIB, parameters=GIB // 3, gradients=GIB // 3,
                              optimizer=GIB - 2 * (GIB // 3), total=total)

    fp = hippocampus_like()
    # cap: 5% of the dataset's voxels in 8^3 patches is far above what 8 GiB allows
    batch = _grow_batch(fp, None, [8, 8, 8], fake(None, None, 2), 8 * GIB, fake, [1.0, 1.0, 1.0])
    assert batch == 100  # (8 - 3) / 0.05; the first guess from batch 2 alone would be 2 * 7 / 4.1 = 3


def test_plan_says_which_skip_it_chose_and_why():
    from satnet.names import DEFAULT_SKIP_LEVELS
    from satnet.planning.planner import DEFAULT_SKIP, PlannerOptions, skip_choice_line

    default = skip_choice_line(PlannerOptions(), explicit=False)
    chosen = f"per level {','.join(DEFAULT_SKIP_LEVELS)}" if DEFAULT_SKIP_LEVELS else DEFAULT_SKIP
    assert default.startswith(f"skip: {chosen}, ") and "docs/results.md" in default and "--skip org" in default
    assert skip_choice_line(PlannerOptions(skip="sat", skip_channels=4), explicit=True) == "skip: sat with 4 maps (as asked)"
    assert skip_choice_line(PlannerOptions(skip_levels=["sat:4", "org"]), explicit=True) == (
        "skip: per level sat:4,org (--skip-levels)")


def test_the_bare_configuration_name_is_the_default_network_and_skip():
    from satnet.planning import planner
    from satnet.planning.plans import default_skip_label

    default = default_skip_label()
    assert planner.configuration_name("3d", "unet", default) == "3d"
    assert [planner.configuration_name("3d", "unet", s) for s in ("org", "sat4-org")] == ["3d_org", "3d_sat4-org"]
    assert planner.configuration_name("2d", "vnet", default) == "2d_vnet"


def test_a_per_level_default_skip_plans_named_bare_and_leaves_asked_and_stored_skips_alone(monkeypatch):
    from satnet.planning import plans as plans_module
    from satnet.planning.planner import configuration_name, skip_choice_line

    monkeypatch.setattr(plans_module, "DEFAULT_SKIP_LEVELS", ("sat", "org"))  # a default the skip study may choose
    default = PlannerOptions(gpu_memory_gb=8, configs=["3d"])
    assert (default.skip_levels, default.skip, default.skip_channels) == (["sat", "org"], "sat", 1)
    assert skip_choice_line(default, explicit=False).startswith("skip: per level sat,org, ")
    assert [configuration_name("3d", "unet", s) for s in ("sat-org", "sat", "org")] == ["3d", "3d_sat", "3d_org"]
    plans, _ = plan_experiment(hippocampus_like(), default)
    assert list(plans.configurations) == ["3d"]
    assert plans.configurations["3d"].network.skip_label() == "sat-org"
    # a network with one skip level is all sat under that default, and still the bare configuration
    tiny = synthetic_fingerprint(num_cases=10, shape=(20, 10, 10), spacing=(2.0, 2.0, 2.0), channel="MRI")
    plans, _ = plan_experiment(tiny, PlannerOptions(gpu_memory_gb=8))
    assert {n: c.network.skip_label() for n, c in plans.configurations.items()} == {"2d": "sat", "3d": "sat-org"}
    assert "  2d: skip sat [sat,org names 2 levels, this network has 1: the last 1 unused], spacing" in summary(plans)
    assert "  3d: skip sat, org (per level, full resolution first), spacing" in summary(plans)
    # asked for: every level the same, as before
    assert PlannerOptions(skip="org").skip_levels is None
    assert (lambda o: (o.skip, o.skip_channels, o.skip_levels))(PlannerOptions(skip_channels=4)) == ("sat", 4, None)
    # a stored plans.json keeps what it planned
    stored = PlannerOptions.from_dict({"skip": "sat", "skip_channels": 1})
    assert stored.skip_levels is None and PlannerOptions.from_dict(default.as_dict()).skip_levels == ["sat", "org"]


def test_2d_batch_cap_counts_the_voxels_at_the_planned_z_spacing():
    # a 2d configuration of volumes trains on Z slices resampled to the plan's full spacing (plans.py), so
    # the 5% cap counts the dataset at that spacing, not at the cases' median Z spacing (1 mm here, 2x the slices)
    fp = hippocampus_like()
    plans, _ = plan_experiment(fp, PlannerOptions(gpu_memory_gb=40, configs=["2d"]))
    conf = plans.configurations["2d"]
    assert conf.spacing == [2.0, 2.0, 2.0]
    voxels = fp.total_voxels_at(conf.spacing)
    assert conf.batch_size == max(2, round(0.05 * voxels / math.prod(conf.patch_size)))
