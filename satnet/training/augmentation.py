"""Training augmentation: nnU-Net's default recipe built from batchgenerators transforms.

Batches are dicts of numpy arrays, spatial axes in numpy order: 'data' (B, C, Z, Y, X) float32 and
'seg' (B, 1, Z, Y, X) integer labels, or (B, C, Y, X) / (B, 1, Y, X) for a 2D configuration. The
loader (satnet.training.dataloader) reads a patch larger than the network's patch
(`enlarged_patch_size`) so that SpatialTransform can rotate and scale it and crop the centre back
to the patch size without pulling padding into the result.

Only three small transforms are written here, because batchgenerators has none of them: the
"dummy 2D" reshape pair, zeroing data outside the image for nonzero-mask channels, and the
deep-supervision targets. Every augmentation proper is a batchgenerators transform.

The augmentations draw from numpy's global random state, which batchgenerators' worker processes
seed per worker; `satnet.training.dataloader` isolates it in the single-process case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import NumpyToTensor, RemoveLabelTransform, RenameTransform

from satnet.errors import ConfigError

# A patch (or spacing) whose largest in-plane extent is more than this many times its Z extent gets
# in-plane-only spatial augmentation; nnU-Net's threshold.
ANISOTROPY_THRESHOLD = 3.0
# A 2D patch more elongated than this is rotated by at most +-15 degrees (nnU-Net): rotating a
# 128x512 patch by up to 180 degrees would need a 528x528 read and mostly shows the padding corners.
ELONGATED_2D_THRESHOLD = 1.5


@dataclass(frozen=True)
class AugmentationConfig:
    """Spatial augmentation parameters of one configuration (angles in degrees).

    - rotation_deg: (low, high) per rotation axis; batchgenerators' angle_x (about the first spatial
      axis, Z, so in-plane), angle_y, angle_z. 2D and dummy-2D use only the first.
    - scale: (low, high) isotropic zoom of the sampling grid; > 1 samples a larger region (zoom out).
    - p_rotation, p_scale: per-sample probabilities.
    - dummy_2d: 3D patches rotated and scaled in the (Y, X) plane only, slice by slice.
    - mirror_axes: spatial axes that are flipped, each with probability 0.5.
    """

    spatial_dims: int
    rotation_deg: tuple[tuple[float, float], ...]
    scale: tuple[float, float] = (0.7, 1.4)
    p_rotation: float = 0.2
    p_scale: float = 0.2
    dummy_2d: bool = False
    mirror_axes: tuple[int, ...] = (0, 1, 2)

    @property
    def spatial_transform_dims(self) -> int:
        """Dimensionality SpatialTransform works in (2 for dummy 2D)."""
        return 2 if self.dummy_2d else self.spatial_dims


def default_augmentation(patch_size: Sequence[int], spacing: Sequence[float]) -> AugmentationConfig:
    """nnU-Net's default spatial augmentation for a patch (Z, Y, X) or (Y, X) at `spacing` (Z, Y, X) mm.

    3D patches get +-30 degrees about each axis, unless they are strongly anisotropic: then
    ("dummy 2D") rotation and scaling happen only in the (Y, X) plane, +-180 degrees. Anisotropic
    means max(patch Y, X) / patch Z > 3 (nnU-Net v2's rule: out-of-plane rotation of a flat patch
    needs a read many times its Z extent) or spacing Z / min(spacing Y, X) > 3 (nnU-Net v1's
    spacing rule: batchgenerators rotates in voxel space, so out-of-plane rotation of thick slices
    shears the anatomy and interpolates across the coarse axis). Both rules look at Z because
    satnet stores the coarse axis first. 2D patches get +-180 degrees, +-15 when elongated.
    """
    patch = [int(p) for p in patch_size]
    if len(patch) == 2:
        elongated = max(patch) / min(patch) > ELONGATED_2D_THRESHOLD
        angle = 15.0 if elongated else 180.0
        return AugmentationConfig(spatial_dims=2, rotation_deg=((-angle, angle),), mirror_axes=(0, 1))
    if len(patch) != 3:
        raise ConfigError(f"patch_size must have 2 or 3 entries, not {patch_size!r}")
    patch_ratio = max(patch[1:]) / patch[0]
    spacing_ratio = float(spacing[0]) / min(float(s) for s in spacing[1:])
    if patch_ratio > ANISOTROPY_THRESHOLD or spacing_ratio > ANISOTROPY_THRESHOLD:
        return AugmentationConfig(spatial_dims=3, rotation_deg=((-180.0, 180.0), (0.0, 0.0), (0.0, 0.0)), dummy_2d=True)
    return AugmentationConfig(spatial_dims=3, rotation_deg=((-30.0, 30.0),) * 3)


def _rotation_matrices_2d(angles: np.ndarray) -> np.ndarray:
    c, s = np.cos(angles), np.sin(angles)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)


def _rotation_matrices_3d(ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
    """Products Rx @ Ry @ Rz over all angle combinations, as batchgenerators composes them."""
    def about(axis: int, angles: np.ndarray) -> np.ndarray:
        m = np.tile(np.eye(3), (len(angles), 1, 1))
        i, j = [a for a in range(3) if a != axis]
        sign = -1.0 if axis == 1 else 1.0  # batchgenerators' y rotation has its sine signs swapped
        m[:, i, i] = m[:, j, j] = np.cos(angles)
        m[:, i, j] = -sign * np.sin(angles)
        m[:, j, i] = sign * np.sin(angles)
        return m

    rx, ry, rz = about(0, ax), about(1, ay), about(2, az)
    return np.einsum("aij,bjk,ckl->abcil", rx, ry, rz).reshape(-1, 3, 3)


def enlarged_patch_size(patch_size: Sequence[int], config: AugmentationConfig) -> list[int]:
    """Patch size (voxels, same axes as `patch_size`) to read so rotation and scaling stay inside it.

    SpatialTransform samples a grid of `patch_size` points centred in its input, rotated by up to
    the configured angles and zoomed by up to max(scale). The returned size holds every such
    grid point (the bounding box over a fine grid of angles), and exceeds `patch_size` by an even
    number of voxels per axis so the unaugmented centre crop lands on whole voxels.
    """
    patch = np.asarray(patch_size, dtype=int)
    in_plane = patch[1:] if config.dummy_2d else patch
    half = (in_plane - 1) / 2.0
    ranges = [np.deg2rad(np.linspace(lo, hi, 721 if len(in_plane) == 2 else 25)) for lo, hi in config.rotation_deg]
    if len(in_plane) == 2:
        matrices = _rotation_matrices_2d(ranges[0])
    else:
        matrices = _rotation_matrices_3d(*ranges)
    # batchgenerators maps grid points c to R^T c (R the composed matrix); half extent per axis:
    extent = (np.abs(matrices.transpose(0, 2, 1)) @ half).max(axis=0) * max(config.scale[1], 1.0)
    needed = np.maximum(np.ceil(2 * extent + 1 - 1e-6).astype(int), in_plane)
    needed += (needed - in_plane) % 2
    if config.dummy_2d:
        needed = np.concatenate([patch[:1], needed])
    return [int(n) for n in needed]


class Convert3DTo2DTransform(AbstractTransform):
    """(B, C, Z, Y, X) -> (B, C*Z, Y, X) for 'data' and 'seg', so 2D transforms act slice by slice."""

    def __call__(self, **batch):
        for key in ("data", "seg"):
            b, c, z, y, x = batch[key].shape
            batch[f"_{key}_cz"] = (c, z)
            batch[key] = batch[key].reshape(b, c * z, y, x)
        return batch


class Convert2DTo3DTransform(AbstractTransform):
    """Undo Convert3DTo2DTransform: (B, C*Z, Y', X') -> (B, C, Z, Y', X')."""

    def __call__(self, **batch):
        for key in ("data", "seg"):
            c, z = batch.pop(f"_{key}_cz")
            b, _, y, x = batch[key].shape
            batch[key] = batch[key].reshape(b, c, z, y, x)
        return batch


class AttachOutsideMaskTransform(AbstractTransform):
    """Append to 'seg' a channel that is 1 where the image has no signal: 'data' channels `channels` all
    exactly 0 (outside the nonzero mask, which normalisation leaves at 0).

    Runs before the spatial transforms, which move it as they move the label (per-label linear
    interpolation); RecordOutsideImageTransform takes it off again. The stored labels hold 0..K only
    (docs/preprocessing.md), so the label cannot say where the image ends, as nnU-Net's -1 does, and
    after a rotation or scaling the image cannot either: the cubic spline leaves small non-zero values
    far outside the mask.
    """

    def __init__(self, channels: Sequence[int]):
        self.channels = list(channels)

    def __call__(self, **batch):
        empty = np.all(batch["data"][:, self.channels] == 0, axis=1, keepdims=True)  # (B, 1, *spatial)
        batch["seg"] = np.concatenate([batch["seg"], empty.astype(batch["seg"].dtype)], axis=1)
        return batch


class RecordOutsideImageTransform(AbstractTransform):
    """Take AttachOutsideMaskTransform's channel off 'seg' and note in '_outside' (B, *spatial) where the
    image has no signal: that channel set, or 'seg' negative (padding, also past the case after rotation).

    Runs after the spatial transforms and before the intensity ones, which ZeroOutsideImageTransform
    then undoes there.
    """

    def __call__(self, **batch):
        seg = batch["seg"]
        batch["_outside"] = (seg[:, -1] > 0) | (seg[:, 0] < 0)
        batch["seg"] = seg[:, :-1]
        return batch


class ZeroOutsideImageTransform(AbstractTransform):
    """Set 'data' channels `channels` to 0 outside the image: where RecordOutsideImageTransform found
    no signal (its '_outside', consumed here), else where 'seg' is negative (padding).

    Channels normalised over their nonzero region are zero outside it; intensity augmentation
    (noise, blur, contrast, gamma) would otherwise leave values there that the network never
    sees at inference.
    """

    def __init__(self, channels: Sequence[int]):
        self.channels = list(channels)

    def __call__(self, **batch):
        outside = batch.pop("_outside", None)
        if outside is None:
            outside = batch["seg"][:, 0] < 0  # (B, *spatial)
        for c in self.channels:
            batch["data"][:, c][outside] = 0
        return batch


class DeepSupervisionTargets(AbstractTransform):
    """Replace `key` (B, 1, *spatial) by a list of label maps, one per network output, each sampled
    at the centres of that output's voxels.

    scales: per output and axis, 1 / f for an integer factor f (satnet.nets.deep_supervision_scales);
    offsets: per output and axis, where the output's voxel i lies, at input position f*i + offset
    (satnet.nets.deep_supervision_offsets; None: 0, every f-th voxel from the first). A whole offset
    is sampled exactly. A half-integer one (kernel = stride downsampling at an even factor) falls
    between two input voxels along that axis, equally near both: each sample of the batch takes one
    of them at random (numpy's global random state), so the target is centred on the output's grid
    on average, and keeps the label's volume and its thin structures, which a majority vote over
    the f voxels would shrink and erase (docs/training.md).
    """

    def __init__(self, scales: Sequence[Sequence[float]], offsets: Sequence[Sequence[float]] | None = None,
                 key: str = "target"):
        offsets = [[0.0] * len(scale) for scale in scales] if offsets is None else offsets
        if len(offsets) != len(scales):
            raise ConfigError(f"deep-supervision offsets must have one entry per scale ({len(scales)}), "
                              f"not {len(offsets)}")
        self.samples = []  # per output and axis (step, first start, second start: the same unless between voxels)
        for scale, offset in zip(scales, offsets):
            steps = [round(1.0 / s) for s in scale]
            if any(abs(st * s - 1.0) > 1e-6 for st, s in zip(steps, scale)):
                raise ConfigError(f"deep-supervision scales must be 1 / integer, not {list(scale)}")
            if len(offset) != len(steps) or any(2 * o != round(2 * o) or not 0 <= o <= st - 1
                                                for o, st in zip(offset, steps)):
                raise ConfigError(f"deep-supervision offsets must be whole or half voxels within the factor "
                                  f"{steps}, one per axis, not {list(offset)}")
            self.samples.append([(st, math.floor(o), math.ceil(o)) for st, o in zip(steps, offset)])
        self.key = key

    def __call__(self, **batch):
        seg = batch[self.key]
        batch[self.key] = [self._sample(seg, axes) for axes in self.samples]
        return batch

    @staticmethod
    def _sample(seg: np.ndarray, axes: list[tuple[int, int, int]]) -> np.ndarray:
        if all(low == high for _, low, high in axes):
            grid = tuple(slice(low, None, st) for st, low, _ in axes)
            return np.ascontiguousarray(seg[(slice(None), slice(None)) + grid])
        upper = np.random.randint(0, 2, size=(seg.shape[0], len(axes))).astype(bool)  # per sample and axis
        out = np.empty(seg.shape[:2] + tuple(n // st for n, (st, _, _) in zip(seg.shape[2:], axes)), dtype=seg.dtype)
        for b in range(seg.shape[0]):
            starts = [high if up else low for up, (_, low, high) in zip(upper[b], axes)]
            out[b] = seg[(b, slice(None)) + tuple(slice(o, None, st) for o, (st, _, _) in zip(starts, axes))]
        return out


def _spatial_transforms(patch_size: Sequence[int], config: AugmentationConfig) -> list[AbstractTransform]:
    """Rotation and scaling (elastic off) with the centre crop to `patch_size`, dummy-2D wrapped."""
    radians = [tuple(math.radians(a) for a in r) for r in config.rotation_deg]
    radians += [(0.0, 0.0)] * (3 - len(radians))
    spatial = SpatialTransform(
        list(patch_size[1:] if config.dummy_2d else patch_size),
        patch_center_dist_from_border=None,
        do_elastic_deform=False,
        do_rotation=True, angle_x=radians[0], angle_y=radians[1], angle_z=radians[2], p_rot_per_axis=1,
        do_scale=True, scale=config.scale,
        border_mode_data="constant", border_cval_data=0, order_data=3,
        border_mode_seg="constant", border_cval_seg=-1, order_seg=1,
        random_crop=False,
        p_el_per_sample=0, p_scale_per_sample=config.p_scale, p_rot_per_sample=config.p_rotation,
        independent_scale_for_each_axis=False,
    )
    if config.dummy_2d:
        return [Convert3DTo2DTransform(), spatial, Convert2DTo3DTransform()]
    return [spatial]


def _intensity_transforms(config: AugmentationConfig) -> list[AbstractTransform]:
    """Noise, blur, brightness, contrast, low resolution and gamma with nnU-Net's probabilities."""
    return [
        GaussianNoiseTransform(p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(p_per_sample=0.15),
        SimulateLowResolutionTransform(
            zoom_range=(0.5, 1), per_channel=True, p_per_channel=0.5, order_downsample=0, order_upsample=3,
            p_per_sample=0.25, ignore_axes=(0,) if config.dummy_2d else None,
        ),
        GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
    ]


def _finishing_transforms(
    deep_supervision: Sequence[Sequence[float]] | None, mask_channels: Sequence[int],
    offsets: Sequence[Sequence[float]] | None = None,
) -> list[AbstractTransform]:
    """Mask, -1 -> 0, 'seg' -> 'target', deep-supervision targets, torch tensors."""
    finishing: list[AbstractTransform] = []
    if mask_channels:
        finishing.append(ZeroOutsideImageTransform(mask_channels))
    finishing += [RemoveLabelTransform(-1, 0), RenameTransform("seg", "target", True)]
    if deep_supervision is not None:
        finishing.append(DeepSupervisionTargets(deep_supervision, offsets))
    finishing += [NumpyToTensor(["data"], "float"), NumpyToTensor(["target"], "long")]
    return finishing


def training_transforms(
    patch_size: Sequence[int],
    config: AugmentationConfig,
    deep_supervision: Sequence[Sequence[float]] | None = None,
    mask_channels: Sequence[int] = (),
    deep_supervision_offsets: Sequence[Sequence[float]] | None = None,
) -> Compose:
    """The training augmentation for batches read at `enlarged_patch_size(patch_size, config)`.

    Output: 'data' float32 tensor (B, C, *patch_size); 'target' int64 tensor (B, 1, *patch_size),
    or with `deep_supervision` scales a list of them, one per scale, sampled on the network's grid
    (`deep_supervision_offsets`, see DeepSupervisionTargets). `mask_channels`: channels
    normalised over their nonzero region (kept zero outside the image).
    """
    masking = bool(mask_channels)
    return Compose(
        ([AttachOutsideMaskTransform(mask_channels)] if masking else [])
        + _spatial_transforms(patch_size, config)
        + ([RecordOutsideImageTransform()] if masking else [])
        + _intensity_transforms(config)
        + ([ZeroOutsideImageTransform(mask_channels)] if masking else [])  # before mirroring moves the image
        + [MirrorTransform(config.mirror_axes)]
        + _finishing_transforms(deep_supervision, (), deep_supervision_offsets)
    )


def validation_transforms(
    deep_supervision: Sequence[Sequence[float]] | None = None, mask_channels: Sequence[int] = (),
    deep_supervision_offsets: Sequence[Sequence[float]] | None = None,
) -> Compose:
    """No augmentation: only the label clean-up, deep-supervision targets and tensor conversion."""
    return Compose(_finishing_transforms(deep_supervision, mask_channels, deep_supervision_offsets))
