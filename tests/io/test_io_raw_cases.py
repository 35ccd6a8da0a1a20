"""satnet.io.raw_cases: finding the cases of a raw dataset folder or of a folder to predict."""
from __future__ import annotations

import json
import shutil

import pytest

from satnet.errors import DatasetCheckError, InputError
from satnet.io.dataset import load_dataset_json
from satnet.io.raw_cases import RawCase, find_cases_in_folder, find_training_cases, read_case


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


def test_mhd_files_are_not_offered_as_the_file_ending(tmp_path, dataset_3d):
    # Before, a dataset of .mhd files (each with its .zraw data file) was told to set file_ending to ".mhd", which
    # the check then failed for every data file.
    import SimpleITK as sitk

    root = tmp_path / "mhd"
    shutil.copytree(dataset_3d, root)
    for nifti in (root / "imagesTr").glob("*.nii.gz"):
        sitk.WriteImage(sitk.ReadImage(str(nifti)), str(nifti).replace(".nii.gz", ".mhd"), useCompression=True)
        nifti.unlink()
    with pytest.raises(DatasetCheckError) as info:
        find_training_cases(root, load_dataset_json(root))
    assert "imagesTr: holds no file ending in '.nii.gz' (file_ending in dataset.json) but 3 ending in '.mhd': a .mhd " \
           "header keeps its voxels in a second file: convert the images and labels to .mha" in str(info.value)
    assert "set file_ending to '.mhd'" not in str(info.value)


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
