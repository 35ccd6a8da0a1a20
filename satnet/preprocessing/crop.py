"""Cropping to the non-zero region, and the bounding box that undoes it.

Scanners and dataset curators often pad images with exact zeros (skull-stripped brains,
cropped MSD volumes, masked CT). Cropping to the box of voxels that are non-zero in any
channel removes that padding before resampling and training, as nnU-Net does; the box is
stored per case (CaseProperties.crop_bbox) so export can paste predictions back.

The non-zero mask also serves z-score normalisation with `use_nonzero_mask`: there the mean
and std are taken inside the mask only. Its holes are filled, so voxels that are zero but
enclosed by the object (air in a sinus, a zero-valued lesion) count as inside; filling holes
never changes the bounding box, only the normalisation region.

All arrays are numpy (C, Z, Y, X) for images and (Z, Y, X) for masks and labels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

BBox = list[list[int]]  # per axis (Z, Y, X): [start, stop), stop exclusive


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel, holes filled: (C, Z, Y, X) -> bool (Z, Y, X).

    Holes are filled in 3D. A single-slice image (Z = 1, a 2D case) is filled in 2D: in 3D
    every voxel of a one-slice volume touches the border, so no hole would ever be filled.
    """
    mask = np.any(data != 0, axis=0)  # (Z, Y, X)
    if mask.shape[0] == 1:
        return ndimage.binary_fill_holes(mask[0])[None]
    return ndimage.binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> BBox:
    """[[z0, z1], [y0, y1], [x0, x1]] (stop exclusive) of the True voxels of a (Z, Y, X) mask.

    An empty mask (an all-zero image) gives the whole image: nothing is cropped, so the case
    still goes through preprocessing and export with its original shape.
    """
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        box.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, int(mask.shape[axis])])
    return box


def nonzero_bbox(data: np.ndarray) -> BBox:
    """The box of voxels non-zero in any channel of (C, Z, Y, X); the whole image when all zero.

    Equal to `bounding_box(nonzero_mask(data))` without the cost of filling holes, which never
    moves the box.
    """
    return bounding_box(np.any(data != 0, axis=0))


def bbox_slices(bbox: BBox) -> tuple[slice, ...]:
    """The (Z, Y, X) slices of a box; index an image with `(slice(None),) + bbox_slices(bbox)`."""
    return tuple(slice(start, stop) for start, stop in bbox)


def crop_to_nonzero(
    data: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, BBox]:
    """Crop an image (C, Z, Y, X) and its label (Z, Y, X) to the non-zero box of the image.

    Returns (cropped data (C, z, y, x), cropped seg (z, y, x) or None, bbox). The crops are
    copies, so the (large) input can be freed. An all-zero image is returned whole.
    """
    bbox = nonzero_bbox(data)
    box = bbox_slices(bbox)
    cropped = data[(slice(None),) + box].copy()
    cropped_seg = seg[box].copy() if seg is not None else None
    return cropped, cropped_seg, bbox


def uncrop(cropped: np.ndarray, bbox: BBox, shape: list[int] | tuple[int, ...], fill: float | int = 0) -> np.ndarray:
    """Paste a (..., z, y, x) crop back into a (..., Z, Y, X) array of spatial `shape` filled with `fill`.

    Leading axes (channels) are kept. The crop must have exactly the box's size.
    """
    spatial = tuple(stop - start for start, stop in bbox)
    if tuple(cropped.shape[-3:]) != spatial:
        raise ValueError(f"crop of shape {cropped.shape[-3:]} does not fit the box {bbox} (size {spatial})")
    out = np.full(cropped.shape[:-3] + tuple(int(s) for s in shape), fill, dtype=cropped.dtype)
    out[(Ellipsis,) + bbox_slices(bbox)] = cropped
    return out
