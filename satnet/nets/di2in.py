"""DI2IN, the Deep Image-to-Image Network (Yang et al., MICCAI 2017, the generator of their adversarial
liver segmentation), with SAT skip gates.

With n = spec.num_stages, f = spec.features and d_i = max(1, f_i // 2) (`di2in_decoder_widths`):
- Encoder stage i: convs_per_stage[i] (default 2) x (conv kernel_sizes[i] -> norm -> ReLU) at f_i; the
  first conv of stage i > 0 has stride strides[i]: DI2IN downsamples with strided convolutions, no pooling.
- Decoder stage i (deep to shallow): interpolation upsampling by strides[i+1] (bilinear / trilinear, no
  parameters: DI2IN's upscaling layers), concat with gate "skip<i>"(encoder stage i), one conv
  kernel_sizes[i] -> norm -> ReLU to d_i channels. Its input width is d_{i+1} (f_{n-1} below the deepest
  skip) plus the gate's out_channels, so only that first convolution depends on the skip mode.
- Heads: 1x1 convolutions to num_classes at every decoder stage when deep supervision is on (DI2IN's
  multi-level deep supervision), else at full resolution; softmax over the classes in the loss.
At the paper's widths (f = 16-32-64-128-128, 1 input channel, one sigmoid output, no deep-supervision
heads) this is 2,353,089 parameters with plain skips and 2,063,053 with SAT gates, the SAT paper's counts;
docs/architecture.md explains the layout and docs/benchmarks/params.md the counts.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from satnet.nets.blocks import SegmentationHeads, SegmentationNetwork, stage_list
from satnet.nets.gate import skip_gate
from satnet.nets.layers import Upsample
from satnet.nets.spec import NetworkSpec
from satnet.nets.unet import PlainEncoder, UNetDecoder, conv_stack

DEFAULT_CONVS = (2,)  # two convolutions per encoder stage, the first strided (below full resolution)
ACT = "relu"


def di2in_decoder_widths(spec: NetworkSpec) -> list[int]:
    """Channels of each decoder stage's output, full resolution first: half the encoder width of that level."""
    return [max(1, f // 2) for f in spec.features[:-1]]


def interpolation_upsampler(spatial_dims: int, stride: Sequence[int]) -> nn.Upsample:
    """Bilinear (2D) or trilinear (3D) upsampling by `stride` per axis: no parameters, nothing saved for backward;
    in the activation's precision under autocast (satnet.nets.layers.Upsample)."""
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return Upsample(scale_factor=tuple(float(s) for s in stride), mode=mode, align_corners=False)


class DI2INDecoder(UNetDecoder):
    """The U-Net decoder's forward (upsample, concat the gated skip, convolve) with DI2IN's parameter-free
    upsampling and half-width stages; lists are indexed by the stage they serve (0 = full resolution)."""

    def __init__(self, spec: NetworkSpec):
        nn.Module.__init__(self)  # UNetDecoder's forward, DI2IN's modules
        f, dims = spec.features, spec.spatial_dims
        d = di2in_decoder_widths(spec)
        below = d[1:] + [f[-1]]  # width arriving from the stage underneath
        levels = range(spec.num_stages - 1)
        self.skip_gates = nn.ModuleList(skip_gate(spec, i, f[i]) for i in levels)
        self.ups = nn.ModuleList(interpolation_upsampler(dims, spec.strides[i + 1]) for i in levels)
        self.stages = nn.ModuleList(
            conv_stack(spec, i, below[i] + self.skip_gates[i].out_channels, 1, [1] * dims, ACT, out=d[i])
            for i in levels
        )
        self.heads = SegmentationHeads(dims, d, spec.num_classes, spec.deep_supervision)


class DI2IN(SegmentationNetwork):
    """DI2IN from a NetworkSpec; forward(x (B, C_in, *spatial)) -> logits (see SegmentationHeads)."""

    downsampling = "centred"  # strided 'same' convolutions

    def __init__(self, spec: NetworkSpec):
        super().__init__(spec)
        convs = stage_list(spec.convs_per_stage, DEFAULT_CONVS, spec.num_stages)
        self.encoder = PlainEncoder(spec, convs, ACT)
        self.decoder = DI2INDecoder(spec)
