"""FC-DenseNet ("The One Hundred Layers Tiramisu", Jegou et al. 2017) with SAT gates.

With n = spec.num_stages, L = convs_per_stage (layers per dense block), k = growth_rate:
- stem: conv kernel_sizes[0], in_channels -> m_0 = features[0] (features[1:] are not used: every
  other width follows from L and k, see `tiramisu_widths`).
- down stage i < n-1: dense block of L[i] layers; its output concat(x, new) (m_{i+1} = m_i + L[i] k
  channels) is the long skip i; transition down: norm -> ReLU -> 1x1 conv -> dropout -> max-pool
  with kernel = stride = strides[i+1].
- bottleneck (stage n-1): dense block of L[n-1] layers; only its L[n-1] k new channels go up.
- up stage i (deep to shallow): transposed conv (kernel = stride = strides[i+1]) keeping the width,
  concat with gate "skip<i>"(long skip i), dense block of L[i] layers; only its new channels go up,
  except at stage 0 where concat(input, new) feeds the 1x1 head.
- dense layer: norm -> ReLU -> conv kernel_sizes[stage] -> dropout (0.2, as the paper).

SAT inside dense blocks (the paper's Fig. 4): layer j >= 1 of a block with input x sees
concat(gate "dense<b>.<j>"(x), y_0, ..., y_{j-1}) instead of concat(x, y_0, ..., y_{j-1}): the skip
that carries the block input past its first layers is gated, one gate per layer. Layer 0 sees x
itself (its direct input, not a skip), and the block output concat(x, new) is not gated, so the
stage widths do not depend on the skip mode. b numbers dense blocks in execution order: 0..n-2 down
(stage b), n-1 the bottleneck, n..2n-2 up (stage 2n-2-b). spec.dense_gates=False keeps only the
long-skip gates.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from satnet.nets.blocks import (
    SegmentationHeads,
    SegmentationNetwork,
    conv_cls,
    gate_skip,
    make_norm,
    same_padding,
    stage_list,
    upsampler,
)
from satnet.nets.gate import skip_gate
from satnet.nets.layers import MaxPool2d, MaxPool3d
from satnet.nets.spec import NetworkSpec

DEFAULT_LAYERS = (4, 5, 7, 10, 12, 15)  # FC-DenseNet103 at 6 stages; the bottleneck takes the last entry
DROPOUT = 0.2


def tiramisu_layers(spec: NetworkSpec) -> list[int]:
    """Layers per dense block, stage by stage (the last is the bottleneck)."""
    if spec.convs_per_stage is not None:
        return list(spec.convs_per_stage)
    return stage_list(None, DEFAULT_LAYERS[:-1], spec.num_stages - 1) + [DEFAULT_LAYERS[-1]]


def tiramisu_widths(spec: NetworkSpec) -> list[int]:
    """Channels of each encoder stage's output: the long skips m_1..m_{n-1}, then the bottleneck's L[n-1] k."""
    layers, k = tiramisu_layers(spec), spec.growth_rate
    widths, m = [], spec.features[0]
    for num in layers[:-1]:
        m += num * k
        widths.append(m)
    return widths + [layers[-1] * k]


def pre_activation(spec: NetworkSpec, channels: int) -> list[nn.Module]:
    """norm -> ReLU; the ReLU is in place only after a norm (without one it would overwrite the block input)."""
    return [make_norm(spec.norm, spec.spatial_dims, channels), nn.ReLU(inplace=spec.norm != "none")]


class DenseBlock(nn.Module):
    """forward(x (B, C, *s)) -> the new features (B, num_layers * growth_rate, *s)."""

    def __init__(self, spec: NetworkSpec, stage: int, block: int, in_channels: int, num_layers: int):
        super().__init__()
        k, dims = spec.growth_rate, spec.spatial_dims
        level = min(stage, spec.num_stages - 2)  # the bottleneck's block takes the coarsest skip level's mode
        self.skip_gates = nn.ModuleList(
            skip_gate(spec, level, in_channels, f"dense{block}.{j}", spec.dense_gates) for j in range(1, num_layers)
        )
        widths = [in_channels] + [g.out_channels + j * k for j, g in enumerate(self.skip_gates, start=1)]
        kernel = spec.kernel_sizes[stage]
        self.layers = nn.ModuleList(
            nn.Sequential(*pre_activation(spec, w), conv_cls(dims)(w, k, tuple(kernel), padding=same_padding(kernel)),
                          nn.Dropout(DROPOUT, inplace=True))
            for w in widths
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = [self.layers[0](x)]
        for gate, layer in zip(self.skip_gates, self.layers[1:]):
            new.append(layer(torch.cat([gate(x), *new], dim=1)))
        return torch.cat(new, dim=1)


class TransitionDown(nn.Sequential):
    def __init__(self, spec: NetworkSpec, channels: int, stride: list[int]):
        dims = spec.spatial_dims
        pool = MaxPool2d if dims == 2 else MaxPool3d
        super().__init__(*pre_activation(spec, channels), conv_cls(dims)(channels, channels, 1),
                         nn.Dropout(DROPOUT, inplace=True), pool(tuple(stride), tuple(stride)))


class TiramisuEncoder(nn.Module):
    def __init__(self, spec: NetworkSpec, layers: list[int]):
        super().__init__()
        n, kernel = spec.num_stages, spec.kernel_sizes[0]
        widths = tiramisu_widths(spec)
        inputs = [spec.features[0]] + widths[:-1]  # width entering each dense block, the bottleneck's last
        self.stem = conv_cls(spec.spatial_dims)(
            spec.in_channels, spec.features[0], tuple(kernel), padding=same_padding(kernel)
        )
        self.blocks = nn.ModuleList(DenseBlock(spec, i, i, inputs[i], layers[i]) for i in range(n - 1))
        self.downs = nn.ModuleList(TransitionDown(spec, widths[i], spec.strides[i + 1]) for i in range(n - 1))
        self.bottleneck = DenseBlock(spec, n - 1, n - 1, inputs[n - 1], layers[-1])

    def forward(self, x: torch.Tensor, gates: Sequence[nn.Module] | None = None) -> list[torch.Tensor]:
        """gates: the decoder's long-skip gates, applied to each skip as it is produced (None: raw skips)."""
        x = self.stem(x)
        skips = []
        for i, (block, down) in enumerate(zip(self.blocks, self.downs)):
            x = torch.cat([x, block(x)], dim=1)
            skips.append(gate_skip(gates, i, x))
            x = down(x)
        skips.append(self.bottleneck(x))
        return skips


class TiramisuDecoder(nn.Module):
    """Lists are indexed by the stage they serve (0 = full resolution)."""

    def __init__(self, spec: NetworkSpec, layers: list[int]):
        super().__init__()
        n, k, dims = spec.num_stages, spec.growth_rate, spec.spatial_dims
        widths = tiramisu_widths(spec)
        levels = range(n - 1)
        self.skip_gates = nn.ModuleList(
            skip_gate(spec, i, widths[i]) for i in levels
        )
        self.ups = nn.ModuleList(
            upsampler(dims, layers[i + 1] * k, layers[i + 1] * k, spec.strides[i + 1]) for i in levels
        )
        block_inputs = [layers[i + 1] * k + self.skip_gates[i].out_channels for i in levels]
        self.blocks = nn.ModuleList(DenseBlock(spec, i, 2 * n - 2 - i, block_inputs[i], layers[i]) for i in levels)
        head_channels = [block_inputs[0] + layers[0] * k] + [layers[i] * k for i in range(1, n - 1)]
        self.heads = SegmentationHeads(dims, head_channels, spec.num_classes, spec.deep_supervision)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        all_outputs = self.heads.uses_every_stage()
        for i in reversed(range(len(self.blocks))):
            x0 = torch.cat([self.ups[i](x), skips[i]], dim=1)
            x = self.blocks[i](x0)
            if i == 0:
                outputs.append(torch.cat([x0, x], dim=1))
            elif all_outputs:
                outputs.append(x)
        return self.heads(outputs[::-1])


class Tiramisu(SegmentationNetwork):
    """FC-DenseNet from a NetworkSpec; forward(x (B, C_in, *spatial)) -> logits (see SegmentationHeads)."""

    downsampling = "block"  # max pooling with kernel = stride

    def __init__(self, spec: NetworkSpec):
        super().__init__(spec)
        layers = tiramisu_layers(spec)
        self.encoder = TiramisuEncoder(spec, layers)
        self.decoder = TiramisuDecoder(spec, layers)
