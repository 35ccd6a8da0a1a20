from __future__ import annotations

import io

import pytest
import torch

from satnet.errors import InputError
from satnet.nets import ARCH_NAMES, SKIP_MODES, build_network, encoder_channels
from tests.nets.tiny import SHAPES, tiny_spec


@pytest.mark.parametrize("skip", SKIP_MODES)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_shapes_deep_supervision_and_gradients(arch, dims, skip):
    torch.manual_seed(0)
    model = build_network(tiny_spec(arch, dims, skip))
    x = torch.randn(1, 2, *SHAPES[dims])
    outputs = model(x)
    full = SHAPES[dims]
    half = tuple(s // 2 for s in full)
    assert [tuple(o.shape) for o in outputs] == [(1, 3, *full), (1, 3, *half)]
    sum(o.square().mean() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    for name, gate in model.gates():
        if gate.select is not None:  # "ones" init sits on the clamp edge, where the gradient passes
            assert gate.select.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 3, *full)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_decoder_is_sized_from_gate_out_channels(arch):
    for skip, skip_width in (("org", None), ("sat", 1)):
        model = build_network(tiny_spec(arch, 2, skip))
        gates = dict(model.gates())
        widths = encoder_channels(model.spec)
        assert gates["skip0"].channels == widths[0]
        assert gates["skip1"].out_channels == (skip_width or widths[1])


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_odd_sizes_and_anisotropic_strides_and_kernels(arch):
    spec = tiny_spec(
        arch, 3, "sat",
        kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    )
    model = build_network(spec).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 6, 36, 20)).shape == (1, 3, 6, 36, 20)  # bottleneck 3 x 9 x 5
        assert build_network(tiny_spec(arch, 2)).eval()(torch.randn(1, 2, 36, 44)).shape == (1, 3, 36, 44)


def test_deep_supervision_scales_follow_anisotropic_strides():
    spec = tiny_spec("unet", 3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    outputs = build_network(spec).train()(torch.randn(1, 2, 4, 16, 8))
    assert [tuple(o.shape[2:]) for o in outputs] == [(4, 16, 8), (4, 8, 4)]


def test_without_deep_supervision_training_returns_a_tensor():
    model = build_network(tiny_spec("vnet", 2, deep_supervision=False)).train()
    assert model(torch.randn(1, 2, 32, 48)).shape == (1, 3, 32, 48)


def test_input_not_divisible_by_total_stride_is_refused_with_the_fix():
    model = build_network(tiny_spec("unet", 2))
    with pytest.raises(InputError, match=r"multiples of the total stride \[4, 4\]"):
        model(torch.randn(1, 2, 30, 48))
    with pytest.raises(InputError, match=r"\(B, 2, \*spatial\)"):
        model(torch.randn(1, 3, 32, 48))


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_state_dict_round_trip_gives_identical_outputs(arch):
    spec = tiny_spec(arch, 3, "sat", gate_init="glorot", norm="batch")
    torch.manual_seed(1)
    source = build_network(spec)
    source.train()(torch.randn(2, 2, *SHAPES[3]))  # move batch-norm running statistics off their defaults
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(2)
    target = build_network(spec)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 2, *SHAPES[3])
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_tiramisu_gates_inside_dense_blocks():
    model = build_network(tiny_spec("tiramisu", 2, "sat", convs_per_stage=[2, 3, 2]))
    names = {name for name, _ in model.gates()}
    # blocks in execution order: 0, 1 down; 2 bottleneck; 3 up at stage 1; 4 up at stage 0
    assert names == {"skip0", "skip1", "dense0.1", "dense1.1", "dense1.2", "dense2.1", "dense3.1", "dense3.2",
                     "dense4.1"}
    only_long = build_network(tiny_spec("tiramisu", 2, "sat", convs_per_stage=[2, 3, 2], dense_gates=False))
    assert {n for n, g in only_long.gates() if g.skip == "sat"} == {"skip0", "skip1"}


def test_tiramisu_encoder_channels_match_the_skips():
    spec = tiny_spec("tiramisu", 2, convs_per_stage=[2, 3, 4])
    model = build_network(spec)
    skips = model.encoder(torch.randn(1, 2, 32, 48))  # raw skips: no gates passed
    assert [s.shape[1] for s in skips] == encoder_channels(spec) == [8 + 2 * 4, 8 + 5 * 4, 4 * 4]


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_bf16_autocast_and_channels_last_forward_and_backward(arch):
    """What the trainer does on CPU: bf16 autocast on a channels_last_3d model and batch."""
    model = build_network(tiny_spec(arch, 3, "sat")).to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 2, *SHAPES[3]).to(memory_format=torch.channels_last_3d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(x)
    assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in outputs)
    sum(o.float().square().mean() for o in outputs).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("norm", ["instance", "batch", "group", "none"])
def test_every_norm_trains(norm):
    for arch in ARCH_NAMES:
        model = build_network(tiny_spec(arch, 2, "sat", norm=norm))
        sum(o.square().mean() for o in model(torch.randn(2, 2, 16, 16))).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("dims,memory_format", [(2, torch.channels_last), (3, torch.channels_last_3d)])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_channels_last_gives_the_same_logits(arch, dims, memory_format):
    torch.manual_seed(0)
    model = build_network(tiny_spec(arch, dims, "sat")).eval()
    x = torch.randn(1, 2, *SHAPES[dims])
    with torch.no_grad():
        reference = model(x)
        model.to(memory_format=memory_format)
        out = model(x.to(memory_format=memory_format))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_unfused_network_matches_fused():
    torch.manual_seed(0)
    model = build_network(tiny_spec("unet", 2, "sat", gate_init="glorot")).eval()
    x = torch.randn(1, 2, 32, 48)
    with torch.no_grad():
        fused = model(x)
        for _, gate in model.gates():
            gate.fused = False
        torch.testing.assert_close(model(x), fused, rtol=0, atol=1e-5)
