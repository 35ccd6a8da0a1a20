"""satnet.io.dataset: dataset.json validation and case discovery."""
from __future__ import annotations

import json
import shutil

import pytest

from satnet.errors import DatasetCheckError, InputError, MissingFileError
from satnet.io.dataset import (
    RawCase,
    find_cases_in_folder,
    find_training_cases,
    load_dataset_json,
    parse_dataset_json,
    read_case,
)

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
        ({"channel_names": {"1": "CT"}}, r"channel_names keys must be 0 \(one per channel, from 0\), not 1"),
        ({"channel_names": {"0": 5}}, r"channel_names values must be non-empty strings"),
        ({"channel_names": []}, r"channel_names must map"),
        ({"labels": {"background": 0, "liver": 2}}, r"labels values must be unique and contiguous from 0 \(0, 1, \.\.\., 1\), not 0, 2"),
        ({"labels": {"liver": 1, "tumor": 2}}, r"labels must include the background as value 0"),
        ({"labels": {"background": 0, "liver": 1, "also_liver": 1}}, r"unique and contiguous"),
        ({"labels": {"background": 0}}, r"at least one foreground label"),
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


def test_find_training_cases_3d_and_rgb(dataset_3d, dataset_2d):
    cases = find_training_cases(dataset_3d, load_dataset_json(dataset_3d))
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002"]
    assert cases[1].image_files == [dataset_3d / "imagesTr" / "case_001_0000.nii.gz"]
    assert cases[1].label_file == dataset_3d / "labelsTr" / "case_001.nii.gz"
    cases = find_training_cases(dataset_2d, load_dataset_json(dataset_2d))  # 3 channel names, one RGB file each
    assert len(cases) == 4 and all(len(c.image_files) == 1 for c in cases)


def test_channel_files_are_returned_in_channel_order(tmp_path, dataset_3d):
    root = tmp_path / "multi"
    shutil.copytree(dataset_3d, root)
    for case in ("case_000", "case_001", "case_002"):
        shutil.copy(root / "imagesTr" / f"{case}_0000.nii.gz", root / "imagesTr" / f"{case}_0001.nii.gz")
    data = json.loads((root / "dataset.json").read_text())
    data["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(data))
    cases = find_training_cases(root, load_dataset_json(root))
    assert [p.name for p in cases[0].image_files] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
    (root / "imagesTr" / "case_001_0000.nii.gz").unlink()
    with pytest.raises(DatasetCheckError) as info:
        find_training_cases(root, load_dataset_json(root))
    assert info.value.problems == [
        "imagesTr/case_001_0000.nii.gz: is missing: every case needs the channel files _0000 to _0001; add it or "
        "remove case case_001"
    ]


def test_find_cases_in_folder(tmp_path, dataset_3d):
    folder = tmp_path / "imagesTs"
    shutil.copytree(dataset_3d / "imagesTr", folder)
    cases = find_cases_in_folder(folder, ".nii.gz", 1)
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002"]
    assert all(c.label_file is None for c in cases)
    shutil.copy(folder / "case_000_0000.nii.gz", folder / "case_000_0001.nii.gz")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DatasetCheckError) as info:
        find_cases_in_folder(folder, ".nii.gz", 1)
    assert [p.split(":")[0] for p in info.value.problems] == ["imagesTs/case_000_0001.nii.gz"]  # notes.txt: ignored
    assert "is channel 1, but the model takes 1 channel(s)" in info.value.problems[0]
    with pytest.raises(InputError, match="not supported"):
        find_cases_in_folder(folder, ".dcm", 1)
    with pytest.raises(DatasetCheckError, match="case_000_0000.nii.gz: is a .nii.gz file, but the model reads .png files"):
        find_cases_in_folder(folder, ".png", 1)
    with pytest.raises(DatasetCheckError, match="folder not found"):
        find_cases_in_folder(tmp_path / "absent", ".png", 1)


def test_jpeg_files_are_not_offered_as_the_file_ending(tmp_path, dataset_2d):
    # Before, a dataset of .jpg files with file_ending ".png" was told to set file_ending to ".jpg".
    from PIL import Image

    root = tmp_path / "jpg"
    shutil.copytree(dataset_2d, root)
    for folder in ("imagesTr", "labelsTr"):
        for png in (root / folder).glob("*.png"):
            Image.open(png).save(png.with_suffix(".jpg"))
            png.unlink()
    with pytest.raises(DatasetCheckError) as info:
        find_training_cases(root, load_dataset_json(root))
    assert "imagesTr: holds no file ending in '.png' (file_ending in dataset.json) but 4 ending in '.jpg': JPEG is " \
           "lossy: convert the images and labels to .png" in str(info.value)
    assert "set file_ending to '.jpg'" not in str(info.value)


def test_an_ending_in_other_letter_case_is_to_be_renamed(tmp_path, dataset_3d):
    # Before: "does not end in '.nii.gz' ...: convert it", plus "has no image files" for its label; and to
    # predict, "is a .nii.gz file, but the model reads .nii.gz files ...: convert it to .nii.gz".
    root = tmp_path / "upper"
    shutil.copytree(dataset_3d, root)
    upper = root / "imagesTr" / "case_001_0000.NII.GZ"
    (root / "imagesTr" / "case_001_0000.nii.gz").rename(upper)
    with pytest.raises(DatasetCheckError) as info:
        find_training_cases(root, load_dataset_json(root))
    assert info.value.problems == [
        "imagesTr/case_001_0000.NII.GZ: ends in '.NII.GZ', not '.nii.gz': the letter case of the ending counts; "
        "rename it to case_001_0000.nii.gz"
    ]
    with pytest.raises(DatasetCheckError) as info:
        find_cases_in_folder(root / "imagesTr", ".nii.gz", 1)
    assert info.value.problems == [
        "imagesTr/case_001_0000.NII.GZ: ends in '.NII.GZ', not '.nii.gz': the letter case of the ending counts; "
        "rename it to case_001_0000.nii.gz"
    ]
    for path in (root / "labelsTr").iterdir():
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    with pytest.raises(DatasetCheckError) as info:
        find_training_cases(root, load_dataset_json(root))
    assert "labelsTr: holds no file ending in '.nii.gz' (file_ending in dataset.json) but 3 ending in '.NII.GZ': " \
           "the letter case counts: rename the files to end in '.nii.gz', or set file_ending to '.NII.GZ' in " \
           "dataset.json" in info.value.problems


def test_read_case_checks_the_channel_count(dataset_2d):
    case = find_training_cases(dataset_2d, load_dataset_json(dataset_2d))[0]
    image, label, geometry = read_case(case, 3)
    assert image.shape == (3, 1, 32, 40) and label.shape == (1, 32, 40) and geometry.shape == [1, 32, 40]
    assert read_case(RawCase(case.case_id, case.image_files), 3)[1] is None
    with pytest.raises(InputError, match=r"case img_000: its image files \(img_000_0000.png\) hold 3 channel\(s\), but "
                                         r"the dataset has 1"):
        read_case(case, 1)
