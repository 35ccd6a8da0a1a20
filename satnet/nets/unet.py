"""nnU-Net-style plain U-Net with SAT skip gates.

Encoder stage i: convs_per_stage[i] x (conv kernel_sizes[i] -> norm -> LeakyReLU(0.01)); the
first conv of stage i has stride strides[i] (strided-conv downsampling; stage 0 stride 1).
Decoder stage i (deep to shallow): transposed conv features[i+1] -> features[i] (kernel = stride =
strides[i+1]), concat with gate_i(skip_i) (applied by the encoder as skip_i is made), then convs_per_stage[i] convs as in the encoder; the
first one takes features[i] + gate_i.out_channels channels. 1x1 heads to num_classes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from satnet.nets.blocks import ConvNormAct, SegmentationHeads, SegmentationNetwork, gate_skip, stage_list, upsampler
from satnet.nets.gate import skip_gate
from satnet.nets.spec import NetworkSpec

DEFAULT_CONVS = (2,)  # nnU-Net: two convs per stage


def conv_stack(spec: NetworkSpec, stage: int, in_channels: int, num_convs: int, stride: list[int],
               act: str = "lrelu", out: int | None = None) -> nn.Sequential:
    """num_convs conv-norm-act at `out` channels (default features[stage]); the first has `stride`."""
    out = spec.features[stage] if out is None else out
    kernel = spec.kernel_sizes[stage]
    return nn.Sequential(*(
        ConvNormAct(spec.spatial_dims, in_channels if j == 0 else out, out, kernel, stride if j == 0 else 1, spec.norm,
                    act)
        for j in range(num_convs)
    ))


class PlainEncoder(nn.Module):
    """Returns the output of every stage, shallow to deep (the last one is the bottleneck)."""

    def __init__(self, spec: NetworkSpec, convs: list[int], act: str = "lrelu"):
        super().__init__()
        channels = [spec.in_channels] + spec.features[:-1]
        self.stages = nn.ModuleList(
            conv_stack(spec, i, channels[i], convs[i], spec.strides[i], act) for i in range(spec.num_stages)
        )

    def forward(self, x: torch.Tensor, gates: Sequence[nn.Module] | None = None) -> list[torch.Tensor]:
        """gates: the decoder's skip gates, applied to each skip as it is produced (None: raw skips)."""
        skips = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x = stage(x)
            skips.append(x if i == last else gate_skip(gates, i, x))
        return skips


class UNetDecoder(nn.Module):
    """Consumes the encoder's gated skips; every list is indexed by the stage it serves (0 = full resolution)."""

    def __init__(self, spec: NetworkSpec, convs: list[int]):
        super().__init__()
        f, dims = spec.features, spec.spatial_dims
        levels = range(spec.num_stages - 1)
        self.skip_gates = nn.ModuleList(skip_gate(spec, i, f[i]) for i in levels)
        self.ups = nn.ModuleList(upsampler(dims, f[i + 1], f[i], spec.strides[i + 1]) for i in levels)
        self.stages = nn.ModuleList(
            conv_stack(spec, i, f[i] + self.skip_gates[i].out_channels, convs[i], [1] * dims) for i in levels
        )
        self.heads = SegmentationHeads(dims, f[:-1], spec.num_classes, spec.deep_supervision)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        all_outputs = self.heads.uses_every_stage()
        for i in reversed(range(len(self.stages))):
            x = torch.cat([self.ups[i](x), skips[i]], dim=1)
            for layer in self.stages[i]:  # not self.stages[i](x): a call's argument lives until the call returns
                x = layer(x)
            if all_outputs or i == 0:
                outputs.append(x)
        return self.heads(outputs[::-1])


class UNet(SegmentationNetwork):
    """Plain U-Net from a NetworkSpec; forward(x (B, C_in, *spatial)) -> logits (see SegmentationHeads)."""

    downsampling = "centred"  # strided 'same' convolutions

    def __init__(self, spec: NetworkSpec):
        super().__init__(spec)
        convs = stage_list(spec.convs_per_stage, DEFAULT_CONVS, spec.num_stages)
        self.encoder = PlainEncoder(spec, convs)
        self.decoder = UNetDecoder(spec, convs)
