"""Intensity normalisation per channel, by the schemes of `ChannelNormalization` (plans.py).

- "ct": clip to the dataset's foreground [0.5, 99.5] percentiles, then z-score with the
  dataset's foreground mean and std (Hounsfield units mean the same in every scan, so one
  transform for the whole dataset keeps that meaning).
- "zscore": z-score per case, over the case's non-zero mask when use_nonzero_mask (voxels
  outside the mask are set to 0), else over the whole case (MRI intensities are arbitrary
  per scan).
- "rescale": (x - min) / (max - min) per case over the whole case, to [0, 1] (nnU-Net's
  rescale_to_0_1, for intensities that are meaningful only relative to the scan's own range).
- "rgb": divide by 255, to [0, 1].
- "none": unchanged.

A constant region has std 0 (and a constant case no range). Rule: when the std is at most 1e-8 *
max(1, |mean|), the channel carries no contrast and its region is set to exactly 0 instead of
dividing by ~0. Relative, because float32 resolves only ~1e-7 of a value: a spread that small is
rounding noise, and dividing by it would inflate that noise to unit variance. Statistics are
computed in float64; the result is float32.
"""
from __future__ import annotations

import logging

import numpy as np

from satnet.planning.plans import ChannelNormalization
from satnet.preprocessing import crop

logger = logging.getLogger(__name__)

CONSTANT_STD_RTOL = 1e-8


def _scale(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(values - mean) / std in place (float32), or zeros when std marks a constant region."""
    if std <= CONSTANT_STD_RTOL * max(1.0, abs(mean)):
        values[...] = 0.0
        return values
    values -= np.float32(mean)
    values /= np.float32(std)
    return values


def _zscore(channel: np.ndarray, mask: np.ndarray | None) -> None:
    """Per-case z-score of one (Z, Y, X) float32 channel in place, inside `mask` when given."""
    if mask is None:
        _scale(channel, float(channel.mean(dtype=np.float64)), float(channel.std(dtype=np.float64)))
        return
    inside = channel[mask]
    if inside.size:
        _scale(inside, float(inside.mean(dtype=np.float64)), float(inside.std(dtype=np.float64)))
    channel[...] = 0.0
    channel[mask] = inside


def normalize(
    data: np.ndarray, norms: list[ChannelNormalization], nonzero_mask: np.ndarray | None = None
) -> np.ndarray:
    """Normalise an image (C, Z, Y, X) channel by channel; returns a new float32 array.

    - norms: one ChannelNormalization per channel, in channel order.
    - nonzero_mask: bool (Z, Y, X) mask for zscore channels with use_nonzero_mask; when None and a
      channel needs it, it is computed from `data` (non-zero in any channel, holes filled).
    The input is not modified.
    """
    if len(norms) != data.shape[0]:
        raise ValueError(f"{len(norms)} normalization entries for an image with {data.shape[0]} channels")
    out = data.astype(np.float32, copy=True)  # (C, Z, Y, X)
    for channel, norm in zip(out, norms):
        if norm.scheme == "ct":
            np.clip(channel, norm.clip_low, norm.clip_high, out=channel)
            _scale(channel, float(norm.mean), float(norm.std))
        elif norm.scheme == "zscore":
            if norm.use_nonzero_mask and nonzero_mask is None:
                nonzero_mask = crop.nonzero_mask(data)
            _zscore(channel, nonzero_mask if norm.use_nonzero_mask else None)
        elif norm.scheme == "rescale":
            low, high = (float(channel.min()), float(channel.max())) if channel.size else (0.0, 0.0)
            _scale(channel, low, high - low)  # the range as the "std": a constant case becomes 0
        elif norm.scheme == "rgb":
            channel /= np.float32(255.0)
    return out
