from __future__ import annotations

import json

import pytest
import torch

from satnet.contracts import dumps_json
from satnet.errors import ConfigError
from satnet.nets import (
    ARCH_NAMES,
    NETWORKS,
    SKIP_MODES,
    NetworkSpec,
    activation_bytes,
    build_network,
    count_parameters,
    deep_supervision_scales,
    gate_fraction_off,
    init_weights,
    keras_glorot_limit,
    parameter_table,
    set_gate_recording,
)
from satnet.nets.registry import saved_storage_bytes
from tests.nets.tiny import tiny_spec


def test_registry_covers_exactly_the_spec_arch_names():
    assert sorted(NETWORKS) == sorted(ARCH_NAMES)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_spec_json_round_trip_and_build_from_dict(arch):
    spec = tiny_spec(arch, 3, "st", gate_init="glorot")
    data = json.loads(dumps_json(spec))
    assert NetworkSpec.from_dict(data) == spec
    torch.manual_seed(0)
    from_spec = build_network(spec).eval()
    torch.manual_seed(0)
    from_dict = build_network(data).eval()
    x = torch.randn(1, 2, 8, 16, 8)
    with torch.no_grad():
        assert torch.equal(from_spec(x), from_dict(x))


def test_unknown_arch_or_skip_lists_the_valid_names():
    data = tiny_spec("unet", 2).to_dict()
    expected = r'unknown arch "unets" \(did you mean "unet"\?\); valid arch names: di2in, tiramisu, unet, vnet'
    with pytest.raises(ConfigError, match=expected):
        build_network({**data, "arch": "unets"})
    with pytest.raises(ConfigError, match=r'unknown skip "sta".*valid skip names: at, org, sat, st'):
        build_network({**data, "skip": "sta"})
    with pytest.raises(ConfigError, match=r'unknown key "skips" \(did you mean "skip"\?\)'):
        build_network({**data, "skips": "sat"})


def test_count_parameters_matches_the_built_model():
    for arch in ARCH_NAMES:
        spec = tiny_spec(arch, 3, "sat", deep_supervision=True)
        assert count_parameters(spec) == sum(p.numel() for p in build_network(spec).parameters())
    assert count_parameters(tiny_spec("unet", 2, "sat")) < count_parameters(tiny_spec("unet", 2, "org"))


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_activation_bytes_on_meta_equal_what_a_cpu_forward_saves(arch):
    spec = tiny_spec(arch, 3, "sat")
    cpu = saved_storage_bytes(build_network(spec).train(), torch.randn(2, 2, 8, 16, 12))
    assert activation_bytes(spec, (8, 16, 12), batch_size=2) == cpu > 0
    assert activation_bytes(spec.replace(skip="org"), (8, 16, 12), batch_size=2) > cpu


def test_saved_storage_bytes_leave_out_weights_and_the_input():
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU())  # saves x, weight, relu out
    assert saved_storage_bytes(model, torch.randn(1, 2, 4, 4, 4)) == 4 * 4**3 * 4  # the ReLU output only


def test_parameter_table_covers_every_arch_dim_and_skip():
    rows = parameter_table()
    assert len(rows) == len(ARCH_NAMES) * 2 * len(SKIP_MODES)
    for row in rows:
        if row["skip"] == "org":
            assert row["change_vs_org"] == 0
        if row["skip"] in ("at", "sat"):
            assert row["change_vs_org"] < 0


def test_fraction_off_per_gate_with_glorot_and_ones_init():
    glorot = build_network(tiny_spec("unet", 2, "sat", gate_init="glorot"))
    ones = build_network(tiny_spec("unet", 2, "sat", gate_init="ones"))
    assert gate_fraction_off(ones) == {"skip0": 0.0, "skip1": 0.0}
    off = gate_fraction_off(glorot)
    assert sorted(off) == ["skip0", "skip1"]
    assert all(0 < v < 1 for v in off.values())  # 8 and 16 channels: some, never all, start off
    for _, gate in glorot.gates():
        assert gate.select.abs().max() <= keras_glorot_limit(gate.channels)
    assert gate_fraction_off(build_network(tiny_spec("tiramisu", 2, "at"))) == {}
    dense = gate_fraction_off(build_network(tiny_spec("tiramisu", 2, "st")))
    assert {"skip0", "skip1", "dense0.1", "dense4.1"} <= set(dense)


def test_fraction_off_follows_the_weights_during_training():
    model = build_network(tiny_spec("unet", 2, "sat"))
    gate = dict(model.gates())["skip0"]
    with torch.no_grad():
        gate.select[:2] = -0.1
    assert gate_fraction_off(model)["skip0"] == 2 / 8


def test_set_gate_recording_exposes_attention_maps():
    model = build_network(tiny_spec("vnet", 2, "sat")).eval()
    set_gate_recording(model, True)
    model(torch.randn(1, 2, 32, 48))
    gates = dict(model.gates())
    assert gates["skip0"].last_attention.shape == (1, 1, 32, 48)
    assert gates["skip1"].last_select.shape == (16,)
    set_gate_recording(model, False)
    assert gates["skip0"].last_attention is None


@pytest.mark.parametrize("scheme", ["he", "glorot"])
def test_init_weights(scheme):
    model = init_weights(build_network(tiny_spec("unet", 2, "sat")), scheme)
    conv = model.encoder.stages[1][0][0]  # 8 -> 16, 3x3
    assert torch.count_nonzero(conv.bias) == 0
    if scheme == "glorot":
        assert conv.weight.abs().max() <= (6 / (8 * 9 + 16 * 9)) ** 0.5
    else:
        assert conv.weight.std().item() == pytest.approx((2 / (1 + 0.01**2) / (8 * 9)) ** 0.5, rel=0.25)
    assert all(g.select.eq(1).all() for _, g in model.gates())  # gate_init is left alone
    with pytest.raises(ConfigError, match="valid init scheme names: glorot, he"):
        init_weights(model, "xavier")


def test_deep_supervision_scales():
    spec = tiny_spec("unet", 3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    assert deep_supervision_scales(spec) == [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5]]
