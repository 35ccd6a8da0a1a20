"""satnet.io.dataset: dataset.json validation (finding the cases: test_io_raw_cases.py)."""
from __future__ import annotations

import pytest

from satnet.errors import InputError, MissingFileError
from satnet.io.dataset import load_dataset_json, parse_dataset_json

VALID = {
    "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 3, "file_ending": ".nii.gz"
}


def parse(**changes):
    data = {**VALID, **changes}
    return parse_dataset_json({k: v for k, v in data.items() if v is not None}, "raw/dataset.json")


def test_load_synthetic_dataset_json(dataset_3d):
    ds = load_dataset_json(dataset_3d)
    assert ds.channel_names == {"0": "MRI"} and ds.num_channels == 1
    assert ds.labels == {"background": 0, "object1": 1, "object2": 2} and ds.label_values == (0, 1, 2)
    assert ds.num_classes == 3 and ds.num_training == 3 and ds.file_ending == ".nii.gz"
    assert ds.name == dataset_3d.name and ds.path == dataset_3d / "dataset.json"


def test_extra_keys_of_real_datasets_are_ignored():
    extras = {"name": "Liver", "description": "d", "reference": "r", "licence": "CC", "release": "1.0",
              "tensorImageSize": "3D", "overwrite_image_reader_writer": "SimpleITKIO", "dataset_name": "x"}
    ds = parse_dataset_json({**VALID, **extras}, "raw/dataset.json")
    assert ds.name == "Liver" and ds.num_channels == 1


def test_labels_and_channels_are_ordered_by_value():
    ds = parse(labels={"b": 2, "background": 0, "a": 1}, channel_names={"1": "T2", "0": "T1"})
    assert list(ds.labels) == ["background", "a", "b"] and list(ds.channel_names.values()) == ["T1", "T2"]


def test_missing_and_unparsable_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"dataset.json not found: .*dataset.json; write one"):
        load_dataset_json(tmp_path)
    (tmp_path / "dataset.json").write_text("{\"labels\": ")
    with pytest.raises(InputError, match=r"dataset.json .* is not valid JSON"):
        load_dataset_json(tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"channel_names": None, "channel_name": {"0": "CT"}}, r"missing required key 'channel_names' \(did you mean \"channel_name\"\?\)"),
        ({"numTraining": "3"}, r"numTraining must be the number of training cases \(an integer\), not '3'"),
        ({"numTraining": True}, r"numTraining must be"),
        ({"file_ending": "nii.gz"}, r'file_ending must be a string starting with "."'),
        ({"file_ending": ".dcm"}, r"file_ending '.dcm' is not supported; satnet reads .nii.gz"),
        ({"file_ending": ".jpg"}, r"file_ending '.jpg' is JPEG, whose lossy compression cannot hold exact label "
                                  r"values .*: convert the images and labels to .png \(lossless\) and set file_ending"),
        ({"file_ending": ".JPEG"}, r"file_ending '.JPEG' is JPEG, whose lossy"),
        # Before, a .mhd dataset failed the check with every .zraw data file reported as a stray file.
        ({"file_ending": ".mhd"}, r"file_ending '.mhd' is a MetaImage header that keeps its voxels in a second file "
                                  r"\(.raw / .zraw\), .*: convert the images and labels to .mha \(MetaImage in one "
                                  r'file\) and set file_ending to ".mha"'),
        ({"channel_names": {"1": "CT"}}, r"channel_names keys must be 0 \(one per channel, from 0\), not 1"),
        ({"channel_names": {"0": 5}}, r"channel_names values must be non-empty strings"),
        ({"channel_names": []}, r"channel_names must map"),
        ({"labels": {"background": 0, "liver": 2}}, r"labels values must be unique and contiguous from 0 \(0, 1, \.\.\., 1\), not 0, 2"),
        ({"labels": {"liver": 1, "tumor": 2}}, r"labels must include the background as value 0"),
        ({"labels": {"background": 0, "liver": 1, "also_liver": 1}}, r"unique and contiguous"),
        ({"labels": {"background": 0}}, r"at least one foreground label"),
        # Before, 129 labels passed the check and planning, and preprocessing failed once plans.json was written.
        ({"labels": {"background": 0, **{f"l{v}": v for v in range(1, 129)}}},
         r"labels goes up to value 128, but satnet stores label maps as int8, which holds values up to 127 \(128 "
         r"labels with the background\): merge labels, or train separate models on subsets of them"),
        ({"labels": {"background": 0, "liver": "1"}}, r"labels values must be integers; 'liver': '1' are not"),
        ({"labels": {"0": "background", "1": "liver"}}, r"nnU-Net v1 order"),
        ({"labels": {"background": 0, "whole": [1, 2], "core": 2}}, r"region-based labels .* does not support regions yet"),
        ({"regions_class_order": [1, 2]}, r"does not support regions yet"),
        ({"labels": {"background": 0, "object1": 1, "ignore": 2}},
         r'labels has an "ignore" entry \(2\), nnU-Net v2\'s ignore label .*; satnet does not support it .*: relabel '
         r"them in labelsTr \(to background or a class\) and remove the entry"),
        ({"channel_names": None, "modality": {"0": "CT"}}, r"nnU-Net v1 / Medical Segmentation Decathlon"),
    ],
)
def test_invalid_fields_name_the_file_and_the_fix(changes, message):
    with pytest.raises(InputError, match=r"raw/dataset.json is not a valid nnU-Net v2 dataset.json") as info:
        parse(**changes)
    assert info.match(message)


def test_all_field_errors_are_listed_at_once():
    with pytest.raises(InputError) as info:
        parse(numTraining=-1, file_ending=".dcm", labels={"background": 0, "a": 3})
    assert str(info.value).count("\n  - ") == 3


def test_not_an_object():
    with pytest.raises(InputError, match="must hold a JSON object"):
        parse_dataset_json([1, 2], "raw/dataset.json")
