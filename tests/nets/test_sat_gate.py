from __future__ import annotations

import math

import pytest
import torch

from satnet.nets.gate import SkipGate, keras_glorot_limit, trelu


def make_gate(skip: str, channels: int = 6, dims: int = 2, gate_init: str = "ones", seed: int = 0) -> SkipGate:
    torch.manual_seed(seed)
    gate = SkipGate(channels, skip, dims, gate_init, name="skip0")
    if gate.attend is not None:
        torch.nn.init.normal_(gate.attend.weight)
        torch.nn.init.normal_(gate.attend.bias)
    return gate


def test_trelu_values_and_clamp_gradient_at_the_edges():
    z = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    y = trelu(z)
    assert y.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    y.sum().backward()
    # boundaries pass the gradient (torch.clamp), so W initialised to exactly 1 can still learn
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("skip,expected", [("org", 5), ("st", 5), ("at", 1), ("sat", 1)])
@pytest.mark.parametrize("dims", [2, 3])
def test_out_channels_and_output_shape(skip, expected, dims):
    gate = make_gate(skip, channels=5, dims=dims)
    f = torch.randn(2, 5, *([4] * dims))
    assert gate.out_channels == expected
    assert gate(f).shape == (2, expected, *([4] * dims))


@pytest.mark.parametrize("skip", ["org", "st", "at", "sat"])
@pytest.mark.parametrize("dims", [2, 3])
def test_each_mode_transfers_what_the_module_docstring_says(skip, dims):
    """Against the formulas written out by hand: f, f * trelu(W), sigmoid(conv1x1(f)), sigmoid(conv1x1(f * trelu(W)))."""
    gate = make_gate(skip, channels=5, dims=dims)
    trelu_w = torch.ones(5)
    if gate.select is not None:
        with torch.no_grad():
            gate.select.copy_(torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.7]))
        trelu_w = torch.tensor([0.0, 0.0, 0.3, 1.0, 1.0])
    f = torch.randn(2, 5, *([4] * dims))
    f_s = f * trelu_w.view(1, 5, *([1] * dims))
    if skip in ("org", "st"):
        expected = f if skip == "org" else f_s
    else:
        kernel, bias = gate.attend.weight.detach().reshape(1, 5), gate.attend.bias.detach()
        expected = torch.sigmoid(torch.einsum("bc...,kc->bk...", f_s, kernel) + bias.view(1, 1, *([1] * dims)))
    for fused in (True, False):
        gate.fused = fused
        torch.testing.assert_close(gate(f).detach(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("skip,count", [("org", 0), ("st", 7), ("at", 8), ("sat", 15)])
def test_parameters_per_mode(skip, count):
    gate = make_gate(skip, channels=7)
    assert sum(p.numel() for p in gate.parameters()) == count
    assert (gate.select is None) == (skip in ("org", "at"))


@pytest.mark.parametrize("skip", ["st", "sat"])
def test_gradient_reaches_w_only_inside_the_clamp(skip):
    gate = make_gate(skip, channels=4)
    with torch.no_grad():
        gate.select.copy_(torch.tensor([-0.5, 0.3, 0.7, 1.5]))
    gate(torch.randn(2, 4, 5, 6)).pow(2).sum().backward()
    grad = gate.select.grad
    assert grad[0] == 0 and grad[3] == 0
    assert grad[1] != 0 and grad[2] != 0


def test_channel_with_w_at_or_below_zero_is_exactly_off():
    f = torch.randn(1, 3, 4, 4)
    for skip in ("st", "sat"):
        gate = make_gate(skip, channels=3)
        with torch.no_grad():
            gate.select.copy_(torch.tensor([0.0, -2.0, 0.5]))
        g = f.clone()
        g[:, :2] = torch.randn(1, 2, 4, 4) * 100  # change only the channels that are off
        assert torch.equal(gate(f), gate(g))
        if skip == "st":
            assert torch.count_nonzero(gate(f)[:, :2]) == 0


@pytest.mark.parametrize("dims", [2, 3])
def test_fused_and_unfused_sat_agree_in_outputs_and_gradients(dims):
    gate = make_gate("sat", channels=8, dims=dims)
    with torch.no_grad():
        gate.select.copy_(torch.tensor([-0.3, 0.0, 0.2, 0.5, 0.9, 1.0, 1.4, 0.7]))
    f = torch.randn(2, 8, *([5] * dims))
    target = torch.rand(2, 1, *([5] * dims))
    results = []
    for fused in (True, False):
        gate.fused = fused
        gate.zero_grad()
        x = f.clone().requires_grad_(True)
        out = gate(x)
        (out - target).pow(2).sum().backward()
        results.append([out.detach(), x.grad, gate.select.grad, gate.attend.weight.grad, gate.attend.bias.grad])
    for fused, unfused in zip(*results):
        torch.testing.assert_close(fused, unfused, rtol=0, atol=1e-5)


def test_keras_glorot_limit_uses_the_keras2_fans_of_a_1d_weight():
    # Keras 2 falls back to fan_in = fan_out = sqrt(C) for a weight of shape (C,)
    assert keras_glorot_limit(64) == pytest.approx(math.sqrt(6 / (2 * 8)))


def test_glorot_init_switches_about_half_the_channels_off_and_ones_none():
    glorot = make_gate("sat", channels=400, gate_init="glorot", seed=3)
    limit = keras_glorot_limit(400)
    assert glorot.select.abs().max() <= limit
    assert 0.4 < glorot.fraction_off() < 0.6
    assert make_gate("sat", channels=400, gate_init="ones").fraction_off() == 0.0
    assert make_gate("at").fraction_off() is None and make_gate("org").fraction_off() is None
    with pytest.raises(ValueError, match="gate_init"):
        glorot.reset_select("zeros")


def test_recording_is_off_by_default_and_keeps_detached_copies_when_on():
    gate = make_gate("sat", channels=4)
    f = torch.randn(1, 4, 6, 6, requires_grad=True)
    gate(f)
    assert gate.last_attention is None and gate.last_select is None
    gate.record = True
    out = gate(f)
    assert torch.equal(gate.last_attention, out.detach()) and not gate.last_attention.requires_grad
    assert torch.equal(gate.last_select, trelu(gate.select).detach())


@pytest.mark.parametrize("skip", ["org", "st", "at", "sat"])
def test_gate_keeps_bf16_under_autocast(skip):
    gate = make_gate(skip, channels=4)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gate(conv(torch.randn(1, 3, 8, 8)))
    assert out.dtype == torch.bfloat16


def saved_elements(gate: SkipGate, f: torch.Tensor) -> int:
    """Elements autograd keeps for backward in one gate forward."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gate(f)
    return sum(sizes)


def test_fused_sat_does_not_store_the_selected_feature_map():
    gate = make_gate("sat", channels=8)
    f = torch.randn(2, 8, 16, 16, requires_grad=True)  # kept alive by the encoder anyway
    gate.fused = False
    unfused = saved_elements(gate, f)
    gate.fused = True
    fused = saved_elements(gate, f)
    attention = 2 * 16 * 16
    assert unfused >= 2 * f.numel()  # f and f * trelu(W)
    assert fused <= f.numel() + attention + 4 * 8  # f, the attention map and kernel-sized vectors
