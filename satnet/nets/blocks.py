"""Building blocks shared by the three networks: layer factories by `spatial_dims`, conv-norm-act,
segmentation heads with deep supervision, and the encoder/decoder network shell.

Shapes are (B, C, Y, X) in 2D and (B, C, Z, Y, X) in 3D; per-axis lists follow the same order.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn

from satnet.errors import InputError
from satnet.nets.gate import SkipGate, iter_gates
from satnet.nets.layers import GroupNorm, conv_cls, instance_norm_cls
from satnet.nets.spec import NetworkSpec

LEAKY_SLOPE = 1e-2  # nnU-Net's LeakyReLU slope


def conv_transpose_cls(spatial_dims: int) -> type[nn.Module]:
    return nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d


def same_padding(kernel: Sequence[int]) -> list[int]:
    """Padding that keeps the size of a stride-1 convolution with odd `kernel`."""
    return [k // 2 for k in kernel]


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer by name; "group" uses gcd(C, 8) groups so any width works.

    "instance" is satnet.nets.layers' InstanceNorm (torch's, computed as group norm: faster on the CPU).
    """
    if norm == "instance":
        return instance_norm_cls(spatial_dims)(channels, eps=1e-5, affine=True)
    if norm == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "group":
        return GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


def make_act(act: str, channels: int, inplace: bool = True) -> nn.Module:
    """"lrelu" (slope 0.01), "relu" or "prelu" (one slope per channel, as V-Net)."""
    if act == "lrelu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=inplace)
    if act == "relu":
        return nn.ReLU(inplace=inplace)
    if act == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown activation {act!r}")


class ConvNormAct(nn.Sequential):
    """conv(kernel, stride, padding) -> norm -> activation (act=None: no activation).

    padding None means 'same' (kernel // 2); a downsampling conv with kernel = stride passes 0.

    In-place activations are safe here: they overwrite the fresh norm (or conv) output, which
    neither backward needs.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int] | int = 1,
        norm: str = "instance",
        act: str | None = "lrelu",
        padding: Sequence[int] | None = None,
    ):
        padding = same_padding(kernel) if padding is None else padding
        layers: list[nn.Module] = [
            conv_cls(spatial_dims)(in_channels, out_channels, tuple(kernel), stride=stride, padding=tuple(padding)),
            make_norm(norm, spatial_dims, out_channels),
        ]
        if act is not None:
            layers.append(make_act(act, out_channels))
        super().__init__(*layers)


def upsampler(spatial_dims: int, in_channels: int, out_channels: int, stride: Sequence[int]) -> nn.Module:
    """Transposed convolution with kernel = stride: exactly inverts a stride-s downsampling in size."""
    return conv_transpose_cls(spatial_dims)(in_channels, out_channels, tuple(stride), stride=tuple(stride))


class SegmentationHeads(nn.Module):
    """1x1 convolutions to logits, one per decoder stage when deep supervision is on.

    `channels` lists the decoder stage widths from full resolution down. forward takes the decoder
    stage outputs in the same order and returns a list of logits [full, 1/2, 1/4, ...] in training
    mode with deep supervision, else the full-resolution logits (B, num_classes, *spatial).
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], num_classes: int, deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        used = channels if deep_supervision else channels[:1]
        self.heads = nn.ModuleList(conv_cls(spatial_dims)(c, num_classes, 1) for c in used)

    def uses_every_stage(self) -> bool:
        """Whether forward reads every decoder stage's output (else only the full-resolution one)."""
        return self.deep_supervision and self.training

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        if self.uses_every_stage():
            return [head(f) for head, f in zip(self.heads, features)]
        return self.heads[0](features[0])


class SegmentationNetwork(nn.Module):
    """encoder(x) -> list of skips (shallow to deep); decoder(skips) -> logits. Subclasses build both.

    Subclasses say in `downsampling` where their encoder puts the voxels of each coarser level on the
    input grid (the deep-supervision targets are sampled there, satnet.nets.deep_supervision_offsets):
    - "centred": strided convolutions with an odd kernel and 'same' padding; voxel i of a level at
      factor f is centred on input voxel f*i.
    - "block": kernel = stride downsampling (pooling, or a convolution whose kernel is its stride);
      voxel i covers input voxels f*i .. f*i + f - 1, centred on f*i + (f - 1) / 2.
    The decoder output of a level lies on that level's grid: it is computed by stride-1 'same'
    convolutions from the level's skip concatenated with the upsampled coarser features.
    """

    encoder: nn.Module
    decoder: nn.Module
    downsampling: str

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        self.total_stride = spec.total_stride()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """x (B, in_channels, *spatial), each spatial size a multiple of the total stride.

        The encoder passes each skip through its decoder gate as soon as the skip is produced, so
        only what the gate transfers (one channel for `at`/`sat`) waits for the decoder; the
        C-channel feature map is freed once the next encoder stage has read it. At inference that
        is what makes SAT's memory peak lower than ORG's (docs/memory.md); in training autograd
        keeps the feature maps for the backward pass either way.
        """
        self.check_input(x)
        skips = self.encoder(x, self.decoder.skip_gates)
        return self.decoder(skips)

    def check_input(self, x: torch.Tensor) -> None:
        spatial = tuple(x.shape[2:])
        if x.dim() != self.spec.spatial_dims + 2 or x.shape[1] != self.spec.in_channels or any(
            s % t for s, t in zip(spatial, self.total_stride)
        ):
            raise InputError(
                f"{type(self).__name__} expects input (B, {self.spec.in_channels}, *spatial) with "
                f"{self.spec.spatial_dims} spatial sizes that are multiples of the total stride "
                f"{self.total_stride}, not {tuple(x.shape)}; pad or crop the input (the planner's patch sizes "
                f"already satisfy this)"
            )

    def gates(self) -> Iterator[tuple[str, SkipGate]]:
        """(name, gate) for every skip gate: long skips "skip<i>" and, in the tiramisu, "dense<b>.<j>"."""
        return iter_gates(self)


def gate_skip(gates: Sequence[nn.Module] | None, stage: int, skip: torch.Tensor) -> torch.Tensor:
    """What the decoder receives from encoder stage `stage`: the skip through its gate (no gates: the skip)."""
    return skip if gates is None else gates[stage](skip)


def stage_list(values: Sequence[int] | None, default: Sequence[int], n: int) -> list[int]:
    """`values` or the first n entries of `default`, its last entry repeated when n is longer."""
    if values is not None:
        return list(values)
    return [default[min(i, len(default) - 1)] for i in range(n)]
