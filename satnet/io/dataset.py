"""A raw dataset in nnU-Net v2's layout: its dataset.json, and which folders are the dataset's own.

    RAW_DIR/
      dataset.json                              channel_names, labels, numTraining, file_ending
      imagesTr/{case}_{channel:04d}{ending}     one file per channel ("_0000", "_0001", ...)
      labelsTr/{case}{ending}                   one label per training case
      imagesTs/{case}_{channel:04d}{ending}     optional: images to predict

dataset.json is read and validated here (`load_dataset_json`, every problem listed in one
InputError); satnet.io.raw_cases finds the case files in those folders, and satnet.io.checks
reads them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satnet.contracts import read_json
from satnet.errors import InputError, did_you_mean
from satnet.io.cases import MAX_LABEL
from satnet.io.images import DETACHED_ENDINGS, LOSSY_ENDINGS, SUPPORTED_ENDINGS

logger = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
# The folders of the raw layout that hold case files: a work folder among them would mix satnet's outputs
# into the dataset (and the next check would read them as cases).
RAW_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


@dataclass(frozen=True)
class DatasetJson:
    """The parts of an nnU-Net v2 dataset.json that satnet uses.

    - channel_names: "0" -> name, one entry per input channel, in channel order.
    - labels: name -> value, sorted by value; values are 0 (background) .. K, contiguous.
    - num_training: the declared number of training cases (key numTraining).
    - file_ending: the ending of every image and label file, e.g. ".nii.gz" or ".png".
    - name: the dataset's "name" entry, or the folder name when it has none.
    Other keys (description, reference, licence, tensorImageSize, ...) are ignored.
    """

    path: Path
    channel_names: dict[str, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str
    name: str = ""

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Label values including background: the network's output channels."""
        return len(self.labels)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.labels.values()))


def load_dataset_json(raw_dir: str | Path) -> DatasetJson:
    """Read and validate RAW_DIR/dataset.json; every problem found is listed in one InputError."""
    raw_dir = Path(raw_dir)
    path = raw_dir / DATASET_JSON
    data = read_json(path, DATASET_JSON, "write one as described in docs/formats.md (nnU-Net v2's dataset.json)")
    return parse_dataset_json(data, path)


def parse_dataset_json(data: Any, path: str | Path) -> DatasetJson:
    """Validate the parsed contents of dataset.json at `path` (named in every message)."""
    path = Path(path)
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: must hold a JSON object with {', '.join(REQUIRED_KEYS)}, not a {type(data).__name__}"
        )
    errors = _region_errors(data) or _missing_key_errors(data)
    if not errors:
        errors = _channel_errors(data["channel_names"]) + _label_errors(data["labels"]) + _ignore_errors(data)
        if isinstance(data["numTraining"], bool) or not isinstance(data["numTraining"], int) or data["numTraining"] < 0:
            errors.append(f"numTraining must be the number of training cases (an integer), not {data['numTraining']!r}")
        errors += ending_errors(data["file_ending"])
    if errors:
        raise InputError(f"{path} is not a valid nnU-Net v2 dataset.json:\n" + "\n".join(f"  - {e}" for e in errors))
    ignored = sorted(set(data) - set(REQUIRED_KEYS))
    if ignored:
        logger.debug("%s: ignoring keys %s", path, ", ".join(ignored))
    channel_names = {str(i): data["channel_names"][str(i)] for i in range(len(data["channel_names"]))}
    labels = dict(sorted(data["labels"].items(), key=lambda kv: kv[1]))
    name = data["name"] if isinstance(data.get("name"), str) and data["name"] else path.parent.name
    return DatasetJson(path, channel_names, labels, data["numTraining"], data["file_ending"], name)


def _region_errors(data: dict) -> list[str]:
    labels = data.get("labels")
    regions = isinstance(labels, dict) and any(isinstance(v, (list, tuple)) for v in labels.values())
    if regions or "regions_class_order" in data:
        return [
            "it defines region-based labels (a label mapped to a list of values, or regions_class_order); "
            "satnet does not support regions yet: map each label name to one integer value"
        ]
    return []


def _ignore_errors(data: dict) -> list[str]:
    labels = data.get("labels")
    if not isinstance(labels, dict) or "ignore" not in labels:
        return []
    return [
        f'labels has an "ignore" entry ({labels["ignore"]!r}), nnU-Net v2\'s ignore label for voxels left out '
        f"of the loss; satnet does not support it and would train those voxels as a class: relabel them in "
        f'labelsTr (to background or a class) and remove the entry, or rename it if it is a real class'
    ]


def _missing_key_errors(data: dict) -> list[str]:
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if not missing:
        return []
    if "modality" in data and "channel_names" in missing:
        return [
            "it looks like an nnU-Net v1 / Medical Segmentation Decathlon dataset.json ('modality' instead of "
            "'channel_names'); convert the dataset to nnU-Net v2's layout (nnUNetv2_convert_MSD_dataset does it) "
            "or rename 'modality' to 'channel_names', make 'labels' map name -> value and add 'file_ending'"
        ]
    return [f"missing required key {k!r}{did_you_mean(k, data)}" for k in missing]


def _channel_errors(channels: Any) -> list[str]:
    if not isinstance(channels, dict) or not channels:
        return [f'channel_names must map "0", "1", ... to channel names, e.g. {{"0": "CT"}}, not {channels!r}']
    expected = [str(i) for i in range(len(channels))]
    errors = []
    if sorted(channels, key=lambda k: (len(k), k)) != expected:
        errors.append(
            f"channel_names keys must be {', '.join(expected)} (one per channel, from 0), not {', '.join(channels)}"
        )
    bad = [k for k, v in channels.items() if not isinstance(v, str) or not v]
    if bad:
        errors.append(
            f"channel_names values must be non-empty strings (e.g. 'CT', 'T2'); check key(s) {', '.join(bad)}"
        )
    return errors


def _label_errors(labels: Any) -> list[str]:
    if not isinstance(labels, dict) or not labels:
        return [f'labels must map label names to integer values, e.g. {{"background": 0, "tumor": 1}}, not {labels!r}']
    if all(isinstance(k, str) and k.isdigit() for k in labels) and all(isinstance(v, str) for v in labels.values()):
        return [
            'labels maps values to names (nnU-Net v1 order, e.g. {"0": "background"}); nnU-Net v2 maps names to '
            'values: write {"background": 0, ...}'
        ]
    bad = [k for k, v in labels.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        return [f"labels values must be integers; {', '.join(f'{k!r}: {labels[k]!r}' for k in bad)} are not"]
    values = sorted(labels.values())
    errors = []
    if 0 not in values:
        errors.append('labels must include the background as value 0, e.g. "background": 0')
    if values != list(range(len(values))):
        errors.append(
            f"labels values must be unique and contiguous from 0 (0, 1, ..., {len(values) - 1}), not "
            f"{', '.join(map(str, values))}: renumber the labels in dataset.json and in the label files"
        )
    if len(values) < 2:
        errors.append("labels needs the background and at least one foreground label")
    if values[-1] > MAX_LABEL:
        errors.append(f"labels goes up to value {values[-1]}, but satnet stores label maps as int8, which holds "
                      f"values up to {MAX_LABEL} ({MAX_LABEL + 1} labels with the background): merge labels, or train "
                      f"separate models on subsets of them")
    return errors


# The fix for a JPEG dataset, also offered when the files are found to be JPEG (satnet.io.raw_cases).
TO_PNG = 'convert the images and labels to .png (lossless) and set file_ending to ".png"'
# The fix for a .mhd dataset, likewise.
TO_MHA = 'convert the images and labels to .mha (MetaImage in one file) and set file_ending to ".mha"'
# The endings a dataset's files may have.
DATASET_ENDINGS = tuple(e for e in SUPPORTED_ENDINGS if e not in LOSSY_ENDINGS + DETACHED_ENDINGS)


def ending_errors(ending: Any) -> list[str]:
    """What is wrong with a file ending (of dataset.json, or the one a model was trained on); [] when nothing."""
    if not isinstance(ending, str) or not ending.startswith("."):
        return [f'file_ending must be a string starting with ".", e.g. ".nii.gz" or ".png", not {ending!r}']
    if ending.lower() not in SUPPORTED_ENDINGS:
        return [f"file_ending {ending!r} is not supported; satnet reads {', '.join(SUPPORTED_ENDINGS)}"]
    if ending.lower() in LOSSY_ENDINGS:
        return [f"file_ending {ending!r} is JPEG, whose lossy compression cannot hold exact label values (and "
                f"satnet writes its masks in the dataset's format): {TO_PNG}"]
    if ending.lower() in DETACHED_ENDINGS:
        return [f"file_ending {ending!r} is a MetaImage header that keeps its voxels in a second file (.raw / .zraw), "
                f"which imagesTr and labelsTr would hold as a stray file: {TO_MHA}"]
    return []


def raw_dataset_of(folder: str | Path) -> Path | None:
    """The raw dataset `folder` is (the folder holding dataset.json) or is one of the RAW_FOLDERS of, else None."""
    resolved = Path(folder).resolve()
    for candidate in (resolved, resolved.parent) if resolved.name in RAW_FOLDERS else (resolved,):
        if (candidate / DATASET_JSON).is_file():
            return candidate
    return None


def check_work_dir_outside_raw(raw_dir: str | Path, work_dir: str | Path) -> None:
    """Raise InputError when `work_dir` is the raw dataset folder itself, or one of its RAW_FOLDERS or a folder
    inside one: plans, splits and preprocessed cases would be written among the raw files."""
    raw, work = Path(raw_dir).resolve(), Path(work_dir).resolve()
    if work == raw:
        where = "the raw dataset folder itself"
    else:
        inside = [name for name in RAW_FOLDERS if work == raw / name or raw / name in work.parents]
        if not inside:
            return
        where = f"{'' if work == raw / inside[0] else 'inside '}the raw dataset's {inside[0]} folder"
    shown = str(work_dir) if Path(work_dir).is_absolute() else f"{work_dir} ({work})"
    raise InputError(
        f"work folder {shown} (-o) is {where}: satnet would write its plans and preprocessed data among the raw "
        f"files; give -o a folder other than {raw} and outside its {', '.join(RAW_FOLDERS)}, e.g. -o {raw.parent / 'satnet_work' / raw.name}"
    )

