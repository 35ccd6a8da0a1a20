"""A toy SAT U-Net with every ingredient the memory model must count, for tests before the real nets land.

Strided-conv encoder, instance norm, LeakyReLU (in place in the encoder, out of place in the
decoder), transposed-conv upsampling, torch.cat of skips, the four skip modes of a SAT gate
(select: a clamped per-channel weight folded into a 1x1 conv; attend: 1x1 conv + sigmoid), and
deep-supervision heads. Forward in training mode returns logits at every decoder resolution,
full resolution first; in eval mode only the full-resolution logits (B, K, *spatial).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


class ConvBlock(nn.Sequential):
    """conv (stride s) -> instance norm -> LeakyReLU, then conv -> instance norm -> LeakyReLU."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, inplace: bool, kernel: int = 3):
        conv, norm = _conv(dims), (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)
        pad = kernel // 2
        super().__init__(
            conv(cin, cout, kernel, stride=stride, padding=pad), norm(cout, affine=True), nn.LeakyReLU(0.01, inplace),
            conv(cout, cout, kernel, padding=pad), norm(cout, affine=True), nn.LeakyReLU(0.01, inplace),
        )


class ToyGate(nn.Module):
    """Skip connection: org (x), st (x * trelu(W)), at (sigmoid(conv1x1(x))), sat (at with W folded in)."""

    def __init__(self, dims: int, channels: int, skip: str):
        super().__init__()
        self.dims, self.skip = dims, skip
        self.out_channels = 1 if skip in ("at", "sat") else channels
        self.select = nn.Parameter(torch.ones(channels)) if skip in ("st", "sat") else None
        self.attend = _conv(dims)(channels, 1, 1) if skip in ("at", "sat") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, *S) -> (B, out_channels, *S)
        if self.skip == "org":
            return x
        shape = (1, -1) + (1,) * self.dims
        if self.skip == "st":
            return x * self.select.clamp(0, 1).view(shape)
        weight = self.attend.weight
        if self.skip == "sat":
            weight = weight * self.select.clamp(0, 1).view(shape)  # fold select into the 1x1 conv
        conv = F.conv3d if self.dims == 3 else F.conv2d
        return torch.sigmoid(conv(x, weight, self.attend.bias))


class ToyUNet(nn.Module):
    def __init__(self, dims: int, in_channels: int, num_classes: int, features: Sequence[int], skip: str = "sat",
                 deep_supervision: bool = True):
        super().__init__()
        self.deep_supervision = deep_supervision
        conv, up = _conv(dims), (nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d)
        chans = [in_channels, *features]
        self.encoder = nn.ModuleList(
            ConvBlock(dims, chans[i], chans[i + 1], 1 if i == 0 else 2, inplace=True) for i in range(len(features))
        )
        self.gates = nn.ModuleList(ToyGate(dims, f, skip) for f in features[:-1])
        self.ups = nn.ModuleList(up(features[i + 1], features[i], 2, stride=2) for i in range(len(features) - 1))
        self.decoder = nn.ModuleList(
            ConvBlock(dims, features[i] + self.gates[i].out_channels, features[i], 1, inplace=False)
            for i in range(len(features) - 1)
        )
        self.heads = nn.ModuleList(conv(f, num_classes, 1) for f in features[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:  # (B, C, *S)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        outputs = []
        for i in reversed(range(len(self.ups))):
            x = self.decoder[i](torch.cat([self.ups[i](x), self.gates[i](skips[i])], dim=1))
            if self.training and self.deep_supervision or i == 0:
                outputs.append(self.heads[i](x))
        outputs.reverse()  # full resolution first: (B, K, *S), (B, K, *S/2), ...
        return outputs if self.training and self.deep_supervision else outputs[0]
