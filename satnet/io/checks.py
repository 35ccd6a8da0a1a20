"""check_dataset: read every file of a raw dataset and report every problem at once.

Run before any stage writes anything, so a dataset problem never surfaces hours later in
the middle of preprocessing or training. What is checked, each reported with the file and
the fix:

- dataset.json: present, parsable, required fields of the right types, labels 0..K
  contiguous, no region-based labels (satnet.io.dataset.load_dataset_json; raised alone,
  since nothing else can be checked without it).
- layout: imagesTr present and not empty; every case has all its channel files and a label;
  no stray files (a name that does not parse, a label without images, a folder, another
  file ending; when no file has file_ending, the ending present is suggested); case names
  safe as file names; numTraining equal to the cases in imagesTr (counting those whose names
  are refused, so fixing a name does not change the count).
- contents (every file is read, in `workers` processes): unreadable, corrupt or truncated
  files; 4D volumes; NaN or inf voxels; an all-zero image; float labels with non-integer
  values; label values not declared in dataset.json; the channels read adding up to
  len(channel_names); channel files and label on the same voxel grid (shape exactly;
  spacing, origin and direction within satnet.io.images.GEOMETRY_TOLERANCE); a case whose
  spacing or physical size is more than OUTLIER_FACTOR from the median case's (`geometry_outliers`).

Problems are sorted by file, then message, so two runs report the same list.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satnet.errors import DatasetCheckError, MissingFileError
from satnet.io.dataset import DatasetJson, load_dataset_json
from satnet.io.geometry import ImageGeometry
from satnet.io.image_formats import NATURAL_ENDINGS, NIFTI_ENDINGS, count_nonfinite_nifti
from satnet.io.images import ImageFileError, geometry_mismatch, image_ending, read_image, read_label
from satnet.io.pool import map_cases
from satnet.io.raw_cases import Problem, RawCase, count_case_names, format_problems, scan_cases

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawDataset:
    """A raw dataset that passed check_dataset: what the fingerprint and preprocessing stages read.

    - raw_dir: the dataset folder.
    - dataset_json: its validated dataset.json.
    - cases: every training case, sorted by case id, each with all channel files and a label.
    - geometries: case id -> the geometry of its image (and label), as read.
    """

    raw_dir: Path
    dataset_json: DatasetJson
    cases: list[RawCase]
    geometries: dict[str, ImageGeometry]

    @property
    def name(self) -> str:
        return self.dataset_json.name

    @property
    def num_channels(self) -> int:
        return self.dataset_json.num_channels


def check_dataset(raw_dir: str | Path, workers: int = 1) -> RawDataset:
    """Check a raw dataset completely; raise one DatasetCheckError listing every problem found.

    Every image and label is read, in `workers` processes (1: in this process). Returns the
    RawDataset the next stages use.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise MissingFileError(f"raw dataset folder not found: {raw_dir}; give the folder holding dataset.json")
    ds = load_dataset_json(raw_dir)
    cases, problems = scan_cases(raw_dir / "imagesTr", ds.file_ending, ds.num_channels, raw_dir / "labelsTr", raw_dir)
    found = count_case_names(raw_dir / "imagesTr", ds.file_ending)  # a misnamed case still counts
    if cases and found != ds.num_training:
        problems.append(
            ("dataset.json", f"numTraining is {ds.num_training} but imagesTr holds {found} cases: set numTraining "
                             f"to {found}")
        )
    channel_files = max((len(c.image_files) for c in cases), default=0)
    tasks = [_CaseTask(c, raw_dir, tuple(ds.channel_names.values()), ds.label_values, channel_files) for c in cases]
    start = time.perf_counter()
    reports = map_cases(check_case, tasks, workers, desc=f"checking {raw_dir.name}")
    problems += [p for r in reports for p in r.problems]
    problems += geometry_outliers(reports, ds.file_ending)
    problems += channel_problems(reports, tuple(ds.channel_names.values()))
    if problems:
        raise DatasetCheckError(str(raw_dir), format_problems(problems))
    logger.info("%s: %d cases passed the checks in %.1f s", raw_dir, len(cases), time.perf_counter() - start)
    return RawDataset(raw_dir, ds, cases, {r.case_id: r.geometry for r in reports})


OUTLIER_FACTOR = 10.0  # spacing or physical extent this many times above or below the dataset's median
MIN_CASES_FOR_OUTLIERS = 3


def geometry_outliers(reports: list["CaseReport"], file_ending: str) -> list[Problem]:
    """Cases whose spacing or physical extent (shape x spacing) differs from the median case's by more than
    OUTLIER_FACTOR along some axis: a header in metres instead of millimetres (0.001), a scan of another kind
    (50 mm slices among 1 mm ones). Left in, one such case drives the planner (a batch of 751, a 1x1x1 volume
    of background) and takes minutes to preprocess; so the check names it against the median. Not for natural
    images (PNG, JPEG, TIFF, BMP): their spacing is nominal (999, 1, 1) in every case and their size a pixel count,
    which no header can get wrong (photos of 500 and 6000 pixels are one dataset)."""
    if file_ending.lower() in NATURAL_ENDINGS:
        return []
    geometries = {r.case_id: r.geometry for r in reports if r.geometry is not None}
    if len(geometries) < MIN_CASES_FOR_OUTLIERS:
        return []
    spacing = np.array([g.spacing for g in geometries.values()], dtype=float)  # (N, 3) Z, Y, X
    extent = spacing * np.array([g.shape for g in geometries.values()], dtype=float)
    median_spacing, median_extent = np.median(spacing, axis=0), np.median(extent, axis=0)
    fmt = lambda v: "x".join(f"{x:g}" for x in v)  # noqa: E731
    problems: list[Problem] = []
    for (case_id, geometry), sp, ex in zip(geometries.items(), spacing, extent):
        for what, value, median in (("spacing", sp, median_spacing), ("physical size", ex, median_extent)):
            ratio = value / median
            off = [axis for axis, r in zip("ZYX", ratio) if r > OUTLIER_FACTOR or r < 1 / OUTLIER_FACTOR]
            if off:
                problems.append((f"imagesTr/{case_id}_0000{file_ending}",
                                 f"{what} {fmt(value)} mm (Z x Y x X) is more than {OUTLIER_FACTOR:g}x away from the "
                                 f"dataset's median {fmt(median)} mm along {', '.join(off)}: if the header is wrong "
                                 f"(metres instead of millimetres, a swapped axis), fix the spacing in the image and "
                                 f"label files; if the scan is of another kind, remove case {case_id}"))
                break
    return problems


@dataclass(frozen=True)
class _CaseTask:
    """What a worker needs to check one case (picklable)."""

    case: RawCase
    root: Path
    channel_names: tuple[str, ...]
    label_values: tuple[int, ...]
    channel_files: int  # channel files a complete case has; fewer were already reported missing


@dataclass
class CaseReport:
    case_id: str
    problems: list[Problem]
    geometry: ImageGeometry | None
    channels: int | None = None  # channels its files hold, when every file was read and none is missing
    first_file: str = ""


def check_case(task: _CaseTask) -> CaseReport:
    """Read one case's files and return its problems (module level, so worker processes can run it)."""
    rel = lambda p: p.relative_to(task.root).as_posix()  # noqa: E731
    problems: list[Problem] = []
    reference: tuple[Path, ImageGeometry] | None = None
    channels, all_read = 0, True
    for path in task.case.image_files:
        try:
            image, geometry = read_image([path])  # (C, Z, Y, X)
        except ImageFileError as exc:
            problems.append((rel(path), exc.reason))
            all_read = False
            continue
        channels += image.shape[0]
        problems += [(rel(path), p) for p in _image_value_problems(image, _nonfinite_hidden_by_reader(path))]
        if reference is None:
            reference = (path, geometry)
        else:
            problems += _grid_problems(path, geometry, reference, rel)
    counted = reference is not None and all_read and len(task.case.image_files) == task.channel_files
    if task.case.label_file is not None:
        problems += _label_problems(task.case.label_file, task.label_values, reference, rel)
    return CaseReport(task.case.case_id, problems, reference[1] if reference else None,
                      channels if counted else None, rel(task.case.image_files[0]) if task.case.image_files else "")


def channel_problems(reports: list["CaseReport"], channel_names: tuple[str, ...]) -> list[Problem]:
    """Cases whose files hold another number of channels than channel_names lists. When most cases agree with
    channel_names, the odd ones are the files to fix (one grayscale PNG in an RGB set); otherwise dataset.json is."""
    expected = len(channel_names)
    counted = [r for r in reports if r.channels is not None]
    wrong = [r for r in counted if r.channels != expected]
    problems: list[Problem] = []
    odd_files = len(wrong) < len(counted) / 2
    for r in wrong:
        if odd_files:
            problems.append((r.first_file, (
                f"case {r.case_id}: its image file(s) hold {r.channels} channel(s), but the other cases' hold "
                f"{expected} ({', '.join(channel_names)}): convert this case to the same kind (an RGB file holds 3; "
                f"e.g. PIL: Image.open(f).convert('RGB').save(f)), or remove it")))
        else:
            problems.append((r.first_file, (
                f"case {r.case_id}: its image file(s) hold {r.channels} channel(s) but channel_names in dataset.json "
                f"lists {expected} ({', '.join(channel_names)}): list one name per channel the files hold (an RGB "
                f"file holds 3)")))
    return problems


def _nonfinite_hidden_by_reader(path: Path) -> int:
    """NaN / inf voxels that SimpleITK read as 0 (NIfTI only; see satnet.io.image_formats)."""
    try:
        return count_nonfinite_nifti(path) if image_ending(path) in NIFTI_ENDINGS else 0
    except ImageFileError:
        return 0  # nibabel cannot parse what SimpleITK read; the values SimpleITK gave are checked


def scan_problems(image: np.ndarray, geometry: ImageGeometry, spatial_dims: int, path: Path,
                  training_spacing: list[float] | None = None, training_slices: int | None = None) -> list[str]:
    """What makes a scan to predict unusable for a trained model, worded for `satnet predict` (each entry
    ends with the fix). The dataset check refuses the same in training data: NaN / inf voxels (ten of them
    moved 442 mask voxels across a volume), an all-zero image, a spacing that is not positive and finite or
    more than OUTLIER_FACTOR from the training cases' median spacing; and a single slice for a 3D model that
    was trained on volumes (`training_slices`: the training cases' median slice count; a model trained on
    single-slice cases takes them)."""
    problems = _image_value_problems(image, _nonfinite_hidden_by_reader(path))
    if spatial_dims == 3 and geometry.shape[0] == 1 and (training_slices or 1) > 1:
        problems.append("is a single 2D slice, but the configuration is 3D: predict it with a 2d configuration "
                        "(-c 2d), or give the whole volume")
    spacing = np.asarray(geometry.spacing, dtype=float)
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        problems.append(f"has spacing {list(geometry.spacing)} mm: fix the header (every spacing positive and finite)")
    elif training_spacing is not None and geometry.shape[0] > 1:
        ratio = spacing / np.asarray(training_spacing, dtype=float)
        off = [axis for axis, r in zip("ZYX", ratio) if r > OUTLIER_FACTOR or r < 1 / OUTLIER_FACTOR]
        if off:
            fmt = lambda v: "x".join(f"{x:g}" for x in v)  # noqa: E731
            problems.append(f"has spacing {fmt(spacing)} mm, more than {OUTLIER_FACTOR:g}x from the training cases' "
                            f"median {fmt(training_spacing)} mm along {', '.join(off)}: if the header is wrong "
                            f"(metres instead of millimetres), fix it; a scan of another kind needs another model")
    return [p.replace("fix the file or remove the case", "fix the file") for p in problems]


def _image_value_problems(image: np.ndarray, nonfinite_in_file: int = 0) -> list[str]:
    """Problems with an image's values; `nonfinite_in_file` counts NaN / inf the reader may have zeroed."""
    problems = []
    nonfinite = max(image.size - int(np.count_nonzero(np.isfinite(image))), nonfinite_in_file)
    if nonfinite:
        problems.append(f"has {nonfinite} NaN or infinite voxel(s): replace them in the file (e.g. with the "
                        f"background value)")
    elif not image.any():
        problems.append("is all zero (an empty image): fix the file or remove the case")
    return problems


def _grid_problems(path: Path, geometry: ImageGeometry, reference: tuple[Path, ImageGeometry], rel) -> list[Problem]:
    mismatch = geometry_mismatch(reference[1], geometry)
    if mismatch is None:
        return []
    if list(geometry.shape) != list(reference[1].shape):
        fix = "it must be on the same voxel grid: resample it onto that image (nearest neighbour for a label)"
    elif geometry.spatial_dims_in_file != reference[1].spatial_dims_in_file:  # a 2D file beside a one-slice 3D file
        dims = reference[1].spatial_dims_in_file
        fix = (f"save it as a {dims}D file, as {rel(reference[0])} is (SimpleITK: "
               f"{'f = sitk.JoinSeries(f)' if dims == 3 else 'f = f[:, :, 0]'}; f.CopyInformation(reference); "
               f"sitk.WriteImage(f, path)), or save every file of the dataset in {5 - dims}D")
    else:
        fix = ("if it was made on that image, copy the image's geometry onto it (SimpleITK: "
               "label.CopyInformation(image)); otherwise resample it onto that image's grid")
    return [(rel(path), f"does not line up with {rel(reference[0])} ({mismatch}): {fix}")]


def _label_problems(
    path: Path, declared: tuple[int, ...], reference: tuple[Path, ImageGeometry] | None, rel
) -> list[Problem]:
    try:
        label, geometry = read_label(path)  # (Z, Y, X)
    except ImageFileError as exc:
        return [(rel(path), exc.reason)]
    problems = _grid_problems(path, geometry, reference, rel) if reference else []
    hidden = _nonfinite_hidden_by_reader(path)
    if hidden:
        problems.append((rel(path), f"has {hidden} NaN or infinite value(s): a label holds integer class values"))
    if label.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))  # faster than np.unique
    else:
        values = np.unique(label)
    undeclared = sorted(set(values.tolist()) - set(declared))
    # Declaring a value is a fix only where the labels stay 0..K-1 (contiguous, as nnU-Net requires).
    declarable = [v for v in undeclared if 0 <= v <= len(declared) + len(undeclared) - 1]
    contiguous = sorted(set(declared) | set(declarable)) == list(range(len(declared) + len(declarable)))
    if undeclared:
        hint = ""
        if undeclared == [255] and declared == (0, 1):
            hint = " (a 0/255 mask: divide it by 255)"
        if hint:
            fix = "fix the label"
        elif declarable == undeclared and contiguous:
            fix = "fix the label, or declare the values in dataset.json"
        else:
            fix = (f"fix the label file (label values are 0..K-1 without gaps, so "
                   f"{', '.join(map(str, [v for v in undeclared if v not in declarable] or undeclared))} cannot be "
                   f"declared; e.g. set those voxels to 0, background)")
        problems.append((rel(path), (
            f"holds value(s) {', '.join(map(str, undeclared))} that labels in dataset.json does not declare "
            f"(declared: {', '.join(map(str, declared))}){hint}: {fix}")))
    return problems
