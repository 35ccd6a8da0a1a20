"""The per-case preprocessing pipeline: crop, normalise, resample, reorder axes, sample foreground locations.

`preprocess_case` turns one raw case (arrays and geometry, as satnet.io reads them) into the
arrays and CaseProperties that `satnet.io.cases.save_case` writes. It is a pure function of
its inputs: the same case and plan give byte-identical arrays and properties, so a rerun or
another machine reproduces the preprocessed data exactly. The order follows nnU-Net: the
crop first (less to normalise and resample), normalisation before resampling (statistics of
the voxels that were actually acquired, not of interpolated ones).
"""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

import numpy as np

from satnet.errors import InputError
from satnet.io.cases import MAX_LABEL, CaseProperties
from satnet.io.geometry import IDENTITY_AXES, ImageGeometry, to_network_axes
from satnet.planning.plans import ConfigurationPlan
from satnet.preprocessing.crop import bbox_slices, bounding_box, nonzero_mask
from satnet.preprocessing.normalize import normalize
from satnet.preprocessing.resample import compute_new_shape, resample_image, resample_label

logger = logging.getLogger(__name__)

CLASS_LOCATIONS_SEED = 1234


def sample_class_locations(
    seg: np.ndarray,
    labels: Iterable[int] | Mapping[str, int],
    num_samples: int = 10000,
    seed: int = CLASS_LOCATIONS_SEED,
    min_fraction: float = 0.01,
) -> dict[str, list[list[int]]]:
    """Voxel coordinates [z, y, x] per foreground label of a (Z, Y, X) label map, for patch sampling.

    Per label (values other than 0; a Mapping is read as dataset.json's name -> value): up to
    `num_samples` voxels drawn without replacement, but at least ceil(min_fraction * count) so
    a large structure stays covered; a label absent from the case maps to []. Keys are the
    label values as strings; coordinates are sorted. The same seed gives the same samples.
    """
    values = sorted({int(v) for v in (labels.values() if isinstance(labels, Mapping) else labels)} - {0})
    rng = np.random.default_rng(seed)
    locations: dict[str, list[list[int]]] = {}
    for value in values:
        flat = np.flatnonzero(seg == value)
        count = min(num_samples, flat.size)
        count = max(count, int(np.ceil(flat.size * min_fraction)))
        chosen = np.sort(rng.choice(flat, size=count, replace=False)) if count else flat
        locations[str(value)] = np.stack(np.unravel_index(chosen, seg.shape), axis=1).tolist()
    return locations


def target_spacing(geometry: ImageGeometry, plan: ConfigurationPlan) -> list[float]:
    """The (Z, Y, X) spacing a case is resampled to, in the raw scans' order: the plan's, but never
    across Z for one slice.

    A one-slice image (a PNG, Z spacing 999) has no Z axis to resample, so it keeps its own Z
    spacing whatever the plan says. A 2D configuration of volumes is resampled to the plan's
    full spacing like a 3D one (plans.py: it trains on Z slices of data resampled to this
    spacing), so the two can share one preprocessed copy when their spacings agree.
    """
    spacing = [float(s) for s in plan.raw_spacing()]
    if geometry.shape[0] == 1:
        spacing[0] = float(geometry.spacing[0])
    return spacing


def _check_inputs(
    image: np.ndarray, geometry: ImageGeometry, seg: np.ndarray | None, plan: ConfigurationPlan, case_id: str
) -> None:
    """Raise InputError naming the case when the arrays do not match the geometry or the plan."""
    if image.ndim != 4 or list(image.shape[1:]) != list(geometry.shape):
        raise InputError(
            f"case {case_id}: image must be (C, Z, Y, X) with spatial shape {geometry.shape} from its geometry, "
            f"not {image.shape}; check that all channel files of the case have the same size"
        )
    if image.shape[0] != len(plan.normalization):
        raise InputError(
            f"case {case_id}: {image.shape[0]} channel(s) but configuration {plan.name!r} expects "
            f"{len(plan.normalization)}; check the case's _0000, _0001, ... files against dataset.json channel_names"
        )
    if seg is None:
        return
    if seg.shape != image.shape[1:]:
        raise InputError(
            f"case {case_id}: label shape {seg.shape} differs from image shape {image.shape[1:]}; "
            f"the label must be on the image's voxel grid"
        )
    if not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"case {case_id}: label must hold integers, not {seg.dtype}")


def _check_label_values(seg: np.ndarray, labels: list[int], case_id: str) -> None:
    allowed = max(labels, default=0)
    if allowed > MAX_LABEL:
        raise InputError(f"label value {allowed} is too large: satnet stores labels as int8, at most {MAX_LABEL}")
    low, high = int(seg.min(initial=0)), int(seg.max(initial=0))
    if low < 0 or high > allowed:
        raise InputError(
            f"case {case_id}: label values must lie in 0..{allowed} (dataset.json labels), found {low}..{high}; "
            f"fix the label file or dataset.json"
        )


def _transpose(array: np.ndarray, order: list[int]) -> np.ndarray:
    """(C, Z, Y, X) -> (C, *the spatial axes in `order`), contiguous; the array itself when nothing moves."""
    if order == list(IDENTITY_AXES):
        return array
    return np.ascontiguousarray(array.transpose(0, *(a + 1 for a in order)))


def preprocess_case(
    image: np.ndarray,
    geometry: ImageGeometry,
    seg: np.ndarray | None,
    plan: ConfigurationPlan,
    case_id: str,
    labels: Iterable[int] | Mapping[str, int],
    num_samples: int = 10000,
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Preprocess one case for configuration `plan`.

    - image: float (C, Z, Y, X) on the grid described by `geometry`; seg: int (Z, Y, X) or None.
    - labels: the label values (or dataset.json's name -> value mapping).
    Returns (data float32 (C, z, y, x), seg int8 (1, z, y, x) or None, CaseProperties): cropped
    to the non-zero box, normalised by plan.normalization, resampled to `target_spacing`
    (plan.resampling's orders and label mode), its axes put in plan.axis_order, with foreground
    locations sampled from the resampled label.
    """
    _check_inputs(image, geometry, seg, plan, case_id)
    values = [int(v) for v in (labels.values() if isinstance(labels, Mapping) else labels)]
    if seg is not None:
        _check_label_values(seg, values, case_id)
    mask = nonzero_mask(image)  # (Z, Y, X)
    bbox = bounding_box(mask)
    box = bbox_slices(bbox)
    mask = mask[box]
    data = normalize(image[(slice(None),) + box], plan.normalization, mask)  # (C, z, y, x), a new array
    spacing = [float(s) for s in geometry.spacing]
    target = target_spacing(geometry, plan)
    shape_after_crop = list(data.shape[1:])
    new_shape = compute_new_shape(shape_after_crop, spacing, target)
    threshold = plan.resampling.anisotropy_threshold
    data = resample_image(data, spacing, new_shape=new_shape, order=plan.resampling.image_order, anisotropy_threshold=threshold)
    order = list(plan.axis_order)
    data = _transpose(data, order)
    locations: dict[str, list[list[int]]] = {}
    if seg is not None:
        cropped = seg[box].astype(np.int8)
        seg = resample_label(cropped, new_shape, spacing, mode=plan.resampling.label_mode, anisotropy_threshold=threshold)
        seg = _transpose(seg[None], order)[0]
        locations = sample_class_locations(seg, values, num_samples=num_samples)
        seg = seg[None]  # (1, z, y, x)
    props = CaseProperties(
        case_id=case_id,
        geometry=geometry,
        crop_bbox=bbox,
        shape_after_crop=shape_after_crop,
        shape_after_resampling=to_network_axes(new_shape, order),
        spacing_after_resampling=to_network_axes(target, order),
        class_locations=locations,
        axis_order=order if plan.transposed else None,
    )
    logger.debug("case %s: %s -> crop %s -> %s at %s mm", case_id, geometry.shape, shape_after_crop, new_shape, target)
    return data, seg, props
