"""The SAT skip gate: Select, Attend and Transfer (Taghanaki et al.), with its ORG, ST and AT variants.

A skip connection hands an encoder feature map f (B, C, *spatial) to the decoder. The gate decides
what is handed over:

- select (st, sat): f_s = f * trelu(W) with a learned per-channel weight W (C,) and
  trelu(z) = min(max(z, 0), 1). A channel with W <= 0 is exactly off, W >= 1 fully on.
- attend (at, sat): a = sigmoid(conv1x1(f_s)), k channels (k = 1: the SAT paper's single map;
  `maps`, NetworkSpec.skip_channels). `at` is the same with the select weights fixed to 1 (no W
  parameter).
- transfer: what the decoder concatenates: org f (C channels), st f_s (C channels), at and sat
  the k attention maps a. `SkipGate.out_channels` says which, and every decoder sizes its first
  convolution from it. With k = 1 the gate is the paper's, parameter for parameter (state_dict
  keys `select`, `attend.weight` (1, C, 1, ...), `attend.bias` (1,)); k > 1 widens only the
  attention convolution's output (docs/architecture.md says why this form).

The `sat` gate is fused: trelu(W) is folded into the 1x1 kernel, a = sigmoid(conv(f, K * trelu(W))),
which is the same function (a 1x1 convolution is linear in its input channels) but never stores the
C-channel f_s for backward; the convolution saves f, which the encoder keeps alive anyway.
`fused=False` computes f_s explicitly (the reference path the tests compare against).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from satnet.errors import ConfigError
from satnet.nets.layers import conv_cls, convolution
from satnet.nets.spec import ATTEND_MODES, GATE_INITS, SELECT_MODES, SKIP_MODES, NetworkSpec, check_skip_channels


def trelu(z: torch.Tensor) -> torch.Tensor:
    """min(max(z, 0), 1), elementwise.

    Gradient (torch.clamp semantics): 1 for 0 <= z <= 1, boundaries included, 0 outside. The
    included upper boundary is what lets W initialised to exactly 1 ("ones") train at all; once a
    weight leaves [0, 1] it receives no gradient from the gate.
    """
    return z.clamp(0.0, 1.0)


def keras_glorot_limit(channels: int) -> float:
    """Half-width of the Glorot-uniform interval Keras 2 (2017-2018, the paper's era) gives a weight of shape (C,).

    Keras 2's `_compute_fans` has no rule for 1-D shapes and falls back to
    fan_in = fan_out = sqrt(prod(shape)) = sqrt(C), so limit = sqrt(6 / (2 sqrt(C))) = sqrt(3 / sqrt(C)).
    (Later tf.keras uses fan_in = fan_out = C for 1-D shapes, limit sqrt(3 / C); a broadcastable
    shape (1, 1, C) would give fan_in = 1, fan_out = C.) Either way the interval is symmetric around
    0, so about half the channels start at W <= 0: off, and without gradient from the gate.
    """
    return math.sqrt(3.0 / math.sqrt(channels))


class SkipGate(nn.Module):
    """One skip connection in mode org | st | at | sat; see the module docstring.

    Args:
        channels: C, channels of the encoder feature map it receives.
        skip: "org" | "st" | "at" | "sat".
        spatial_dims: 2 or 3 (the attention convolution is 1x1 or 1x1x1).
        gate_init: initialisation of W, "ones" (all channels fully on) or "glorot"
            (Keras-2 Glorot uniform, see `keras_glorot_limit`).
        name: stable label used in logs and by `gate_fraction_off` (e.g. "skip0", "dense2.1").
        maps: k, the attention maps an at/sat gate transfers (1 <= k <= C); must be 1 for org and st.

    Attributes you may set: `fused` (sat only; default True) and `record` (default False: when True,
    every forward keeps detached copies `last_attention` (B, k, *spatial) and `last_select` (C,)
    for visualisation; nothing is kept or computed when False).
    """

    def __init__(self, channels: int, skip: str, spatial_dims: int, gate_init: str = "ones", name: str = "",
                 maps: int = 1):
        super().__init__()
        if skip not in SKIP_MODES:
            raise ValueError(f"skip must be one of {SKIP_MODES}, not {skip!r}")
        check_skip_channels(skip, maps)
        if maps > channels:
            raise ConfigError(
                f"skip {name or 'gate'} would transfer {maps} attention maps of an encoder output with only {channels} "
                f"channels; an at/sat skip transfers at most as many maps as it has channels: lower --skip-channels "
                f"(or that level's K in --skip-levels) to {channels} or less"
            )
        self.maps = maps
        self.channels = channels
        self.skip = skip
        self.spatial_dims = spatial_dims
        self.name = name
        self.fused = True
        self.record = False
        self.last_attention: torch.Tensor | None = None
        self.last_select: torch.Tensor | None = None
        self.select = nn.Parameter(torch.ones(channels)) if skip in SELECT_MODES else None
        self.attend = conv_cls(spatial_dims)(channels, maps, kernel_size=1) if skip in ATTEND_MODES else None
        if self.select is not None:
            self.reset_select(gate_init)

    @property
    def out_channels(self) -> int:
        """Channels the decoder receives: C for org and st, k (`maps`) for at and sat."""
        return self.maps if self.skip in ATTEND_MODES else self.channels

    def reset_select(self, gate_init: str) -> None:
        """(Re)initialise W: "ones" sets every weight to 1; "glorot" draws U(-l, l), l = keras_glorot_limit(C)."""
        if gate_init not in GATE_INITS:
            raise ValueError(f"gate_init must be one of {GATE_INITS}, not {gate_init!r}")
        if self.select is None:
            return
        with torch.no_grad():
            if gate_init == "ones":
                self.select.fill_(1.0)
            else:
                limit = keras_glorot_limit(self.channels)
                self.select.uniform_(-limit, limit)

    def fraction_off(self) -> float | None:
        """Fraction of channels with W <= 0 (exactly off); None for org and at, which have no W."""
        if self.select is None:
            return None
        return (self.select.detach() <= 0).float().mean().item()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """f (B, C, *spatial) -> (B, out_channels, *spatial)."""
        if self.skip == "org":
            return f
        shape = (1, self.channels) + (1,) * self.spatial_dims
        if self.skip == "st":
            weights = trelu(self.select)
            self._keep(None, weights)
            return f * weights.to(f.dtype).view(shape)
        if self.skip == "at":
            attention = torch.sigmoid(self.attend(f))
            self._keep(attention, None)
            return attention
        weights = trelu(self.select)
        if self.fused:  # conv(f * w, K) == conv(f, K * w): the C-channel f * w is never materialised; K (k, C, 1..)
            kernel = self.attend.weight * weights.view(shape)
            a = self.attend
            attention = torch.sigmoid(convolution(f, kernel, a.bias, a.stride, a.padding, a.dilation, a.groups))
        else:
            attention = torch.sigmoid(self.attend(f * weights.to(f.dtype).view(shape)))
        self._keep(attention, weights)
        return attention

    def _keep(self, attention: torch.Tensor | None, weights: torch.Tensor | None) -> None:
        if not self.record:
            return
        self.last_attention = None if attention is None else attention.detach().clone()
        self.last_select = None if weights is None else weights.detach().clone()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, channels={self.channels}, skip={self.skip!r}, out_channels={self.out_channels}"


def skip_gate(spec: NetworkSpec, level: int, channels: int, name: str | None = None,
              enabled: bool = True) -> SkipGate:
    """The gate of resolution level `level` of `spec` (its mode and k from `spec.level_skip`) on `channels`
    encoder channels; name defaults to "skip<level>". enabled=False: an org gate (Tiramisu without dense gates)."""
    level_skip = spec.level_skip(level)
    mode, maps = (level_skip.mode, level_skip.channels) if enabled else ("org", 1)
    return SkipGate(channels, mode, spec.spatial_dims, spec.gate_init, name or f"skip{level}", maps)


def iter_gates(module: nn.Module) -> Iterator[tuple[str, SkipGate]]:
    """(name, gate) for every SkipGate inside `module`, in registration order."""
    for m in module.modules():
        if isinstance(m, SkipGate):
            yield m.name, m
