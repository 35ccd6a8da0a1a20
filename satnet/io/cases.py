"""Preprocessed cases on disk: `WORK_DIR/preprocessed/<config>/`.

Per case three files:
- `<case>.npy`: float32 image, (C, Z, Y, X), normalised and resampled.
- `<case>_seg.npy`: int8 label, (1, Z, Y, X), values 0..K.
- `<case>.json`: CaseProperties (the geometry of the raw image, the crop box, shapes, sampled
  foreground voxel locations per label, the raw files it was made from).

Plain .npy because training reads random patches from memory-mapped arrays, which costs no
decompression and no more RAM than the patch. Every file is written atomically, and the JSON
last: a case is complete exactly when its JSON exists, so a killed run leaves at most a stray
.npy that the rerun overwrites.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from satnet.contracts import Contract, atomic_write, atomic_write_json, read_json
from satnet.errors import InputError, MissingFileError
from satnet.io.geometry import ImageGeometry, check_axis_order

_SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
MAX_LABEL = int(np.iinfo(np.int8).max)  # the largest label value a `<case>_seg.npy` (int8) holds


def is_safe_name(name: object) -> bool:
    """Whether `name` can be used as a file or folder name inside satnet's folders: letters, digits, '.', '_'
    and '-', not starting with '.', without '..' (so no path separators, no escape from the folder)."""
    return isinstance(name, str) and bool(_SAFE_CASE_ID.match(name)) and ".." not in name


def check_case_id(case_id: str, source: str = "") -> str:
    """Return `case_id` if it is safe as a file name (letters, digits, '.', '_', '-'; no leading '.').

    A case id comes from file names or dataset.json and becomes part of output paths, so one
    with a path separator, '..', a space or a leading dot is refused rather than allowed to
    write outside WORK_DIR or OUTPUT_DIR.
    """
    if not is_safe_name(case_id):
        where = f" ({source})" if source else ""
        raise InputError(
            f"case id {case_id!r}{where} is not allowed: use letters, digits, '.', '_' and '-' only "
            f"(no spaces, path separators or leading dot); rename the files"
        )
    return case_id


@dataclass
class SourceFile(Contract):
    """One raw file a preprocessed case was made from: `file` relative to the raw dataset folder
    ("imagesTr/case_000_0000.nii.gz"), its size in bytes and the SHA-256 of its bytes (hex)."""

    file: str
    size: int
    sha256: str


def source_file(path: str | Path, raw_dir: str | Path) -> SourceFile:
    """The SourceFile of `path` (inside `raw_dir`), hashed in 1 MiB blocks."""
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    try:
        name = path.relative_to(raw_dir).as_posix()
    except ValueError:
        name = path.name
    return SourceFile(file=name, size=size, sha256=digest.hexdigest())


@dataclass
class CaseProperties(Contract):
    """What is needed to map a preprocessed case back onto its raw image, and to sample patches.

    - geometry: the raw image's geometry (shape, spacing, origin, direction).
    - crop_bbox: per axis (Z, Y, X) the [start, stop) of the non-zero box in raw voxels.
    - shape_after_crop, shape_after_resampling: spatial (Z, Y, X).
    - spacing_after_resampling: (Z, Y, X) mm, the configuration's target spacing.
    - class_locations: label value (as a string) -> up to N sampled voxel coordinates
      [z, y, x] in the preprocessed array, used to force foreground into patches.
    - sources: the raw files the case was made from (channel files in order, then the label),
      so a rerun redoes the case when one changed; None in cases preprocessed before the field
      existed (satnet.preprocessing.sources decides what to do with those).
    - axis_order: the configuration's axis order (ConfigurationPlan.axis_order) when the arrays are
      not in the raw (Z, Y, X) order; shape_after_resampling, spacing_after_resampling and
      class_locations are then in that order, geometry, crop_bbox and shape_after_crop still in the raw
      one. None (null; absent in older files): (Z, Y, X).
    """

    FORMAT_VERSION = 1

    case_id: str
    geometry: ImageGeometry
    crop_bbox: list[list[int]]
    shape_after_crop: list[int]
    shape_after_resampling: list[int]
    spacing_after_resampling: list[float]
    class_locations: dict[str, list[list[int]]] = field(default_factory=dict)
    sources: list[SourceFile] | None = None
    axis_order: list[int] | None = None
    format_version: int = 1

    def __post_init__(self) -> None:
        if self.axis_order is not None:
            self.axis_order = check_axis_order(self.axis_order, f"case {self.case_id}: axis_order")


def case_paths(folder: str | Path, case_id: str) -> tuple[Path, Path, Path]:
    """(image .npy, label .npy, properties .json) paths of a case in `folder`."""
    folder = Path(folder)
    check_case_id(case_id)
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))


def save_case(folder: str | Path, props: CaseProperties, data: np.ndarray, seg: np.ndarray | None) -> None:
    """Write one preprocessed case atomically; the JSON (the completion marker) goes last.

    When a write fails (a full disk), the case's files written so far are removed again, so the
    folder holds complete cases only.
    """
    data_path, seg_path, props_path = case_paths(folder, props.case_id)
    try:
        _save_npy(data_path, data.astype(np.float32, copy=False))
        if seg is not None:
            _save_npy(seg_path, seg.astype(np.int8, copy=False))
        atomic_write_json(props_path, props)
    except Exception:
        remove_case(folder, props.case_id)
        raise


def remove_case(folder: str | Path, case_id: str) -> None:
    """Remove a case's files from `folder`, its JSON (the completion marker) first."""
    data_path, seg_path, props_path = case_paths(folder, case_id)
    for path in (props_path, seg_path, data_path):
        path.unlink(missing_ok=True)


def is_complete(folder: str | Path, case_id: str) -> bool:
    data_path, _, props_path = case_paths(folder, case_id)
    return props_path.is_file() and data_path.is_file()


def list_cases(folder: str | Path) -> list[str]:
    """Sorted ids of the complete cases in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ids = [p.stem for p in folder.glob("*.json")]
    return sorted(i for i in ids if _SAFE_CASE_ID.match(i) and (folder / f"{i}.npy").is_file())


def load_properties(folder: str | Path, case_id: str) -> CaseProperties:
    _, _, props_path = case_paths(folder, case_id)
    return CaseProperties.from_dict(
        read_json(props_path, "case properties", "rerun `satnet preprocess` for this work folder"), str(props_path)
    )


def load_case(
    folder: str | Path, case_id: str, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """(image (C, Z, Y, X) float32, label (1, Z, Y, X) int8 or None, properties).

    With mmap the arrays are read-only memory maps: slicing a patch reads only that patch.
    """
    data_path, seg_path, _ = case_paths(folder, case_id)
    if not data_path.is_file():
        raise MissingFileError(
            f"preprocessed case {data_path} not found; run `satnet plan-and-preprocess` (or `satnet preprocess`) first"
        )
    props = load_properties(folder, case_id)
    mode = "r" if mmap else None
    try:
        data = np.load(data_path, mmap_mode=mode, allow_pickle=False)
        seg = np.load(seg_path, mmap_mode=mode, allow_pickle=False) if seg_path.is_file() else None
    except (ValueError, OSError) as exc:
        raise InputError(
            f"preprocessed case {data_path} is unreadable ({exc}); delete {props_path_of(folder, case_id)} and "
            f"rerun `satnet preprocess` to rebuild it"
        ) from None
    return data, seg, props


def props_path_of(folder: str | Path, case_id: str) -> Path:
    return case_paths(folder, case_id)[2]
