"""Reading images and labels, and writing segmentations: the only place satnet touches image files.

Arrays are numpy (C, Z, Y, X) for images and (Z, Y, X) for labels and segmentations; a 2D
file gives Z = 1. Geometry (spacing in mm, origin in mm, direction cosines) comes back as an
ImageGeometry in the same (Z, Y, X) order and is written back unchanged, so a segmentation
overlays its image exactly. Formats by file ending (SUPPORTED_ENDINGS):

- .nii.gz, .nii, .nrrd, .mha, .mhd: SimpleITK (nibabel for NIfTI files SimpleITK refuses as
  non-orthonormal; see satnet.io.image_formats).
- .png, .bmp, .tif, .tiff, .jpg, .jpeg: Pillow, as 2D natural images with spacing (999, 1, 1)
  (RGB -> 3 channels, RGBA -> alpha dropped, grayscale -> 1). Segmentations are never written
  as JPEG, whose lossy compression would change label values, so the dataset check refuses it
  as a dataset's file_ending (LOSSY_ENDINGS); nor is .mhd, whose voxels lie in a second file
  (DETACHED_ENDINGS).

Every failure a user can cause (unsupported ending, a file without read permission, a
symbolic link to nothing, a corrupt or truncated file, a 4D volume, a label with fractional
values, channel files that do not line up) raises an InputError naming the file
(ImageFileError, with `.path` and `.reason`) and the fix; a missing file raises
MissingFileError.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from satnet.contracts import naming_file
from satnet.errors import InputError, MissingFileError
from satnet.io.geometry import ImageGeometry
from satnet.io.image_formats import (
    NATURAL_ENDINGS,
    NIFTI_ENDINGS,
    SITK_ENDINGS,
    ImageFileError,
    is_orthonormal,
    read_pillow,
    read_sitk,
    write_nifti_nibabel,
    write_pillow,
    write_sitk,
)

__all__ = [
    "SUPPORTED_ENDINGS",
    "LOSSY_ENDINGS",
    "DETACHED_ENDINGS",
    "GEOMETRY_TOLERANCE",
    "GeometryTolerance",
    "ImageFileError",
    "image_ending",
    "geometry_mismatch",
    "read_image",
    "read_label",
    "write_segmentation",
]

SUPPORTED_ENDINGS: tuple[str, ...] = SITK_ENDINGS + NATURAL_ENDINGS
LOSSY_ENDINGS = (".jpg", ".jpeg")  # readable, never a dataset's file_ending: masks are written in it
# Readable and writable, never a dataset's file_ending: a MetaImage header keeps its voxels in a second file
# (.raw / .zraw), which imagesTr and labelsTr would hold as a stray file beside every case.
DETACHED_ENDINGS = (".mhd",)


@dataclass(frozen=True)
class GeometryTolerance:
    """How far two geometries may differ and still describe the same voxel grid.

    - spacing_rel: per axis, |a - b| <= spacing_rel * max(|a|, |b|).
    - origin_voxels: per physical coordinate, |a - b| <= origin_voxels * (smallest spacing), mm.
    - direction_abs: per direction cosine, |a - b| <= direction_abs.

    1e-3 (a thousandth of a voxel) is far below anything that moves a prediction, and far
    above the float32 rounding (about 1e-7 relative) between tools that store the same
    geometry in float32 (NIfTI) and float64 (NRRD, MetaImage).
    """

    spacing_rel: float = 1e-3
    origin_voxels: float = 1e-3
    direction_abs: float = 1e-3


GEOMETRY_TOLERANCE = GeometryTolerance()


def image_ending(path: str | Path) -> str | None:
    """The supported ending of `path` (lower case, the longest match: ".nii.gz" before ".gz"), or None."""
    name = Path(path).name.lower()
    matches = [e for e in SUPPORTED_ENDINGS if name.endswith(e) and len(name) > len(e)]
    return max(matches, key=len) if matches else None


def _require_ending(path: Path) -> str:
    ending = image_ending(path)
    if ending is None:
        raise ImageFileError(
            path,
            f"has an unsupported file ending; satnet reads {', '.join(SUPPORTED_ENDINGS)}: convert it to one of "
            f"these (e.g. with SimpleITK)",
        )
    return ending


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def geometry_mismatch(
    a: ImageGeometry, b: ImageGeometry, tolerance: GeometryTolerance = GEOMETRY_TOLERANCE
) -> str | None:
    """None when `a` and `b` describe the same voxel grid within `tolerance`, else what differs.

    The description lists each differing property, e.g. "spacing (3, 1, 1) vs (3.2, 1, 1)";
    all values in (Z, Y, X) order, mm.
    """
    if list(a.shape) != list(b.shape):
        return f"shape (Z, Y, X) {_fmt(a.shape)} vs {_fmt(b.shape)}"
    diffs = []
    if a.spatial_dims_in_file != b.spatial_dims_in_file:
        diffs.append(f"{a.spatial_dims_in_file}D file vs {b.spatial_dims_in_file}D file")
    sa, sb = np.asarray(a.spacing, dtype=float), np.asarray(b.spacing, dtype=float)
    if np.any(np.abs(sa - sb) > tolerance.spacing_rel * np.maximum(np.abs(sa), np.abs(sb))):
        diffs.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)}")
    origin_tol = tolerance.origin_voxels * float(min(sa.min(), sb.min()))
    if np.any(np.abs(np.subtract(a.origin, b.origin)) > origin_tol):
        diffs.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)}")
    if np.any(np.abs(np.subtract(a.direction, b.direction)) > tolerance.direction_abs):
        diffs.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return "; ".join(diffs) or None


def _read_file(path: str | Path, as_label: bool = False) -> tuple[np.ndarray, ImageGeometry]:
    """One file: ((C, Z, Y, X) array in the file's dtype, geometry)."""
    path = Path(path)
    ending = _require_ending(path)
    if not path.is_file():
        if path.is_symlink():  # listed in its folder, so the dataset check reports it among the other problems
            raise ImageFileError(path, f"is a symbolic link to {os.readlink(path)}, which does not exist: point the "
                                       f"link at the file or put the file in its place")
        raise MissingFileError(f"image file not found: {path}")
    try:  # the libraries report an unreadable file as missing or corrupt
        with open(path, "rb"):
            pass
    except PermissionError:
        raise ImageFileError(path, "cannot be opened (permission denied): give the user running satnet read access "
                                   "to it (e.g. chmod a+r FILE)") from None
    if ending in NATURAL_ENDINGS:
        return read_pillow(path, as_label=as_label)
    return read_sitk(path, as_label=as_label)


def read_image(paths: Sequence[str | Path]) -> tuple[np.ndarray, ImageGeometry]:
    """Read the channel files of one case, in channel order: (float32 (C, Z, Y, X), geometry).

    A file may hold several channels (an RGB PNG holds 3); C is the total over the files.
    The geometry is the first file's; every other file must have the same shape and agree
    with it within GEOMETRY_TOLERANCE, else an ImageFileError names both files.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("read_image needs at least one file")
    arrays, geometry = [], None
    for path in paths:
        array, geom = _read_file(path)
        if geometry is None:
            geometry = geom
        else:
            mismatch = geometry_mismatch(geometry, geom)
            if mismatch:
                raise ImageFileError(
                    path,
                    f"does not line up with {paths[0]} ({mismatch}); all channel files of a case must share "
                    f"one voxel grid: resample this channel onto the first one's grid",
                )
        arrays.append(array)
    if len(arrays) == 1:
        return np.ascontiguousarray(arrays[0], dtype=np.float32), geometry  # one copy at most
    return np.concatenate(arrays, axis=0, dtype=np.float32), geometry  # (C, Z, Y, X)


def read_label(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Read a label file: ((Z, Y, X) integer array, geometry).

    dtype uint8 when the values fit in 0..255, else int16 or int32. Float files are accepted
    when every value is an integer; a non-integer, NaN or inf value is an ImageFileError
    naming a few offending values. Whether the values are declared labels is checked by
    satnet.io.checks, not here.
    """
    path = Path(path)
    array, geometry = _read_file(path, as_label=True)
    if array.shape[0] != 1:
        raise ImageFileError(
            path, f"has {array.shape[0]} channels; a label must have one channel of integer class values"
        )
    return np.ascontiguousarray(_integer_labels(array[0], path)), geometry


def _integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """Convert label values to the smallest of uint8 / int16 / int32 that holds them."""
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (np.round(array) != array)  # NaN and inf count as non-integer
        if bad.any():
            examples = ", ".join(f"{v:g}" for v in np.unique(array[bad])[:5])
            raise ImageFileError(
                path,
                f"has {int(bad.sum())} non-integer label values (e.g. {examples}); a label holds integer class "
                f"values: if it was resampled, redo it with nearest-neighbour interpolation; if it is a "
                f"probability map, threshold it",
            )
    elif array.dtype.kind not in "iu":
        raise ImageFileError(path, f"has pixel type {array.dtype}; a label holds integer class values")
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype, copy=False)
    raise ImageFileError(path, f"has label values from {low:g} to {high:g}, beyond the int32 range")


def write_segmentation(seg: np.ndarray, geometry: ImageGeometry, path: str | Path) -> None:
    """Write a (Z, Y, X) segmentation (values 0..255) with exactly `geometry`, atomically.

    The format follows the ending of `path` (any of SUPPORTED_ENDINGS except JPEG). A
    geometry read from a 2D file is written as a 2D file. The file appears under its name
    only when complete (written into a hidden temporary folder beside it, then renamed).
    """
    path = Path(path)
    ending = _require_ending(path)
    if ending in LOSSY_ENDINGS:
        raise InputError(
            f"cannot write segmentation {path}: JPEG compression is lossy and changes label values; use .png"
        )
    seg = np.asarray(seg)
    if seg.ndim != 3 or list(seg.shape) != list(geometry.shape):
        raise ValueError(
            f"segmentation shape {seg.shape} does not match the geometry's shape {geometry.shape} (Z, Y, X)"
        )
    if seg.dtype.kind not in "biu" or (seg.size and (seg.min() < 0 or seg.max() > 255)):
        raise ValueError(f"a segmentation holds integer values 0..255, not dtype {seg.dtype}")
    seg = np.ascontiguousarray(seg, dtype=np.uint8)
    if ending in NATURAL_ENDINGS:
        write: Callable[[Path], None] = lambda p: write_pillow(seg, p, ending)  # noqa: E731
    elif ending in NIFTI_ENDINGS and not is_orthonormal(geometry):
        write = lambda p: write_nifti_nibabel(seg, geometry, p)  # noqa: E731
    else:
        write = lambda p: write_sitk(seg, geometry, p)  # noqa: E731
    try:
        _write_atomically(path, write)
    except RuntimeError as exc:  # SimpleITK
        raise InputError(f"could not write segmentation {path} ({str(exc).strip().splitlines()[-1]})") from None


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on `path`'s name inside a hidden temporary folder beside it, then move it into place.

    Writing under the final name matters for MetaImage (.mhd), whose header names its data
    file: data files are moved first and the named file last, so `path` appears only when
    everything it refers to is in place. The ending is written in lower case and the file
    renamed to `path` at the move: ITK picks its writer by the ending, refuses .NII.GZ and
    writes a .MHA as a .mhd header and data file.
    """
    ending = _require_ending(path)
    name = path.name[: -len(ending)] + ending
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp / name)
        for produced in sorted(tmp.iterdir(), key=lambda p: p.name == name):
            fd = os.open(produced, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(produced, path if produced.name == name else path.parent / produced.name)
    except OSError as exc:
        raise naming_file(exc, path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
