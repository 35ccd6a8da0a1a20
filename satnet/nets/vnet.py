"""V-Net (Milletari et al. 2016) with SAT skip gates.

Every stage is residual: out = PReLU(convs(x) + residual), where convs is convs_per_stage[i] x
(conv kernel_sizes[i] -> norm -> PReLU), the last without its PReLU (it comes after the sum).
- Encoder stage 0: residual = 1x1 projection of the input (V-Net replicated its one input channel
  16 times; a projection does the same for any number of input channels).
- Encoder stage i > 0: x = down(x), a conv with kernel = stride = strides[i] (V-Net's 2x2x2
  stride-2 conv) -> norm -> PReLU, doubling the width as the spec says; residual = x.
- Decoder stage i: up = transposed conv features[i+1] -> features[i] (kernel = stride) -> norm ->
  PReLU; x = concat(up, gate_i(skip_i)); residual = up, so the stage width does not depend on
  the skip mode.
V-Net's 5x5x5 kernels come from the spec (the planner gives 5, (1, 5, 5) on a coarse axis).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from satnet.nets.blocks import (
    ConvNormAct,
    SegmentationHeads,
    SegmentationNetwork,
    conv_cls,
    gate_skip,
    make_act,
    make_norm,
    stage_list,
    upsampler,
)
from satnet.nets.gate import skip_gate
from satnet.nets.spec import NetworkSpec

DEFAULT_CONVS = (1, 2, 3)  # V-Net: 1, 2, then 3 convs per stage


class ResidualConvs(nn.Module):
    """forward(x, residual) = PReLU(convs(x) + residual); convs map in_channels -> out_channels."""

    def __init__(self, spec: NetworkSpec, stage: int, in_channels: int, num_convs: int):
        super().__init__()
        out, dims, kernel = spec.features[stage], spec.spatial_dims, spec.kernel_sizes[stage]
        self.convs = nn.Sequential(*(
            ConvNormAct(dims, in_channels if j == 0 else out, out, kernel, 1, spec.norm,
                        "prelu" if j < num_convs - 1 else None)
            for j in range(num_convs)
        ))
        self.act = make_act("prelu", out)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + residual)


class VNetEncoder(nn.Module):
    def __init__(self, spec: NetworkSpec, convs: list[int]):
        super().__init__()
        f, dims = spec.features, spec.spatial_dims
        self.project = conv_cls(dims)(spec.in_channels, f[0], 1)
        self.downs = nn.ModuleList(
            ConvNormAct(dims, f[i - 1], f[i], spec.strides[i], spec.strides[i], spec.norm, "prelu", padding=[0] * dims)
            for i in range(1, spec.num_stages)
        )
        self.stages = nn.ModuleList(
            ResidualConvs(spec, i, spec.in_channels if i == 0 else f[i], convs[i]) for i in range(spec.num_stages)
        )

    def forward(self, x: torch.Tensor, gates: Sequence[nn.Module] | None = None) -> list[torch.Tensor]:
        """gates: the decoder's skip gates, applied to each skip as it is produced (None: raw skips)."""
        x = self.stages[0](x, self.project(x))
        skips = []
        for i, (down, stage) in enumerate(zip(self.downs, self.stages[1:])):
            skips.append(gate_skip(gates, i, x))
            x = down(x)
            x = stage(x, x)
        skips.append(x)
        return skips


class VNetDecoder(nn.Module):
    def __init__(self, spec: NetworkSpec, convs: list[int]):
        super().__init__()
        f, dims = spec.features, spec.spatial_dims
        levels = range(spec.num_stages - 1)
        self.skip_gates = nn.ModuleList(skip_gate(spec, i, f[i]) for i in levels)
        self.ups = nn.ModuleList(
            nn.Sequential(upsampler(dims, f[i + 1], f[i], spec.strides[i + 1]), make_norm(spec.norm, dims, f[i]),
                          make_act("prelu", f[i]))
            for i in levels
        )
        self.stages = nn.ModuleList(
            ResidualConvs(spec, i, f[i] + self.skip_gates[i].out_channels, convs[i]) for i in levels
        )
        self.heads = SegmentationHeads(dims, f[:-1], spec.num_classes, spec.deep_supervision)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        all_outputs = self.heads.uses_every_stage()
        for i in reversed(range(len(self.stages))):
            up = self.ups[i](x)
            x = self.stages[i](torch.cat([up, skips[i]], dim=1), up)
            if all_outputs or i == 0:
                outputs.append(x)
        return self.heads(outputs[::-1])


class VNet(SegmentationNetwork):
    """V-Net from a NetworkSpec; forward(x (B, C_in, *spatial)) -> logits (see SegmentationHeads)."""

    downsampling = "block"  # convolutions with kernel = stride

    def __init__(self, spec: NetworkSpec):
        super().__init__(spec)
        convs = stage_list(spec.convs_per_stage, DEFAULT_CONVS, spec.num_stages)
        self.encoder = VNetEncoder(spec, convs)
        self.decoder = VNetDecoder(spec, convs)
