"""The exact inverse of preprocessing: predictions back onto the raw image's voxel grid.

Preprocessing cropped each case to its non-zero box and resampled the crop to the
configuration's spacing (satnet.preprocessing.case). Export undoes both with what the case's
CaseProperties stored: resample the class probabilities from shape_after_resampling back to
shape_after_crop (linear, separate-z as on the way in), then paste them into the box of an
array of the raw shape. Outside the box the image was all zero and is background.

Class index k is label value k (dataset.json labels are 0..K-1, as in nnU-Net).
"""
from __future__ import annotations

import numpy as np

from satnet.errors import InputError
from satnet.io.cases import CaseProperties
from satnet.preprocessing.crop import bbox_slices, uncrop
from satnet.preprocessing.resample import resample_probabilities


def _to_cropped_grid(probs: np.ndarray, props: CaseProperties, anisotropy_threshold: float) -> np.ndarray:
    """(K, z, y, x) on the preprocessed grid -> float32 (K, Z', Y', X') on the cropped raw grid."""
    probs = np.asarray(probs)  # also takes a CPU torch tensor, without a copy
    if probs.ndim != 4 or list(probs.shape[1:]) != list(props.shape_after_resampling):
        raise InputError(
            f"case {props.case_id}: probabilities must be (K, Z, Y, X) with spatial shape "
            f"{props.shape_after_resampling} (shape_after_resampling), not {probs.shape}; predict on the "
            f"preprocessed case that these properties describe"
        )
    return resample_probabilities(
        probs, props.shape_after_crop, props.spacing_after_resampling, anisotropy_threshold=anisotropy_threshold
    )


def revert_to_original(probs: np.ndarray, props: CaseProperties, anisotropy_threshold: float = 3.0) -> np.ndarray:
    """Class probabilities (K, z, y, x) on the preprocessed grid -> float32 (K, Z, Y, X) on the raw grid.

    Outside the crop box, background (class 0) has probability 1 and every other class 0.
    anisotropy_threshold: the plan's (plan.resampling.anisotropy_threshold).
    """
    cropped = _to_cropped_grid(probs, props, anisotropy_threshold)  # (K, Z', Y', X')
    full = np.zeros((cropped.shape[0], *props.geometry.shape), dtype=np.float32)  # (K, Z, Y, X)
    full[0] = 1.0
    full[(slice(None),) + bbox_slices(props.crop_bbox)] = cropped
    return full


def probabilities_to_segmentation(
    probs: np.ndarray, props: CaseProperties, anisotropy_threshold: float = 3.0
) -> np.ndarray:
    """Class probabilities (K, z, y, x) on the preprocessed grid -> label map uint8 (Z, Y, X) on the raw grid.

    Resample to the cropped shape, argmax (ties go to the lower class), paste into the box;
    background (0) outside it. Cheaper than argmax of revert_to_original: no K-channel
    array of the full raw shape is built.
    """
    if probs.shape[0] > 256:
        raise InputError(f"case {props.case_id}: {probs.shape[0]} classes do not fit a uint8 label map (at most 256)")
    cropped = _to_cropped_grid(probs, props, anisotropy_threshold)  # (K, Z', Y', X')
    return uncrop(np.argmax(cropped, axis=0).astype(np.uint8), props.crop_bbox, props.geometry.shape, fill=0)
