"""The dataset fingerprint: what the planner needs to know about a raw dataset.

Written to WORK_DIR/fingerprint.json (field by field in docs/formats.md). Per case: spacing
and shape before and after cropping to the non-zero region. Per channel: intensity statistics
of the labelled foreground (mean, std, min, max, median, 0.5 and 99.5 percentiles), sampled as
nnU-Net does: up to `FOREGROUND_SAMPLES_TOTAL / num_cases` foreground voxels per case, drawn
with a per-case seed so the file is byte-identical run to run. Per label: fraction of all
voxels and the median extent in mm of its connected objects (face connectivity).
"""
from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from satnet.contracts import Contract, atomic_write_json, read_json
from satnet.io.checks import RawDataset
from satnet.io.images import read_image, read_label
from satnet.io.pool import map_cases
from satnet.io.raw_cases import RawCase
from satnet.io.workdir import FINGERPRINT_FILE, WorkDir  # noqa: F401 (FINGERPRINT_FILE re-exported)
from satnet.preprocessing.crop import nonzero_bbox

log = logging.getLogger(__name__)

# nnU-Net samples 1e8 foreground voxels over the dataset; 1e7 keeps the fingerprint of a 2000-case
# 3-channel dataset under 1 GB of RAM while every case still contributes thousands of voxels.
FOREGROUND_SAMPLES_TOTAL = 10_000_000


@dataclass
class CaseFingerprint(Contract):
    """One case: spacing (Z, Y, X) mm, spatial shape before and after cropping to non-zero."""

    case_id: str
    spacing: list[float]
    shape_before_crop: list[int]
    shape_after_crop: list[int]


@dataclass
class ChannelStats(Contract):
    """Foreground intensity statistics of one channel over the whole dataset."""

    name: str
    mean: float
    std: float
    min: float
    max: float
    median: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass
class LabelStats(Contract):
    """One foreground label: share of all voxels, object count, median object extent (Z, Y, X) mm."""

    name: str
    value: int
    voxel_fraction: float
    num_objects: int
    median_object_extent_mm: list[float]


@dataclass
class Fingerprint(Contract):
    FORMAT_VERSION = 1

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    num_cases: int
    natural_image_2d: bool  # every file is a 2D image (PNG, JPEG, TIFF, 2D NIfTI): no physical Z axis
    cases: list[CaseFingerprint]
    channels: list[ChannelStats]
    label_stats: list[LabelStats]
    format_version: int = 1

    def spacings(self) -> np.ndarray:
        """(N, 3) spacings, Z, Y, X."""
        return np.array([c.spacing for c in self.cases], dtype=float)

    def shapes_after_crop(self) -> np.ndarray:
        """(N, 3) cropped shapes, Z, Y, X."""
        return np.array([c.shape_after_crop for c in self.cases], dtype=float)

    def median_spacing(self) -> list[float]:
        return [float(v) for v in np.median(self.spacings(), axis=0)]

    def median_shape_at(self, spacing: Sequence[float]) -> list[int]:
        """Median cropped shape after resampling every case to `spacing` (Z, Y, X)."""
        shapes = self.shapes_after_crop() * self.spacings() / np.asarray(spacing, dtype=float)[None]
        return [max(1, int(round(v))) for v in np.median(shapes, axis=0)]

    def total_voxels_at(self, spacing: Sequence[float]) -> float:
        """Voxels of the whole cropped dataset after resampling to `spacing`."""
        shapes = self.shapes_after_crop() * self.spacings() / np.asarray(spacing, dtype=float)[None]
        return float(np.prod(np.maximum(shapes, 1), axis=1).sum())

    def median_relative_size_after_crop(self) -> float:
        before = np.prod([c.shape_before_crop for c in self.cases], axis=1).astype(float)
        after = np.prod([c.shape_after_crop for c in self.cases], axis=1).astype(float)
        return float(np.median(after / before))


# ---------------------------------------------------------------------------------------------
# Per case (runs in worker processes)


@dataclass
class _CaseResult:
    case: CaseFingerprint
    samples: list[np.ndarray]  # per channel, sampled foreground intensities
    label_voxels: dict[int, int]
    total_voxels: int
    extents_mm: dict[int, list[list[float]]] = field(default_factory=dict)
    is_2d: bool = False


def _object_extents_mm(seg: np.ndarray, value: int, spacing: Sequence[float]) -> list[list[float]]:
    from scipy import ndimage

    components, n = ndimage.label(seg == value)
    if n == 0:
        return []
    boxes = ndimage.find_objects(components)
    return [[(s.stop - s.start) * sp for s, sp in zip(box, spacing)] for box in boxes if box is not None]


def fingerprint_case(case: RawCase, label_values: Sequence[int], samples_per_case: int) -> _CaseResult:
    """Read one case and compute its part of the fingerprint."""
    image, geometry = read_image(case.image_files)  # (C, Z, Y, X)
    seg, _ = read_label(case.label_file)  # (Z, Y, X)
    bbox = nonzero_bbox(image)
    cropped_shape = [b - a for a, b in bbox]
    rng = np.random.default_rng(zlib.crc32(case.case_id.encode("utf-8")))
    foreground = seg > 0
    n_fg = int(foreground.sum())
    samples = []
    if n_fg:
        take = min(samples_per_case, n_fg)
        idx = np.sort(rng.choice(n_fg, size=take, replace=False)) if take < n_fg else None
        for channel in image:
            values = channel[foreground]
            samples.append(values[idx] if idx is not None else values)
    else:
        samples = [np.zeros(0, dtype=np.float32) for _ in image]
    counts = np.bincount(seg.ravel().astype(np.int64), minlength=max(label_values) + 1)
    return _CaseResult(
        case=CaseFingerprint(case.case_id, list(geometry.spacing), list(geometry.shape), cropped_shape),
        samples=samples,
        label_voxels={v: int(counts[v]) for v in label_values if v > 0},
        total_voxels=int(seg.size),
        extents_mm={v: _object_extents_mm(seg, v, geometry.spacing) for v in label_values if v > 0},
        is_2d=geometry.spatial_dims_in_file == 2,
    )


# ---------------------------------------------------------------------------------------------
# Whole dataset


def _channel_stats(name: str, values: np.ndarray) -> ChannelStats:
    if values.size == 0:  # no labelled foreground anywhere: statistics are undefined, use 0/1
        return ChannelStats(name, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    values = values.astype(np.float64)
    p005, p50, p995 = np.percentile(values, [0.5, 50.0, 99.5])
    return ChannelStats(
        name=name, mean=float(values.mean()), std=float(values.std()), min=float(values.min()),
        max=float(values.max()), median=float(p50), percentile_00_5=float(p005), percentile_99_5=float(p995),
    )


def compute_fingerprint(dataset: RawDataset, workers: int = 1) -> Fingerprint:
    """Fingerprint a checked raw dataset, reading cases in `workers` processes."""
    ds = dataset.dataset_json
    cases = sorted(dataset.cases, key=lambda c: c.case_id)
    label_values = sorted(ds.labels.values())
    per_case = max(1, FOREGROUND_SAMPLES_TOTAL // max(1, len(cases)))
    work = functools.partial(fingerprint_case, label_values=label_values, samples_per_case=per_case)
    results = map_cases(work, cases, workers, "fingerprint")
    num_channels = len(ds.channel_names)
    channel_names = [ds.channel_names[str(i)] for i in range(num_channels)]
    channels = [
        _channel_stats(channel_names[c], np.concatenate([r.samples[c] for r in results]))
        for c in range(num_channels)
    ]
    total = sum(r.total_voxels for r in results)
    names = {v: k for k, v in ds.labels.items()}
    label_stats = []
    for v in label_values:
        if v == 0:
            continue
        extents = [e for r in results for e in r.extents_mm[v]]
        median = [float(m) for m in np.median(np.array(extents), axis=0)] if extents else [0.0, 0.0, 0.0]
        label_stats.append(LabelStats(names[v], v, sum(r.label_voxels[v] for r in results) / total,
                                      len(extents), median))
    return Fingerprint(
        dataset_name=Path(dataset.raw_dir).name,
        channel_names=dict(ds.channel_names),
        labels=dict(ds.labels),
        file_ending=ds.file_ending,
        num_cases=len(cases),
        natural_image_2d=all(r.is_2d for r in results),
        cases=[r.case for r in results],
        channels=channels,
        label_stats=label_stats,
    )


def save_fingerprint(fingerprint: Fingerprint, work_dir: str | Path) -> Path:
    return atomic_write_json(WorkDir(work_dir).fingerprint, fingerprint)


def load_fingerprint(work_dir: str | Path) -> Fingerprint:
    path = WorkDir(work_dir).fingerprint
    data = read_json(path, "fingerprint", f"run `satnet plan-and-preprocess RAW_DATASET_DIR -o {work_dir}` first")
    return Fingerprint.from_dict(data, str(path))


def synthetic_fingerprint(
    num_cases: int = 300,
    shape: Sequence[int] = (200, 512, 512),
    spacing: Sequence[float] = (2.5, 0.8, 0.8),
    channel: str = "CT",
    labels: Sequence[str] = ("organ", "tumour"),
    seed: int = 0,
    jitter: float = 0.1,
    crop_fraction: float = 0.9,
) -> Fingerprint:
    """A fingerprint of a made-up dataset, for planning studies without data (tests, benchmarks).

    Shapes and spacings vary by +-`jitter` (relative) around the given (Z, Y, X) values and
    cropping to the non-zero region keeps `crop_fraction` of each axis; the default is a large
    abdominal-CT-like dataset (about 300 cases of 200x512x512 at 2.5x0.8x0.8 mm).
    """
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(num_cases):
        scale = rng.uniform(1 - jitter, 1 + jitter, size=3)
        before = [int(round(s * j)) for s, j in zip(shape, scale)]
        after = [max(1, int(round(b * crop_fraction))) for b in before]
        sp = [float(round(s * rng.uniform(1 - jitter, 1 + jitter), 4)) for s in spacing]
        cases.append(CaseFingerprint(f"case_{i:04d}", sp, before, after))
    intensity = ChannelStats(channel, 60.0, 80.0, -1024.0, 3000.0, 55.0, -90.0, 250.0)
    label_stats = [
        LabelStats(name, v + 1, 0.02 / (v + 1), num_cases, [60.0 / (v + 1), 80.0 / (v + 1), 80.0 / (v + 1)])
        for v, name in enumerate(labels)
    ]
    return Fingerprint(
        dataset_name="SyntheticCT", channel_names={"0": channel},
        labels={"background": 0, **{name: v + 1 for v, name in enumerate(labels)}}, file_ending=".nii.gz",
        num_cases=num_cases, natural_image_2d=False, cases=cases, channels=[intensity], label_stats=label_stats,
    )
