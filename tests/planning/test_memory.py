"""Unit tests of the memory model: storage counting, the estimate's fields, caching, errors, cost."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import satnet.nets
from memory_measure import heap_in_use
from memory_toy_nets import ToyUNet
from satnet.errors import ConfigError
from satnet.nets.spec import NetworkSpec
from satnet.planning import memory
from satnet.planning.memory import (
    LiveTensorTracker, deep_supervision_weights, dice_ce_loss, estimate_memory, storage_bytes, trace_training_step,
)
from satnet.planning.plans import MemoryEstimate
from satnet.planning.storage_tracking import SavedTensorCounter

FLOAT = 4


def toy(dims: int = 3, skip: str = "sat", features=(8, 16, 32)) -> ToyUNet:
    torch.manual_seed(0)
    return ToyUNet(dims, 1, 3, list(features), skip)


def toy_spec(dims: int = 3, skip: str = "sat") -> NetworkSpec:
    return NetworkSpec(arch="unet", spatial_dims=dims, in_channels=1, num_classes=3, features=[8, 16, 32],
                       kernel_sizes=[[3] * dims] * 3, strides=[[1] * dims, [2] * dims, [2] * dims], skip=skip)


def build_toy(spec: NetworkSpec | dict) -> ToyUNet:
    spec = NetworkSpec.from_dict(spec) if isinstance(spec, dict) else spec
    return ToyUNet(spec.spatial_dims, spec.in_channels, spec.num_classes, spec.features, spec.skip)


# --- storage counting ---------------------------------------------------------------------------

def test_tracker_counts_each_storage_once_and_uncounts_it_when_freed():
    with LiveTensorTracker() as tracker:
        a = torch.empty(1000, device="meta")
        view = a.view(10, 100)[:, :50]  # a view: same storage
        a.add_(1)  # in place: same storage
        b = view * 2  # (10, 50): a new storage of 500 floats
        assert tracker.live == 1500 * FLOAT
        del a, view
        assert tracker.live == 500 * FLOAT
        del b
    assert tracker.live == 0
    assert tracker.peak == 1500 * FLOAT


def test_tracker_ignores_named_storages_and_their_views():
    x = torch.empty(100, device="meta")
    with LiveTensorTracker() as tracker:
        tracker.ignore([x])
        y = x.view(10, 10)
        z = x + 1
        assert tracker.live == 100 * FLOAT
        with tracker.paused():
            w = torch.empty(50, device="meta")
        tracker.ignore([w])
        assert tracker.live == 100 * FLOAT
    del y, z, w


def test_saved_tensor_counter_counts_each_storage_once_even_after_its_graph_is_freed():
    x = torch.randn(1000, requires_grad=True)
    counter = SavedTensorCounter()
    counter.ignore([x])
    with counter.hooks():
        kept = (x * 2).sin()  # mul saves x (ignored); sin saves its 1000-float input
        twice = kept.cos() + kept.cos()  # both cos save kept: one storage
        for scale in (3, 4):  # each graph freed at once: its storage's id is free to be taken again
            (x * scale).sin()
    assert counter.bytes == 4 * 1000 * FLOAT
    twice.sum().backward()


def test_storage_bytes_counts_shared_storage_once():
    a = torch.empty(10, 10, device="meta")
    assert storage_bytes([a, a[0], [a.t()]]) == 100 * FLOAT


# --- the loss model -----------------------------------------------------------------------------

def test_deep_supervision_weights_follow_nnunet():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)
    assert w[-1] == 0 and sum(w) == pytest.approx(1) and w[0] == pytest.approx(2 * w[1])


def test_dice_ce_loss_is_low_for_a_perfect_prediction():
    target = torch.randint(0, 3, (2, 8, 8))
    perfect = [torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20]
    wrong = [torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 20]
    assert dice_ce_loss(perfect, [target]) < -0.99
    assert dice_ce_loss(wrong, [target]) > 10


# --- the estimate -------------------------------------------------------------------------------

def test_estimate_fields_add_up():
    net = toy()
    est = estimate_memory(net, (32, 32, 32), 2)
    step = trace_training_step(net, (32, 32, 32), 2)
    params = sum(p.numel() for p in net.parameters()) * FLOAT
    unused_head = net.heads[1].weight.numel() * FLOAT + net.heads[1].bias.numel() * FLOAT  # loss weight 0: no grad
    assert isinstance(est, MemoryEstimate)
    assert est.parameters == params
    assert est.gradients == params - unused_head
    assert est.optimizer == params  # SGD momentum
    assert est.activations == step.activations
    assert step.saved <= step.activations <= step.peak
    assert step.inputs == (2 * 32 ** 3 * FLOAT) + 2 * (32 ** 3 + 16 ** 3) * 8  # image + int64 targets
    assert step.workspace == memory.WORKSPACE_FACTOR * 2 * 8 * 32 ** 3 * FLOAT  # the first stage's conv output
    assert est.total == est.parameters + est.optimizer + step.inputs + step.peak + step.workspace
    assert 0 < est.inference < est.activations


@pytest.mark.parametrize("optimizer, copies", [("sgd", 1), ("adam", 2), ("adadelta", 2)])
def test_optimizer_state(optimizer, copies):
    est = estimate_memory(toy(2), (32, 32), 1, optimizer=optimizer)
    assert est.optimizer == copies * est.parameters


def test_activations_are_exactly_affine_in_batch():
    """Every feature map scales with the batch; what does not (folded gate weights, the loss) is constant."""
    one, two, three = (trace_training_step(toy(), (16, 16, 16), b) for b in (1, 2, 3))
    assert three.activations - one.activations == 2 * (two.activations - one.activations)
    assert 0 <= 2 * one.activations - two.activations < 1024


def test_sat_gates_need_less_than_plain_concatenation():
    est = {skip: estimate_memory(toy(skip=skip), (32, 32, 32), 2) for skip in ("org", "st", "at", "sat")}
    assert est["sat"].activations < est["org"].activations
    assert est["at"].activations < est["st"].activations


def test_bf16_halves_most_activations():
    fp32, bf16 = (estimate_memory(toy(), (32, 32, 32), 2, precision=p) for p in ("fp32", "bf16"))
    assert 0.45 < bf16.activations / fp32.activations < 0.6
    assert bf16.parameters == fp32.parameters


def test_model_is_left_unchanged():
    net = toy().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    estimate_memory(net, (16, 16, 16), 2, precision="bf16")
    assert not net.training
    assert all(p.grad is None and p.device.type == "cpu" for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_allocates_no_memory_for_activations_and_is_fast():
    with torch.device("meta"):
        big = toy(features=(32, 64, 128, 256, 320, 320))
    estimate_memory(big, (128, 128, 128), 2)  # first call: lazy imports and caches
    heap, cpu = heap_in_use(), time.process_time()
    est = estimate_memory(big, (128, 128, 128), 2)
    cpu = time.process_time() - cpu
    assert est.activations > 5 * 2 ** 30
    assert heap_in_use() - heap < 64 * 2 ** 20
    assert cpu < 2.0, f"estimate took {cpu:.2f} s of CPU time"  # about 0.5 s on a quiet machine


class MakesCpuTensors(torch.nn.Module):
    """Creates a CPU tensor inside forward, which cannot meet meta tensors."""

    def __init__(self, conv: type[torch.nn.Conv2d] = torch.nn.Conv2d):
        super().__init__()
        self.conv = conv(1, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * torch.ones(1, 4, 1, 1)


def test_a_module_that_makes_cpu_tensors_is_traced_with_fake_tensors():
    est = estimate_memory(MakesCpuTensors(), (64, 64), 2)
    assert est.activations >= 2 * (2 * 4 * 64 * 64 * FLOAT)  # the conv output and the product (logits)


def test_fake_tensor_trace_of_satnet_layers_at_batch_1():
    """satnet's Conv2d sends batch-1 fp32 CPU inputs to oneDNN, which cannot run on fake tensors; it takes
    torch's convolution there, so the trace (and the batch-1 inference trace) completes and sees the convolution."""
    from satnet.nets.layers import Conv2d

    step = trace_training_step(MakesCpuTensors(Conv2d), (64, 64), 1)
    assert step.activations >= 2 * (4 * 64 * 64 * FLOAT)
    assert step.workspace == memory.WORKSPACE_FACTOR * 4 * 64 * 64 * FLOAT  # the convolution output
    assert estimate_memory(MakesCpuTensors(Conv2d), (64, 64), 1).inference > 0


# --- specs and errors ---------------------------------------------------------------------------

@pytest.fixture
def toy_builder(monkeypatch):
    """satnet.nets.build_network replaced by the toy net, counting its calls."""
    calls = []

    def build(spec):
        calls.append(spec)
        return build_toy(spec)

    monkeypatch.setattr(satnet.nets, "build_network", build, raising=False)
    memory._network_from_json.cache_clear()
    memory._inference_for_spec.cache_clear()
    yield calls
    memory._network_from_json.cache_clear()
    memory._inference_for_spec.cache_clear()


def test_spec_dict_and_module_give_the_same_estimate(toy_builder):
    spec = toy_spec()
    from_spec = estimate_memory(spec, [32, 32, 32], 2)
    from_dict = estimate_memory(spec.to_dict(), [32, 32, 32], 2, optimizer="adam")
    assert from_spec == estimate_memory(build_toy(spec), [32, 32, 32], 2)
    assert from_dict.activations == from_spec.activations
    assert estimate_memory(spec, np.array([32, 32, 32]), np.int64(2)) == from_spec  # the planner's numpy integers
    assert len(toy_builder) == 1  # built once, on the meta device, then cached


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="adamw"), 'unknown optimizer "adamw" \\(did you mean "adam"\\?\\)'),
    (dict(precision="bf15"), 'unknown precision "bf15"'),
    (dict(batch_size=0), "batch_size must be a positive integer, not 0"),
    (dict(patch_size=[30, 32, 32]), "multiple of the network's total stride \\[4, 4, 4\\]"),
    (dict(patch_size=[32, 32]), "must have 3 entries"),
])
def test_bad_requests_raise_config_errors(toy_builder, kwargs, message):
    args = dict(model=toy_spec(), patch_size=[32, 32, 32], batch_size=2) | kwargs
    with pytest.raises(ConfigError, match=message):
        estimate_memory(**args)


def test_a_model_of_the_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="nn.Module, a NetworkSpec or its dict, not str"):
        estimate_memory("unet", [32, 32], 2)
