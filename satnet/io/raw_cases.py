"""The cases of a raw dataset folder: channel files `{case}_{channel:04d}{ending}` paired into cases,
with their labels `{case}{ending}` (the layout is in satnet.io.dataset).

A natural image holds several channels in one file: an RGB `{case}_0000.png` is three
channels, and channel_names then lists three names (as nnU-Net does). So the channel files of
a case are the `_NNNN` files present, and the check that the channels they hold add up to
len(channel_names) happens after reading (`read_case`, satnet.io.checks).

Problems with the folders are collected, not raised one by one: every function here that
finds several raises one DatasetCheckError listing them all, sorted by file.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from satnet.errors import DatasetCheckError, InputError
from satnet.io.cases import check_case_id
from satnet.io.dataset import DATASET_ENDINGS, TO_MHA, TO_PNG, DatasetJson, ending_errors
from satnet.io.geometry import ImageGeometry
from satnet.io.images import DETACHED_ENDINGS, LOSSY_ENDINGS, image_ending, read_image, read_label

logger = logging.getLogger(__name__)

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

Problem = tuple[str, str]  # (file, relative to the dataset folder; what is wrong and the fix)


def format_problems(problems: list[Problem]) -> list[str]:
    """'file: message' lines, sorted by file then message, without repeats."""
    return [f"{where}: {what}" for where, what in sorted(set(problems))]


@dataclass(frozen=True)
class RawCase:
    """One case of a raw dataset: its channel files in channel order and its label (None when unlabelled)."""

    case_id: str
    image_files: list[Path] = field(default_factory=list)
    label_file: Path | None = None


def read_case(case: RawCase, num_channels: int) -> tuple[np.ndarray, np.ndarray | None, ImageGeometry]:
    """Read one case: (image float32 (C, Z, Y, X), label (Z, Y, X) or None, geometry of the image).

    The channels the files hold must add up to `num_channels` (len(channel_names) of the
    dataset the model was planned for), else an InputError names the case and its files.
    The label's grid is not compared here: check_dataset does that for training cases.
    """
    image, geometry = read_image(case.image_files)
    if image.shape[0] != num_channels:
        files = ", ".join(p.name for p in case.image_files)
        raise InputError(
            f"case {case.case_id}: its image files ({files}) hold {image.shape[0]} channel(s), but the dataset has "
            f"{num_channels} (channel_names); give every channel file, {{case}}_0000 onwards (an RGB file holds 3)"
        )
    label = read_label(case.label_file)[0] if case.label_file is not None else None
    return image, label, geometry


def find_training_cases(raw_dir: str | Path, ds: DatasetJson) -> list[RawCase]:
    """The cases of RAW_DIR/imagesTr with their labels in labelsTr, sorted by case id.

    Raises DatasetCheckError listing every layout problem (missing channel or label, a file
    whose name does not parse, a label without images, a wrong file ending, an unsafe name).
    File contents are not read here: satnet.io.checks.check_dataset does that.
    """
    raw_dir = Path(raw_dir)
    cases, problems = scan_cases(raw_dir / "imagesTr", ds.file_ending, ds.num_channels, raw_dir / "labelsTr", raw_dir)
    if problems:
        raise DatasetCheckError(str(raw_dir), format_problems(problems))
    return cases


def find_cases_in_folder(folder: str | Path, file_ending: str, num_channels_expected: int) -> list[RawCase]:
    """The cases in a folder of images to predict (named like imagesTs), sorted by case id.

    `num_channels_expected` is the channel count the model takes; files of channels beyond it
    are reported. Whether the channels read add up to it is checked by `read_case`.
    """
    folder = Path(folder)
    errors = ending_errors(file_ending)
    if errors:
        raise InputError(f"{folder}: {errors[0]}")
    ignored: list[Path] = []
    cases, problems = scan_cases(folder, file_ending, num_channels_expected, None, folder.parent, ignored=ignored)
    if ignored:
        logger.warning("warning: ignoring %d entr%s of %s that %s no scan: %s", len(ignored),
                       "y" if len(ignored) == 1 else "ies", folder, "is" if len(ignored) == 1 else "are",
                       ", ".join(p.name + ("/" if p.is_dir() else "") for p in ignored[:10])
                       + (" ..." if len(ignored) > 10 else ""))
    if problems:
        raise DatasetCheckError(str(folder), format_problems(problems))
    return cases


def count_case_names(images_dir: Path, file_ending: str) -> int:
    """How many case names the `{case}_{channel:04d}{file_ending}` files of `images_dir` carry, whether or not
    the names are safe (what numTraining should say)."""
    if not images_dir.is_dir():
        return 0
    # Any image file counts, whatever its ending: one case exported as .nii among .nii.gz files is still a
    # case (its own problem says to convert it), and numTraining must not be "fixed" to leave it out.
    endings = ((p, file_ending if p.name.endswith(file_ending) else image_ending(p)) for p in images_dir.iterdir()
               if not p.name.startswith("."))  # hidden files are skipped everywhere
    stems = (p.name[: -len(ending)] for p, ending in endings if ending)
    return len({m["case"] for m in map(_CHANNEL_FILE.match, stems) if m is not None})


class _Problems:
    """Collects (file relative to `root`, message) pairs."""

    def __init__(self, root: Path):
        self.root = root
        self.items: list[Problem] = []

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def add(self, path: Path, message: str) -> None:
        self.items.append((self.rel(path), message))

    def unsafe_case_id(self, case: str, path: Path) -> bool:
        try:
            check_case_id(case)
        except InputError as exc:
            self.add(path, str(exc))
            return True
        return False


def scan_cases(
    images_dir: Path, file_ending: str, num_channels: int, labels_dir: Path | None, root: Path,
    ignored: list[Path] | None = None,
) -> tuple[list[RawCase], list[Problem]]:
    """Pair channel files (and labels when `labels_dir` is given) into cases, collecting problems.

    Problem files are named relative to `root`. The cases returned are those with at least
    one channel file and a safe name; they may still have problems of their own.
    ignored: None for a training dataset (every stray entry is a problem, fixed in dataset.json or the
    folder); a list for a folder to predict, which collects the entries that are no image file at all
    (a README.txt, a subfolder) instead, and words the problems for a trained model (it reads the
    file ending and channels it was trained on; dataset.json is not the user's to change).
    """
    problems = _Problems(root)
    if not images_dir.is_dir():
        problems.add(images_dir, f"folder not found: put the images there as {{case}}_0000{file_ending}")
        return [], problems.items
    files = _files_with_ending(images_dir, file_ending, problems, f"{{case}}_0000{file_ending}", ignored)
    channels: dict[str, dict[int, Path]] = {}
    for path in files:
        stem = path.name[: -len(file_ending)]
        match = _CHANNEL_FILE.match(stem)
        if match is None:
            problems.add(path, f"name does not follow {{case}}_{{channel:04d}}{file_ending} (e.g. {stem}_0000"
                               f"{file_ending}): rename it or move it out")
        elif not problems.unsafe_case_id(match["case"], path):
            case, channel = match["case"], int(match["channel"])
            if channel < num_channels:
                channels.setdefault(case, {})[channel] = path
            elif ignored is not None:
                problems.add(path, f"is channel {channel}, but the model takes {num_channels} channel(s) "
                                   f"(_0000 to _{num_channels - 1:04d}), the ones it was trained on: move the file out of "
                                   f"the input folder, or predict with a model trained on {channel + 1} channels")
            else:
                problems.add(path, f"is channel {channel} but channel_names in dataset.json lists {num_channels} "
                                   f"channel(s): remove the file or add the channel to channel_names")
    # Every case must have the channel files 0 .. the highest channel index present.
    last = max((c for chans in channels.values() for c in chans), default=-1)
    for case, chans in channels.items():
        for c in sorted(set(range(last + 1)) - set(chans)):
            problems.add(images_dir / f"{case}_{c:04d}{file_ending}",
                         f"is missing: every case needs the channel files _0000 to _{last:04d}; add it or remove "
                         f"case {case}")
    labels = _find_labels(labels_dir, file_ending, channels, images_dir, problems) if labels_dir else {}
    cases = [
        RawCase(case, [chans[c] for c in sorted(chans)], labels.get(case)) for case, chans in sorted(channels.items())
    ]
    return cases, problems.items


def _files_with_ending(folder: Path, ending: str, problems: _Problems, pattern: str,
                       ignored: list[Path] | None = None) -> list[Path]:
    """The files of `folder` ending in `ending`, adding a problem for each other entry.

    Hidden entries (".DS_Store", satnet's own temporary files) are skipped. When no file has
    the ending, one problem names the ending the files do have, instead of one per file.
    ignored: see scan_cases (a folder to predict: non-image entries go there, not into problems).
    """
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if ignored is not None:
        ignored += [p for p in entries if p.is_dir() or (not p.name.endswith(ending) and image_ending(p) is None)]
        skipped = set(ignored)
        entries = [p for p in entries if p not in skipped]
    files = [p for p in entries if not p.is_dir()]
    for p in entries:
        if p.is_dir():
            problems.add(p, "is a folder; only image files belong here: move it out")
    matching = [p for p in files if p.name.endswith(ending)]
    recased = [p for p in files if _recased_ending(p, ending)]  # ".NII.GZ" for ".nii.gz"
    others = [p for p in files if not p.name.endswith(ending) and not _recased_ending(p, ending)]
    if not files:
        problems.add(folder, f"is empty: put the files there named {pattern}")
    elif not matching and ignored is None:
        counts = Counter(_recased_ending(p, ending) or image_ending(p) or "".join(p.suffixes) or "(no ending)"
                         for p in files)
        found, count = counts.most_common(1)[0]
        fix = (f"the letter case counts: rename the files to end in {ending!r}, or set file_ending to {found!r} in "
               f"dataset.json" if found.lower() == ending.lower()
               else f"JPEG is lossy: {TO_PNG} in dataset.json" if found in LOSSY_ENDINGS
               else f"a .mhd header keeps its voxels in a second file: {TO_MHA} in dataset.json"
               if found in DETACHED_ENDINGS
               else f"set file_ending to {found!r} in dataset.json" if found in DATASET_ENDINGS
               else f"convert them to one of {', '.join(DATASET_ENDINGS)}")
        problems.add(folder, f"holds no file ending in {ending!r} (file_ending in dataset.json) but {count} "
                             f"ending in {found!r}: {fix}")
    else:
        for p in recased:
            problems.add(p, f"ends in {_recased_ending(p, ending)!r}, not {ending!r}: the letter case of the ending "
                            f"counts; rename it to {p.name[: -len(ending)]}{ending}")
        for p in others:
            if ignored is not None:  # scans to predict: the model reads the ending it was trained on
                problems.add(p, f"is a {image_ending(p)} file, but the model reads {ending} files (the format it was "
                                f"trained on): convert it to {ending} (e.g. SimpleITK.WriteImage("
                                f"SimpleITK.ReadImage(src), dst)) and name it {{case}}_0000{ending}")
            else:
                problems.add(p, f"does not end in {ending!r} (file_ending in dataset.json): convert it or move it out")
    return matching + recased  # a renamed ending is the only problem of such a file: its case pairs up as usual


def _recased_ending(path: Path, ending: str) -> str | None:
    """The ending of `path` as written when it differs from `ending` only in letter case, else None."""
    written = path.name[-len(ending):]
    return written if len(path.name) > len(ending) and written != ending and written.lower() == ending.lower() else None


def _find_labels(
    labels_dir: Path, ending: str, channels: dict[str, dict[int, Path]], images_dir: Path, problems: _Problems
) -> dict[str, Path]:
    """Case id -> label file for the cases in `channels`; problems for strays and missing labels."""
    if not labels_dir.is_dir():
        problems.add(labels_dir, f"folder not found: put one label per case there as {{case}}{ending}")
        return {}
    files = _files_with_ending(labels_dir, ending, problems, f"{{case}}{ending}")
    labels: dict[str, Path] = {}
    for path in files:
        case = path.name[: -len(ending)]
        if problems.unsafe_case_id(case, path):
            continue
        if case in channels:
            labels[case] = path
        else:
            problems.add(path, f"has no image files (no {problems.rel(images_dir / f'{case}_0000{ending}')}): add "
                               f"the case's images or remove the label")
    if files:  # with no label file at all, the folder's own problem says so once
        for case in channels:
            if case not in labels:
                problems.add(labels_dir / f"{case}{ending}", f"is missing: add the label of case {case}, or move its "
                                                             f"images to imagesTs if it has none")
    return labels
