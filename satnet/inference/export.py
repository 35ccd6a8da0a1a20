"""The exact inverse of preprocessing: predictions back onto the raw image's voxel grid.

Preprocessing cropped each case to its non-zero box, resampled the crop to the configuration's
spacing and put its axes in the configuration's order (satnet.preprocessing.case). Export undoes
all three with what the case's CaseProperties stored: put the axes back in (Z, Y, X) order,
resample the class probabilities from shape_after_resampling back to shape_after_crop (linear,
separate-z as on the way in), then paste them into the box of an array of the raw shape. Outside
the box the image was all zero and is background.

Class index k is label value k (dataset.json labels are 0..K-1, as in nnU-Net).

Then a predicted case is written: `export_case` (one configuration) or `export_ensemble` (the mean
of several on the raw grid) make a CasePrediction, and `write_case` postprocesses it and writes the
mask `{case}{ending}` with exactly the raw image's geometry (uint8) and, when asked, `{case}.npz`
(float16 (K, Z, Y, X) probabilities under the key "probabilities") beside it. Training's
validation and `satnet predict` both write through these.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from satnet.contracts import atomic_write, remove_temporaries
from satnet.errors import InputError
from satnet.inference.postprocessing import PostprocessingDecision, apply_postprocessing
from satnet.io.cases import CaseProperties, check_case_id
from satnet.io.geometry import ImageGeometry, inverse_axes, to_raw_axes
from satnet.io.images import write_segmentation
from satnet.preprocessing.crop import bbox_slices, uncrop
from satnet.preprocessing.resample import resample_probabilities

if TYPE_CHECKING:
    import torch

    from satnet.planning.plans import ConfigurationPlan

PROBABILITIES_KEY = "probabilities"


def _to_cropped_grid(probs: np.ndarray, props: CaseProperties, anisotropy_threshold: float) -> np.ndarray:
    """(K, z, y, x) on the preprocessed grid -> float32 (K, Z', Y', X') on the cropped raw grid."""
    probs = np.asarray(probs)  # also takes a CPU torch tensor, without a copy
    if probs.ndim != 4 or list(probs.shape[1:]) != list(props.shape_after_resampling):
        raise InputError(
            f"case {props.case_id}: probabilities must be (K, Z, Y, X) with spatial shape "
            f"{props.shape_after_resampling} (shape_after_resampling), not {probs.shape}; predict on the "
            f"preprocessed case that these properties describe"
        )
    spacing = props.spacing_after_resampling
    if props.axis_order is not None:  # back to the raw (Z, Y, X) order first (preprocessing reordered last)
        probs = probs.transpose(0, *(a + 1 for a in inverse_axes(props.axis_order)))
        spacing = to_raw_axes(spacing, props.axis_order)
    return resample_probabilities(probs, props.shape_after_crop, spacing, anisotropy_threshold=anisotropy_threshold)


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


# ---------------------------------------------------------------------------------------------
# One predicted case: export to the raw grid and writing


@dataclass
class CasePrediction:
    """One case on its raw grid: the segmentation before postprocessing, uint8 (Z, Y, X), and the
    class probabilities float32 (K, Z, Y, X) when they are to be saved (else None)."""

    case_id: str
    geometry: ImageGeometry
    segmentation: np.ndarray
    probabilities: np.ndarray | None = None


def export_case(probs: np.ndarray | torch.Tensor, props: CaseProperties, plan: ConfigurationPlan,
                keep_probabilities: bool) -> CasePrediction:
    """Probabilities (K, z, y, x) on the preprocessed grid -> CasePrediction on the raw grid."""
    threshold = plan.resampling.anisotropy_threshold
    if not keep_probabilities:
        return CasePrediction(props.case_id, props.geometry, probabilities_to_segmentation(probs, props, threshold))
    return _from_raw_probabilities(props, revert_to_original(probs, props, threshold))


def export_ensemble(members: Sequence[tuple[np.ndarray | torch.Tensor, CaseProperties, ConfigurationPlan]],
                    keep_probabilities: bool) -> CasePrediction:
    """One case predicted by several configurations, each (probabilities (K, z, y, x) on its own preprocessed grid,
    its CaseProperties, its plan) -> their mean on the raw grid, as a CasePrediction (probabilities always kept
    when there are several: the mean is built on the raw grid anyway). One member: `export_case`."""
    if len(members) == 1:
        return export_case(*members[0], keep_probabilities)
    full = None
    for probs, props, plan in members:
        back = revert_to_original(probs, props, plan.resampling.anisotropy_threshold)  # (K, Z, Y, X)
        full = back if full is None else np.add(full, back, out=full)
    full /= len(members)
    return _from_raw_probabilities(members[0][1], full)


def _from_raw_probabilities(props: CaseProperties, full: np.ndarray) -> CasePrediction:
    """A CasePrediction from probabilities (K, Z, Y, X) on the raw grid: their argmax, and them."""
    return CasePrediction(props.case_id, props.geometry, np.argmax(full, axis=0).astype(np.uint8), full)


def probabilities_file(out_dir: str | Path, case_id: str) -> Path:
    return Path(out_dir) / f"{check_case_id(case_id)}.npz"


def save_probabilities(path: str | Path, probabilities: np.ndarray) -> Path:
    """Write (K, Z, Y, X) probabilities as float16 under key "probabilities" in a compressed .npz, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{PROBABILITIES_KEY: np.asarray(probabilities, dtype=np.float16)})
    data = buf.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def load_probabilities(path: str | Path) -> np.ndarray:
    """Read a .npz written by `save_probabilities`: float32 (K, Z, Y, X)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[PROBABILITIES_KEY].astype(np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"probabilities file {path} is unreadable ({type(exc).__name__}: {exc}); predict the case "
                         f"again with --save-probabilities") from None


def remove_unfinished_outputs(out_dir: str | Path, case_ids: Sequence[str], file_ending: str) -> None:
    """Remove what a killed run left of these cases' outputs (the hidden temporaries of their masks and .npz);
    only theirs, since other processes (`satnet predict --part`) may be writing into the same folder."""
    names = [n for c in case_ids for n in (f"{c}{file_ending}", probabilities_file(out_dir, c).name)]
    remove_temporaries(out_dir, names)


def write_case(prediction: CasePrediction, out_dir: str | Path, file_ending: str,
               postprocessing: PostprocessingDecision | None = None, save_probs: bool = False) -> Path:
    """Postprocess and write the mask `{case}{file_ending}` (and first `{case}.npz` when `save_probs`).

    The mask is written last, so its presence marks a complete case.
    """
    if save_probs:
        if prediction.probabilities is None:
            raise ValueError("save_probs needs the probabilities: export with keep_probabilities=True")
        save_probabilities(probabilities_file(out_dir, prediction.case_id), prediction.probabilities)
    seg = prediction.segmentation
    if postprocessing is not None:
        seg = apply_postprocessing(seg, postprocessing)
    path = Path(out_dir) / f"{check_case_id(prediction.case_id)}{file_ending}"
    write_segmentation(seg, prediction.geometry, path)
    return path
