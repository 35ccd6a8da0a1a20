"""Where each network puts its coarser levels' voxels, measured through its receptive fields, against
`deep_supervision_offsets` (what the deep-supervision targets are sampled with).

With positive weights and a positive input every (leaky) ReLU passes, so the support of the input
gradient of one voxel is its receptive field; the field's centre per axis is where the voxel lies.
Max pooling routes the gradient to one voxel of its window, so it is swapped for average pooling
over the same window (same kernel, stride and padding): the geometry is the window's.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from satnet.nets import NetworkSpec, build_network, deep_supervision_offsets, deep_supervision_scales

SIZE = 128
# anisotropic on purpose: factors per level (2, 2), (4, 2), (8, 4), then the bottleneck (8, 8)
STRIDES = [[1, 1], [2, 2], [2, 1], [2, 2], [1, 2]]


def probe_network(arch: str) -> tuple[NetworkSpec, nn.Module]:
    spec = NetworkSpec(arch=arch, spatial_dims=2, in_channels=1, num_classes=2, features=[4] * 5,
                       kernel_sizes=[[3, 3]] * 5, strides=STRIDES, convs_per_stage=[1] * 5, growth_rate=2,
                       norm="none", skip="org")  # a norm would spread every voxel over the whole image
    net = build_network(spec).train()
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, (nn.MaxPool2d, nn.MaxPool3d)):
            parent = net.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    return spec, net


def field_centre(output: torch.Tensor, source: torch.Tensor, voxel: list[int]) -> list[float]:
    """Per axis, the centre of the support of d output[0, :, voxel].sum() / d source[0]."""
    grad, = torch.autograd.grad(output[(0, slice(None), *voxel)].sum(), source, retain_graph=True)
    support = (grad[0] != 0).any(0)  # (Y, X)
    centres = []
    for axis in range(2):
        idx = support.any(1 - axis).nonzero().flatten()
        assert 0 < idx.min() and idx.max() < support.shape[axis] - 1, "the field reaches the border: enlarge SIZE"
        centres.append((idx.min() + idx.max()).item() / 2)
    return centres


@pytest.mark.parametrize("arch", ["unet", "vnet", "tiramisu", "di2in"])
def test_each_level_lies_where_deep_supervision_offsets_say(arch):
    spec, net = probe_network(arch)
    scales, offsets = deep_supervision_scales(spec), deep_supervision_offsets(spec)
    x = torch.rand(1, 1, SIZE, SIZE, requires_grad=True)
    skips = net.encoder(x, None)
    for level in range(1, len(scales)):
        factors = [round(1 / s) for s in scales[level]]
        voxel = [SIZE // f // 2 for f in factors]
        expected = [f * i + o for f, i, o in zip(factors, voxel, offsets[level])]
        assert field_centre(skips[level], x, voxel) == expected, f"level {level}, factors {factors}"
    block = arch in ("vnet", "tiramisu")
    assert offsets[3] == ([3.5, 1.5] if block else [0.0, 0.0])  # (8 - 1) / 2, (4 - 1) / 2


@pytest.mark.parametrize("arch", ["unet", "vnet", "tiramisu", "di2in"])
def test_each_deep_supervision_output_lies_on_its_levels_skip(arch):
    """Output voxel i of a level is centred on the level's skip voxel i: the skip sets its place, whatever
    the upsampled coarser path adds (transposed convolutions or interpolation place that asymmetrically)."""
    spec, net = probe_network(arch)
    x = torch.rand(1, 1, SIZE, SIZE)
    skips = [s.detach().requires_grad_(True) for s in net.encoder(x, None)]
    outputs = net.decoder(skips)
    assert len(outputs) == len(deep_supervision_scales(spec))
    for level, output in enumerate(outputs):
        voxel = [n // 2 for n in output.shape[2:]]
        assert field_centre(output, skips[level], voxel) == voxel, f"level {level}"
