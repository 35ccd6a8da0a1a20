"""NetworkSpec: the one JSON-serialisable description every satnet network is built from.

plans.json stores it under `configurations.<name>.network`; `satnet.nets.build_network`
takes it (or its dict). All per-axis lists are in numpy order (Z, Y, X) for 3D and (Y, X)
for 2D, like every array inside satnet.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from satnet.contracts import Contract
from satnet.errors import ConfigError, unknown_name_error
from satnet.names import (  # noqa: F401 (SELECT_MODES is re-exported: satnet.nets.gate takes it from here)
    ARCH_NAMES,
    ATTEND_MODES,
    DEFAULT_GATE_INIT,
    DEFAULT_SKIP,
    DEFAULT_SKIP_CHANNELS,
    GATE_INITS,
    NORMS,
    SELECT_MODES,
    SKIP_MODES,
)

SKIP_LEVELS_SYNTAX = ("MODE[:K],MODE[:K],... one entry per skip level from full resolution down (the last entry "
                      "repeats for the coarser levels), MODE one of org, st, at, sat and K the maps an at/sat skip "
                      "transfers (default 1), e.g. sat:4,org")


@dataclass(frozen=True)
class LevelSkip:
    """The skip of one resolution level: its mode and, for at/sat, the k attention maps it transfers."""

    mode: str
    channels: int = 1

    @property
    def label(self) -> str:
        """"sat", "sat4", "org": the mode, with k when k > 1."""
        return self.mode + (str(self.channels) if self.channels > 1 else "")

    @property
    def entry(self) -> str:
        """The `--skip-levels` / plans.json spelling: "sat:4", "org"."""
        return self.mode + (f":{self.channels}" if self.channels > 1 else "")


def parse_level_skip(text: str, what: str = "skip_levels") -> LevelSkip:
    """"sat", "sat:4", "org" -> LevelSkip; ConfigError naming `what` and the syntax otherwise."""
    mode, sep, k = str(text).strip().partition(":")
    if mode not in SKIP_MODES or (sep and not (k.isascii() and k.isdigit())):  # "²".isdigit(), but int("²") fails
        raise ConfigError(f"{what}: {text!r} is not MODE or MODE:K; expected {SKIP_LEVELS_SYNTAX}")
    channels = int(k) if sep else 1
    check_skip_channels(mode, channels, what)
    return LevelSkip(mode, channels)


def parse_skip_levels(text: str, what: str = "--skip-levels") -> list[str]:
    """The `--skip-levels` value "sat:4, org" -> ["sat:4", "org"] (each entry checked)."""
    entries = [e.strip() for e in str(text).split(",")]
    if not entries or any(not e for e in entries):
        raise ConfigError(f"{what}: {text!r} has an empty entry; expected {SKIP_LEVELS_SYNTAX}")
    return [parse_level_skip(e, what).entry for e in entries]


def check_skip_channels(mode: str, channels: object, what: str = "skip_channels") -> None:
    """k must be a positive integer, and above 1 only for at/sat skips (org and st transfer all C channels)."""
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ConfigError(f"{what}: the number of attention maps must be a positive integer, not {channels!r}")
    if channels > 1 and mode not in ATTEND_MODES:
        raise ConfigError(f"{what}: {channels} maps apply to at and sat skips only; {mode!r} skips transfer every "
                          f"channel of the encoder: use sat:{channels} or at:{channels}, or drop the count")


@dataclass
class NetworkSpec(Contract):
    """Architecture, sizes and skip mode of one segmentation network.

    Fields
    - arch: "unet" | "vnet" | "tiramisu" | "di2in".
    - spatial_dims: 2 or 3.
    - in_channels: image channels fed to the net.
    - num_classes: output channels, background included (labels 0..num_classes-1).
    - features: channels per encoder stage, shallow to deep (unet, vnet, di2in; di2in's decoder
      stages have half these widths). For tiramisu,
      features[0] is the width of the first convolution and the rest follow from
      growth_rate and convs_per_stage; the list still has one entry per stage.
    - kernel_sizes: per stage, one kernel size per axis (e.g. [1, 3, 3] for a coarse Z axis).
    - strides: per stage, the downsampling stride per axis into that stage; stage 0 is all 1.
    - convs_per_stage: convolutions per encoder stage (unet, di2in), residual convs per stage
      (vnet), or layers per dense block (tiramisu; the last entry is the bottleneck block).
      None means the architecture's default (see docs/architecture.md).
    - growth_rate: channels added per dense layer (tiramisu only).
    - skip: "org" | "st" | "at" | "sat" (see satnet.nets.gate): the skip of every level, unless
      skip_levels gives one per level.
    - skip_channels: k, the attention maps an at/sat skip transfers (1: the SAT paper's gate).
    - skip_levels: None, or one entry "MODE" / "MODE:K" per skip level from full resolution down,
      the last repeating for the coarser levels (e.g. ["sat:4", "org"]); it overrides skip and
      skip_channels, which the planner sets to its first entry. Tiramisu dense blocks take the
      entry of their level (the bottleneck the coarsest).
    - gate_init: initialisation of the select weights W: "glorot" or "ones".
    - deep_supervision: the decoder also outputs lower-resolution logits.
    - norm: "instance" | "batch" | "group" | "none".
    - dense_gates: tiramisu only: also gate the skips inside dense blocks (the paper's Fig. 4);
      false keeps only the long-skip gates.
    """

    FORMAT_VERSION = 1

    arch: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    features: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    convs_per_stage: list[int] | None = None
    growth_rate: int = 16
    skip: str = DEFAULT_SKIP
    skip_channels: int = DEFAULT_SKIP_CHANNELS
    skip_levels: list[str] | None = None
    gate_init: str = DEFAULT_GATE_INIT
    deep_supervision: bool = True
    norm: str = "instance"
    dense_gates: bool = True
    format_version: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent field."""
        if self.arch not in ARCH_NAMES:
            raise unknown_name_error("arch", self.arch, ARCH_NAMES)
        if self.skip not in SKIP_MODES:
            raise unknown_name_error("skip", self.skip, SKIP_MODES)
        check_skip_channels(self.skip, self.skip_channels)
        if self.skip_levels is not None:
            if not isinstance(self.skip_levels, list) or not self.skip_levels:
                raise ConfigError(f"skip_levels must be null or a non-empty list, not {self.skip_levels!r}")
            for entry in self.skip_levels:
                parse_level_skip(entry)
        if self.gate_init not in GATE_INITS:
            raise unknown_name_error("gate_init", self.gate_init, GATE_INITS)
        if self.norm not in NORMS:
            raise unknown_name_error("norm", self.norm, NORMS)
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, not {self.spatial_dims!r}")
        for name in ("in_channels", "num_classes", "growth_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2 (background and one label), not {self.num_classes}")
        if not isinstance(self.deep_supervision, bool) or not isinstance(self.dense_gates, bool):
            raise ConfigError(
                f"deep_supervision and dense_gates must be true or false, "
                f"not {self.deep_supervision!r} and {self.dense_gates!r}"
            )
        n = len(self.features)
        if n < 2 or any(not isinstance(f, int) or f < 1 for f in self.features):
            raise ConfigError(
                f"features must list at least 2 stages (positive integers; an encoder-decoder needs a skip), "
                f"not {self.features!r}"
            )
        for name in ("kernel_sizes", "strides"):
            value = getattr(self, name)
            if len(value) != n:
                raise ConfigError(f"{name} must have one entry per stage ({n}), not {len(value)}")
            for i, per_axis in enumerate(value):
                if len(per_axis) != self.spatial_dims or any(not isinstance(k, int) or k < 1 for k in per_axis):
                    raise ConfigError(
                        f"{name}[{i}] must list {self.spatial_dims} positive integers (one per axis), not {per_axis!r}"
                    )
        if any(k % 2 == 0 for ks in self.kernel_sizes for k in ks):
            raise ConfigError(f"kernel sizes must be odd so 'same' padding keeps shapes, not {self.kernel_sizes!r}")
        if any(s != 1 for s in self.strides[0]):
            raise ConfigError(f"strides[0] must be all 1 (the first stage works at full resolution), not {self.strides[0]!r}")
        if self.convs_per_stage is not None:
            if len(self.convs_per_stage) != n or any(not isinstance(c, int) or c < 1 for c in self.convs_per_stage):
                raise ConfigError(
                    f"convs_per_stage must be None or {n} positive integers, not {self.convs_per_stage!r}"
                )

    @property
    def num_stages(self) -> int:
        return len(self.features)

    def level_skip(self, level: int) -> LevelSkip:
        """The skip of resolution level `level` (0 = full resolution; the long skip of encoder stage `level`)."""
        if self.skip_levels is None:
            return LevelSkip(self.skip, self.skip_channels)
        return parse_level_skip(self.skip_levels[min(level, len(self.skip_levels) - 1)])

    def level_skips(self) -> list[LevelSkip]:
        """One LevelSkip per skip level (num_stages - 1 of them), full resolution first."""
        return [self.level_skip(i) for i in range(self.num_stages - 1)]

    def skip_label(self) -> str:
        """"sat", "org", "sat4", or per level joined by "-" ("sat4-org"): what configuration names carry."""
        return skip_levels_label([s.entry for s in self.level_skips()])

    def total_stride(self) -> list[int]:
        """Product of strides per axis: every patch dimension must be a multiple of it."""
        return [math.prod(s[a] for s in self.strides) for a in range(self.spatial_dims)]

    def replace(self, **changes) -> "NetworkSpec":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def skip_levels_label(entries: list[str] | tuple[str, ...]) -> str:
    """The label of per-level skips ("sat:4", "org", "org" -> "sat4-org"; "sat", "sat" -> "sat")."""
    labels = [parse_level_skip(e).label for e in entries]
    return labels[0] if len(set(labels)) == 1 else "-".join(_compress(labels))


def _compress(labels: list[str]) -> list[str]:
    """Drop the trailing repeats of the last label ("sat4", "org", "org" -> "sat4", "org")."""
    while len(labels) > 1 and labels[-1] == labels[-2]:
        labels = labels[:-1]
    return labels
