"""Sliding-window prediction of a whole case with a patch-based network (a pure function).

`sliding_window_predict` cuts a (C, Z, Y, X) case into overlapping tiles of the network's
patch size, runs the predictor on batches of tiles, and returns the importance-weighted average
of the predicted logits, (num_outputs, Z, Y, X). It knows nothing about networks, checkpoints,
autocast or channels_last: the caller wraps all of that into the predictor it passes, so the
same function serves the folder predictor, end-of-fold validation and the tests (where the
predictor is `lambda x: x + 1`, and the result must be the image + 1).

Tile placement follows nnU-Net: along an axis of `size` voxels with a patch of `p` voxels and a
step of `step * p`, there are ceil((size - p) / (p * step)) + 1 tiles, evenly spaced, the first
flush with the start and the last flush with the end. An axis shorter than the patch is padded
with zeros (split evenly before and after) and the padding is cropped from the result.

A 2D configuration (patch_size of 2 entries) applied to a volume predicts every Z slice: its
tiles are (C, Y, X) windows of single slices, and tiles of different slices share batches.
"""
from __future__ import annotations

import itertools
import logging
import math
import numbers
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from satnet.errors import ConfigError, InputError
from satnet.names import MIRROR_SETS
from satnet.inference.gaussian import (
    DEFAULT_SIGMA_SCALE,
    cached_importance_map,
    check_patch_size,
    uniform_importance_map,
)

logger = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""Maps a batch of tiles (B, C, *patch) to logits (B, num_outputs, *patch)."""

# MIRROR_SETS (satnet.names): which flips test-time augmentation predicts: all (every subset of the mirror axes: 8
# in 3D, 4 in 2D), axes (none and each axis alone: 4 in 3D, 3 in 2D), opposite (none and all axes at once: 2).


def tile_starts(size: int, patch: int, step: float) -> list[int]:
    """Start indices of the tiles along one axis of `size` >= `patch` voxels (nnU-Net's rule).

    Example: size 100, patch 32, step 0.5 gives ceil(68 / 16) + 1 = 6 tiles at
    [0, 14, 27, 41, 54, 68] (spacing 68 / 5 = 13.6, rounded half to even).
    """
    if size < patch:
        raise ValueError(f"axis of {size} voxels is shorter than the patch ({patch}); pad it first")
    if size == patch:
        return [0]
    num = math.ceil((size - patch) / (patch * step)) + 1
    spacing = (size - patch) / (num - 1)
    return [int(round(spacing * i)) for i in range(num)]


def tile_grid(shape: Sequence[int], patch_size: Sequence[int], step: float) -> list[list[int]]:
    """Per-axis tile starts over a (Z, Y, X) `shape` at least as large as the patch.

    With a 3-entry patch_size each axis follows `tile_starts`; with a 2-entry (Y, X) patch
    every Z slice is a tile position ([0, 1, ..., Z - 1]) and Y, X follow `tile_starts`.
    The tiles are the Cartesian product of the three lists.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (Z, Y, X), not {list(shape)}")
    if len(patch_size) == 2:
        return [list(range(shape[0]))] + [tile_starts(s, p, step) for s, p in zip(shape[1:], patch_size)]
    return [tile_starts(s, p, step) for s, p in zip(shape, patch_size)]


def sliding_window_predict(
    predictor: Predictor,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    num_outputs: int,
    step: float = 0.5,
    gaussian: bool = True,
    mirror_axes: Sequence[int] | None = None,
    tile_batch_size: int = 4,
    device: torch.device | str | None = None,
    output_device: torch.device | str | None = None,
    progress: bool = False,
    mirror_set: str = "all",
) -> torch.Tensor:
    """Predict a whole case tile by tile; return the weighted mean logits, (num_outputs, Z, Y, X) float32.

    Args:
        predictor: maps tiles (B, C, pz, py, px) (3-entry patch) or (B, C, py, px) (2-entry
            patch) to logits (B, num_outputs, *patch). Called under `torch.no_grad()` with
            tiles in the image's dtype on `device`; its output is cast to float32. It must
            not modify its input in place (the mirrored copies are cut from the same tiles).
        image: (C, Z, Y, X), a 2D case has Z = 1. A numpy array is wrapped without a copy.
        patch_size: (pz, py, px) for a 3D network, (py, px) for a 2D network applied to each Z slice.
        num_outputs: channels the predictor returns (the number of classes, background included).
        step: distance between neighbouring tiles as a fraction of the patch, in (0, 1];
            0.5 (nnU-Net's default) makes each voxel seen by about 2 tiles per axis.
        gaussian: weight each tile with `cached_importance_map` (sigma = patch / 8) rather
            than uniformly, so tile centres count more than tile borders.
        mirror_axes: spatial axes of the patch (0-based, so 0..2 for a 3D patch, 0..1 for a
            2D one) to mirror for test-time augmentation; every subset is predicted (8 for 3
            axes), flipped back and averaged in logit space. None or () disables it.
        tile_batch_size: images per predictor call: tiles, and mirrored copies of them when fewer
            tiles than this remain (a 1-tile case with 8 mirror subsets makes 2 calls of 4).
        device: where the predictor runs; tiles are moved there. Default: the image's device.
        output_device: where the padded image, the accumulators and the result live. Default:
            `device`. Use the CPU for cases whose logits do not fit on the GPU.
        progress: show a tqdm bar over tiles.
        mirror_set: which subsets of `mirror_axes` are predicted (MIRROR_SETS): "all" (default), "axes" (the
            plain tiles and each axis flipped alone) or "opposite" (the plain tiles and all axes flipped at once).

    Raises:
        InputError: the image is not (C, Z, Y, X) with non-empty axes.
        ConfigError: an invalid patch_size, step, mirror_axes, tile_batch_size or num_outputs,
            or a predictor whose output shape does not match (B, num_outputs, *patch).
    """
    patch, mirror = _check_arguments(image, patch_size, num_outputs, step, mirror_axes, tile_batch_size)
    if mirror_set not in MIRROR_SETS:
        raise ConfigError(f"mirror_set must be one of {', '.join(MIRROR_SETS)}, not {mirror_set!r}")
    image = torch.as_tensor(image)
    device = torch.device(device) if device is not None else image.device
    output_device = torch.device(output_device) if output_device is not None else device
    patch3 = patch if len(patch) == 3 else (1, *patch)  # a 2D tile is a 3D tile one slice thick
    padded, crop = _pad_to_patch(image.to(output_device), patch3)  # (C, Z', Y', X')
    starts = tile_grid(padded.shape[1:], patch, step)
    corners = list(itertools.product(*starts))
    logger.debug("sliding window: %s tiles of %s over %s", len(corners), list(patch), list(image.shape))

    weight_map = cached_importance_map(patch, DEFAULT_SIGMA_SCALE) if gaussian else uniform_importance_map(patch)
    weight_map = weight_map.reshape(1, *patch3).to(output_device)  # (1, pz, py, px)
    logits = torch.zeros((num_outputs, *padded.shape[1:]), dtype=torch.float32, device=output_device)
    weight_sum = torch.zeros((1, *padded.shape[1:]), dtype=torch.float32, device=output_device)

    with torch.no_grad(), tqdm(total=len(corners), unit="tile", disable=not progress, leave=False) as bar:
        for batch in _chunks(corners, tile_batch_size):
            windows = [(slice(None),) + tuple(slice(s, s + p) for s, p in zip(c, patch3)) for c in batch]
            tiles = torch.stack([padded[w] for w in windows]).to(device)  # (B, C, pz, py, px)
            if len(patch) == 2:
                tiles = tiles[:, :, 0]  # (B, C, py, px)
            predicted = _predict_mirrored(predictor, tiles, mirror, num_outputs, tile_batch_size, mirror_set)
            predicted = predicted.to(output_device).reshape(len(batch), num_outputs, *patch3)
            for tile_logits, w in zip(predicted, windows):
                logits[w].addcmul_(tile_logits, weight_map)  # in place: logits += tile * weights
                weight_sum[w].add_(weight_map)
            bar.update(len(batch))

    logits /= weight_sum  # every voxel is covered by a tile and every weight is > 0
    if all(s == slice(None) for s in crop):
        return logits
    return logits[(slice(None), *crop)].contiguous()


def _check_arguments(
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    num_outputs: int,
    step: float,
    mirror_axes: Sequence[int] | None,
    tile_batch_size: int,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check every argument in one place; return (patch, mirror_axes) as tuples of ints."""
    if image.ndim != 4 or 0 in image.shape:
        raise InputError(
            f"image must be (C, Z, Y, X) with non-empty axes (Z = 1 for 2D data), not shape {list(image.shape)}"
        )
    patch = check_patch_size(patch_size)
    if len(patch) not in (2, 3):
        raise ConfigError(f"patch_size must have 2 (Y, X) or 3 (Z, Y, X) entries, not {list(patch)}")
    if not (isinstance(step, numbers.Real) and 0 < step <= 1):
        raise ConfigError(f"step must be a fraction of the patch in (0, 1], not {step!r}")
    if not isinstance(num_outputs, numbers.Integral) or num_outputs < 1:
        raise ConfigError(f"num_outputs must be a positive integer, not {num_outputs!r}")
    if not isinstance(tile_batch_size, numbers.Integral) or tile_batch_size < 1:
        raise ConfigError(f"tile_batch_size must be a positive integer, not {tile_batch_size!r}")
    mirror = tuple(mirror_axes or ())
    valid = all(isinstance(a, numbers.Integral) and 0 <= a < len(patch) for a in mirror)
    if not valid or len(set(mirror)) < len(mirror):
        raise ConfigError(
            f"mirror_axes must be distinct spatial axes of the {len(patch)}D patch, each in 0..{len(patch) - 1}, "
            f"not {list(mirror)}"
        )
    return patch, tuple(int(a) for a in mirror)


def _pad_to_patch(image: torch.Tensor, patch: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial axes shorter than the patch, evenly on both sides.

    Returns the padded (C, Z', Y', X') image and the (Z, Y, X) slices that crop it back.
    """
    before = [max(p - s, 0) // 2 for s, p in zip(image.shape[1:], patch)]
    after = [max(p - s, 0) - b for s, p, b in zip(image.shape[1:], patch, before)]
    crop = tuple(slice(b, b + s) if b or a else slice(None) for b, a, s in zip(before, after, image.shape[1:]))
    if not any(before) and not any(after):
        return image, crop
    pad = [n for b, a in zip(reversed(before), reversed(after)) for n in (b, a)]  # F.pad wants X first
    return F.pad(image, pad, mode="constant", value=0), crop


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def mirror_subsets(mirror_axes: tuple[int, ...], mirror_set: str = "all") -> list[tuple[int, ...]]:
    """The subsets of `mirror_axes` flipped for test-time augmentation, the plain tiles (()) first."""
    if mirror_set == "axes":
        return [()] + [(a,) for a in mirror_axes]
    if mirror_set == "opposite":
        return [()] + ([tuple(mirror_axes)] if mirror_axes else [])
    return [s for r in range(len(mirror_axes) + 1) for s in itertools.combinations(mirror_axes, r)]


def _predict_mirrored(
    predictor: Predictor, tiles: torch.Tensor, mirror_axes: tuple[int, ...], num_outputs: int, max_batch: int,
    mirror_set: str = "all",
) -> torch.Tensor:
    """Mean logits over the subsets of `mirror_axes` that `mirror_set` names (the empty subset is the plain
    prediction).

    tiles: (B, C, *patch). Each subset flips the tiles along those axes, predicts, and flips the
    logits back, so all terms are in the original orientation before they are averaged. Mirrored
    copies share a predictor call while the call holds at most `max_batch` images (at least B):
    a 3D convolution on one small tile runs up to 6x slower per voxel than on two (PyTorch picks
    a slower CPU kernel for batch-1 inputs of small spatial size).
    """
    subsets = mirror_subsets(mirror_axes, mirror_set)
    per_call = max(1, max_batch // tiles.shape[0])
    total = None
    for group in _chunks(subsets, per_call):
        dims = [[2 + a for a in axes] for axes in group]  # skip the batch and channel dimensions
        stacked = torch.cat([torch.flip(tiles, d) if d else tiles for d in dims])
        out = _call(predictor, stacked, num_outputs).split(tiles.shape[0])
        for d, o in zip(dims, out):
            o = torch.flip(o, d) if d else o
            total = o.clone() if total is None else total.add_(o)  # `o` may be a view of the caller's tiles
    return total if len(subsets) == 1 else total.div_(len(subsets))


def _call(predictor: Predictor, tiles: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Run the predictor on (B, C, *patch) tiles and check it returns (B, num_outputs, *patch)."""
    out = predictor(tiles)
    expected = (tiles.shape[0], num_outputs, *tiles.shape[2:])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        found = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"the predictor returned {found} for tiles of shape {list(tiles.shape)}; expected {list(expected)} "
            f"(batch, num_outputs, *patch_size). Check that num_outputs matches the network's number of classes, "
            f"that patch_size is the one it was planned with, and that deep-supervision outputs are reduced to "
            f"the full-resolution one"
        )
    return out.float()
