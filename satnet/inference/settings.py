"""How cases are predicted: InferenceSettings, and the device and autocast dtype they resolve to.

`satnet predict`'s flags build one InferenceSettings (satnet.cli.predict); training's final
validation uses the defaults. Names and defaults of precisions and devices: satnet.names.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from satnet.errors import ConfigError
from satnet.names import DEFAULT_DEVICE, DEFAULT_MIRRORS, DEFAULT_PREDICT_PRECISION, MIRROR_SETS, PREDICT_PRECISIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSettings:
    """How cases are predicted.

    - step: tile distance as a fraction of the patch, in (0, 1]; 0.5 as nnU-Net.
    - mirror: mirroring TTA over every axis of the patch (8 predictions per tile in 3D, 4 in 2D).
    - mirrors: which flips TTA predicts (satnet.names.MIRROR_SETS): "all" (default), "axes" (4 in 3D)
      or "opposite" (2); docs/predict.md gives each one's Dice and time.
    - precision: "fp32", or "bf16" autocast where the device computes bf16 natively (else fp32
      with a warning). fp32 is the default until the Dice difference is measured.
    - device: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:<n>".
    - tile_batch_size: images per network call (tiles, and mirrored copies of them).
    - channels_last: channels_last(_3d) memory format for the network and its tiles (True) or
      contiguous (False); None: the device's layout, `satnet.nets.layers.preferred_memory_format`
      (channels_last on the CPU, the layout the network also trains in; docs/performance.md,
      `bench_predict`, compares the two layouts for prediction).
    """

    step: float = 0.5
    mirror: bool = True
    mirrors: str = DEFAULT_MIRRORS
    precision: str = DEFAULT_PREDICT_PRECISION
    device: str = DEFAULT_DEVICE
    tile_batch_size: int = 4
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if not 0 < self.step <= 1:
            raise ConfigError(f"step must be a fraction of the patch in (0, 1], not {self.step!r}")
        if self.precision not in PREDICT_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PREDICT_PRECISIONS)}, not {self.precision!r}")
        if self.mirrors not in MIRROR_SETS:
            raise ConfigError(f"mirrors must be one of {', '.join(MIRROR_SETS)}, not {self.mirrors!r}")


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a visible GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<n>, not {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
                          "use --device cpu or auto")
    return resolved


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """torch.bfloat16 when bf16 is asked and `device` computes it natively, else None (fp32)."""
    if precision == "fp32":
        return None
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
    if not supported:
        logger.warning("warning: --precision bf16, but this %s has no native bf16 convolutions; using fp32",
                       device.type.upper())
        return None
    return torch.bfloat16


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 or AMX), checked once
    by a tiny bf16 convolution under autocast (emulated bf16 would be slower than fp32)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = nn.functional.conv3d(torch.ones(1, 2, 4, 4, 4), torch.ones(3, 2, 3, 3, 3), padding=1)
        return out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    except RuntimeError:
        return False
