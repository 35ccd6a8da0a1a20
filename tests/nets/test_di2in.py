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
from tests.nets.tiny import tiny_spec

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
