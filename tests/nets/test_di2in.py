"""DI2IN: the SAT paper's parameter counts at the paper's widths, and the layout docs/architecture.md describes.

Shapes, gradients, every skip mode and variant in 2D and 3D, and the JSON round trip are covered with the
other networks (test_networks.py and test_skip_variants.py are parametrised over ARCH_NAMES).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from satnet.nets import build_network, count_parameters
from satnet.nets.di2in import di2in_decoder_widths
from satnet.nets.spec import NetworkSpec
from tests.nets.tiny import SHAPES, tiny_spec

PAPER = {"org": 2_353_089, "sat": 2_063_053}  # the SAT paper's DI2IN counts (liver CT, one map per skip)


def paper_spec(skip: str) -> NetworkSpec:
    """DI2IN at the widths that reproduce the paper's counts: 16-32-64-128-128, 3x3x3, stride 2, affine norm."""
    return NetworkSpec(arch="di2in", spatial_dims=3, in_channels=1, num_classes=2, features=[16, 32, 64, 128, 128],
                       kernel_sizes=[[3, 3, 3]] * 5, strides=[[1, 1, 1]] + [[2, 2, 2]] * 4, skip=skip,
                       deep_supervision=False, norm="batch")


@pytest.mark.parametrize("skip", list(PAPER))
def test_paper_widths_give_the_sat_papers_counts(skip):
    # satnet's head has a logit per class (2); the paper's one sigmoid output has one 1x1 filter (8 weights + bias) less
    single_output = count_parameters(paper_spec(skip)) - (di2in_decoder_widths(paper_spec(skip))[0] + 1)
    assert single_output == PAPER[skip]


@pytest.mark.parametrize("variant", [dict(skip="org"), dict(skip="st"), dict(skip="at"), dict(skip="sat"),
                                     dict(skip="sat", skip_channels=4), dict(skip="sat", skip_levels=["sat:2", "org"])])
def test_first_decoder_conv_takes_the_gate_out_channels(variant):
    spec = tiny_spec("di2in", 3, **variant)
    net = build_network(spec)
    d = di2in_decoder_widths(spec)
    below = d[1:] + [spec.features[-1]]
    for i, (gate, stage) in enumerate(zip(net.decoder.skip_gates, net.decoder.stages)):
        conv = stage[0][0]
        assert conv.in_channels == below[i] + gate.out_channels and conv.out_channels == d[i], (variant, i)


def test_layout_strided_convs_parameter_free_upsampling_relu():
    net = build_network(tiny_spec("di2in", 3, "sat"))
    assert not any(isinstance(m, nn.modules.conv._ConvTransposeNd) for m in net.modules())
    assert not any(isinstance(m, (nn.MaxPool3d, nn.AvgPool3d)) for m in net.modules())
    firsts = [stage[0][0] for stage in net.encoder.stages]
    assert [tuple(c.stride) for c in firsts] == [(1, 1, 1), (2, 2, 2), (2, 2, 2)]
    assert all(sum(p.numel() for p in up.parameters()) == 0 for up in net.decoder.ups)
    assert {type(m) for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU))} == {nn.ReLU}
    assert [h.in_channels for h in net.decoder.heads.heads] == [4, 8]  # half of features 8, 16


def test_upsampling_follows_anisotropic_strides_in_2d_and_3d():
    spec = tiny_spec("di2in", 3, "sat", kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3]],
                     strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    net = build_network(spec).train()
    outputs = net(torch.randn(1, 2, 4, 16, 8))
    assert [tuple(o.shape[2:]) for o in outputs] == [(4, 16, 8), (4, 8, 4)]
    net2 = build_network(tiny_spec("di2in", 2, "org", strides=[[1, 1], [2, 1], [2, 2]])).eval()
    with torch.no_grad():
        assert net2(torch.randn(1, 2, 12, 10)).shape == (1, 3, 12, 10)


class _Interpolations(torch.overrides.TorchFunctionMode):
    """Records (input dtype, CPU autocast on) for every F.interpolate call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is nn.functional.interpolate:
            self.calls.append((args[0].dtype, torch.is_autocast_enabled("cpu")))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dims", [2, 3])
def test_upsampling_runs_in_the_activations_precision_under_autocast(dims):
    """CUDA autocast lists upsample_bilinear2d and upsample_trilinear3d as fp32 ops, CPU autocast does not: on a
    GPU every decoder stage would be upsampled to fp32 and concatenated with its skip in fp32, more than the memory
    model (traced under CPU autocast) counts. DI2IN's upsampling leaves autocast and keeps the activation's dtype."""
    net = build_network(tiny_spec("di2in", dims, "sat")).train()
    with torch.autocast("cpu", dtype=torch.bfloat16), _Interpolations() as seen:
        outputs = net(torch.randn(1, 2, *SHAPES[dims]))
    assert seen.calls == [(torch.bfloat16, False)] * 2  # two decoder stages
    assert all(o.dtype == torch.bfloat16 for o in outputs)
    with _Interpolations() as seen:  # fp32 outside autocast: unchanged
        net(torch.randn(1, 2, *SHAPES[dims]))
    assert seen.calls == [(torch.float32, False)] * 2
