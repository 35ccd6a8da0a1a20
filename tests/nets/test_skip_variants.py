"""k-channel at/sat skips (NetworkSpec.skip_channels) and per-level skip modes (NetworkSpec.skip_levels)."""
from __future__ import annotations

import json

import pytest
import torch

from satnet.errors import ConfigError
from satnet.nets import build_network, count_parameters
from satnet.nets.gate import SkipGate, trelu
from satnet.nets.spec import ARCH_NAMES, NetworkSpec, parse_skip_levels
from tests.nets.tiny import SHAPES, tiny_spec

VARIANTS = {  # name: NetworkSpec changes
    "sat2": dict(skip="sat", skip_channels=2),
    "at4": dict(skip="at", skip_channels=4),
    "sat2-org": dict(skip="sat", skip_levels=["sat:2", "org"]),
    "org-sat": dict(skip="org", skip_levels=["org", "sat"]),
}


def test_one_map_is_the_papers_gate_exactly():
    """k = 1: the same parameters, state_dict keys and shapes, and output sigmoid(conv1x1(f * trelu(W)))."""
    torch.manual_seed(0)
    gate = SkipGate(6, "sat", 3, "ones", "skip0")  # maps left at its default
    explicit = SkipGate(6, "sat", 3, "ones", "skip0", maps=1)
    assert {k: v.shape for k, v in gate.state_dict().items()} == {
        "select": (6,), "attend.weight": (1, 6, 1, 1, 1), "attend.bias": (1,)}
    explicit.load_state_dict(gate.state_dict())
    with torch.no_grad():
        gate.select.uniform_(-0.5, 1.5)
        torch.nn.init.normal_(gate.attend.weight)
    f = torch.randn(2, 6, 4, 5, 3)
    w = trelu(gate.select).view(1, 6, 1, 1, 1)
    expected = torch.sigmoid(torch.nn.functional.conv3d(f * w, gate.attend.weight, gate.attend.bias))
    torch.testing.assert_close(gate(f), expected)
    gate.fused = False
    torch.testing.assert_close(gate(f), expected)


def test_a_spec_without_the_new_fields_builds_the_same_network():
    """plans.json and checkpoints written before skip_channels / skip_levels existed load unchanged."""
    new = tiny_spec("unet", 3, "sat")
    old = new.to_dict()
    del old["skip_channels"], old["skip_levels"]
    torch.manual_seed(0)
    a = build_network(NetworkSpec.from_dict(old))
    b = build_network(new)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())


def test_k_maps_transfer_k_sigmoid_maps_of_the_selected_features():
    torch.manual_seed(0)
    gate = SkipGate(6, "sat", 2, "ones", "skip0", maps=3)
    with torch.no_grad():
        gate.select.uniform_(-0.5, 1.5)
    f = torch.randn(2, 6, 5, 4)
    out = gate(f)
    assert gate.out_channels == 3 and out.shape == (2, 3, 5, 4)
    expected = torch.sigmoid(torch.nn.functional.conv2d(f * trelu(gate.select).view(1, 6, 1, 1),
                                                        gate.attend.weight, gate.attend.bias))
    torch.testing.assert_close(out, expected)
    assert count_parameters_of(gate) == 6 + 3 * 6 + 3


def count_parameters_of(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_variant_builds_trains_and_round_trips(arch, dims, variant):
    spec = tiny_spec(arch, dims, **VARIANTS[variant])
    assert NetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.skip_label() == variant
    torch.manual_seed(0)
    net = build_network(spec).train()
    for name, gate in net.gates():
        if name.startswith("skip"):
            level = spec.level_skip(int(name[4:]))
            assert (gate.skip, gate.maps) == (level.mode, level.channels), name
    outputs = net(torch.randn(2, 2, *SHAPES[dims]))
    sum(o.float().mean() for o in outputs).backward()
    assert outputs[0].shape == (2, 3, *SHAPES[dims])
    assert count_parameters(spec) != count_parameters(tiny_spec(arch, dims, "org"))


def test_tiramisu_dense_gates_follow_their_level():
    spec = tiny_spec("tiramisu", 2, skip="sat", skip_levels=["sat:2", "org"])
    net = build_network(spec)
    modes = {name: (g.skip, g.maps) for name, g in net.gates()}
    assert modes["dense0.1"] == ("sat", 2)  # stage 0's down block: level 0
    assert modes["dense1.1"] == ("org", 1)  # stage 1: level 1
    assert modes["dense2.1"] == ("org", 1)  # the bottleneck: the coarsest level
    assert modes["dense4.1"] == ("sat", 2)  # stage 0's up block


def test_more_maps_than_channels_is_refused_naming_the_flag():
    with pytest.raises(ConfigError, match="--skip-channels"):
        build_network(tiny_spec("unet", 2, "sat", skip_channels=9))  # level 0 has 8 channels


@pytest.mark.parametrize("bad, why", [
    ("sat:0", "positive integer"), ("org:2", "at and sat skips only"), ("sat:x", "MODE or MODE:K"),
    ("bogus", "MODE or MODE:K"), ("sat,,org", "empty entry"), ("", "empty entry"),
    ("sat:\u00b2", "MODE or MODE:K"), ("sat:\u0663", "MODE or MODE:K"),  # non-ASCII digits: str.isdigit() holds
])
def test_malformed_skip_levels(bad, why):
    with pytest.raises(ConfigError, match=why):
        parse_skip_levels(bad)


@pytest.mark.parametrize("changes", [dict(skip_channels=0), dict(skip="org", skip_channels=2),
                                     dict(skip_levels=[]), dict(skip_levels=["sat:2", "st:3"])])
def test_spec_refuses_bad_skip_fields(changes):
    with pytest.raises(ConfigError):
        tiny_spec("unet", 2, **changes)
