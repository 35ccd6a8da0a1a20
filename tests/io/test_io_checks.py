"""satnet.io.checks.check_dataset: one tiny broken dataset per problem, and all problems at once."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from satnet.errors import DatasetCheckError
from satnet.io.checks import RawDataset, _CaseTask, check_case, check_dataset
from satnet.io.dataset import load_dataset_json
from satnet.io.pool import map_cases

from satnet_testing import shared_dataset


def copy_of(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def edit_json(root: Path, **changes) -> None:
    data = json.loads((root / "dataset.json").read_text())
    data.update(changes)
    (root / "dataset.json").write_text(json.dumps(data))


def problems_of(root: Path, workers: int = 1) -> list[str]:
    with pytest.raises(DatasetCheckError) as info:
        check_dataset(root, workers=workers)
    assert str(root) in str(info.value) and "nothing was written" in str(info.value)
    return info.value.problems


def rewrite(path: Path, array: np.ndarray, like: Path, **overrides) -> None:
    """Write `array` (Z, Y, X) to `path` with the geometry of `like`, then overrides such as spacing=(x, y, z)."""
    image = sitk.GetImageFromArray(array)
    reference = sitk.ReadImage(str(like))
    image.SetSpacing(reference.GetSpacing())
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    for key, value in overrides.items():
        getattr(image, f"Set{key.capitalize()}")(value)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def ds3(dataset_3d, tmp_path) -> Path:
    return copy_of(dataset_3d, tmp_path)


@pytest.fixture
def ds2(dataset_2d, tmp_path) -> Path:
    return copy_of(dataset_2d, tmp_path)


def test_valid_datasets_pass(dataset_3d, dataset_2d):
    raw = check_dataset(dataset_3d)
    assert isinstance(raw, RawDataset) and raw.raw_dir == dataset_3d and raw.num_channels == 1
    assert [c.case_id for c in raw.cases] == ["case_000", "case_001", "case_002"]
    assert raw.geometries["case_001"].spacing == [3.0, 1.0, 1.0]
    raw = check_dataset(dataset_2d)
    assert raw.num_channels == 3 and raw.geometries["img_000"].shape == [1, 32, 40]


def test_missing_label_and_stray_files(ds3):
    (ds3 / "labelsTr" / "case_001.nii.gz").unlink()
    shutil.copy(ds3 / "labelsTr" / "case_002.nii.gz", ds3 / "labelsTr" / "case_009.nii.gz")
    shutil.copy(ds3 / "imagesTr" / "case_000_0000.nii.gz", ds3 / "imagesTr" / "case_000.nii.gz")
    (ds3 / "imagesTr" / "sub").mkdir()
    (ds3 / "imagesTr" / ".DS_Store").write_text("hidden files are ignored")
    assert problems_of(ds3) == [
        "imagesTr/case_000.nii.gz: name does not follow {case}_{channel:04d}.nii.gz (e.g. case_000_0000.nii.gz): "
        "rename it or move it out",
        "imagesTr/sub: is a folder; only image files belong here: move it out",
        "labelsTr/case_001.nii.gz: is missing: add the label of case case_001, or move its images to imagesTs if it "
        "has none",
        "labelsTr/case_009.nii.gz: has no image files (no imagesTr/case_009_0000.nii.gz): add the case's images or "
        "remove the label",
    ]


def test_wrong_file_ending_suggests_the_one_present(ds3):
    edit_json(ds3, file_ending=".nii")
    assert problems_of(ds3) == [
        "imagesTr: holds no file ending in '.nii' (file_ending in dataset.json) but 3 ending in '.nii.gz': set "
        "file_ending to '.nii.gz' in dataset.json",
        "labelsTr: holds no file ending in '.nii' (file_ending in dataset.json) but 3 ending in '.nii.gz': set "
        "file_ending to '.nii.gz' in dataset.json",
    ]


def test_empty_images_and_num_training(ds3, tmp_path):
    edit_json(ds3, numTraining=4)
    assert problems_of(ds3) == ["dataset.json: numTraining is 4 but imagesTr holds 3 cases: set numTraining to 3"]
    for p in (ds3 / "imagesTr").iterdir():
        p.unlink()
    problems = problems_of(ds3)
    assert problems[0] == "imagesTr: is empty: put the files there named {case}_0000.nii.gz"
    assert len(problems) == 4  # and the three labels without images


def test_unsafe_case_name(ds3):
    (ds3 / "imagesTr" / "case_000_0000.nii.gz").rename(ds3 / "imagesTr" / "case 000_0000.nii.gz")
    (ds3 / "labelsTr" / "case_000.nii.gz").rename(ds3 / "labelsTr" / "case 000.nii.gz")
    problems = problems_of(ds3)  # numTraining 3 stays right: the misnamed case still counts
    assert [p.split(": case id")[0] for p in problems] == ["imagesTr/case 000_0000.nii.gz", "labelsTr/case 000.nii.gz"]
    assert "is not allowed: use letters, digits" in problems[0]


def test_shape_and_geometry_mismatch_between_label_and_image(ds3):
    image = ds3 / "imagesTr" / "case_000_0000.nii.gz"
    rewrite(ds3 / "labelsTr" / "case_000.nii.gz", np.zeros((16, 20, 23), np.uint8), like=image)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(ds3 / "labelsTr" / "case_001.nii.gz")))
    rewrite(ds3 / "labelsTr" / "case_001.nii.gz", label, like=image, origin=(0.0, 0.0, 0.0))
    problems = problems_of(ds3)
    assert problems[0].startswith("labelsTr/case_000.nii.gz: does not line up with imagesTr/case_000_0000.nii.gz "
                                  "(shape (Z, Y, X) (16, 20, 24) vs (16, 20, 23)): it must be on the same voxel grid")
    assert problems[1].startswith("labelsTr/case_001.nii.gz: does not line up with imagesTr/case_001_0000.nii.gz "
                                  "(origin (7, 30.25, -12.5) vs (0, 0, 0)): if it was made on that image, copy")
    assert len(problems) == 2


def test_channel_files_on_different_grids(ds3):
    edit_json(ds3, channel_names={"0": "T1", "1": "T2"})
    for i in range(3):
        src = ds3 / "imagesTr" / f"case_00{i}_0000.nii.gz"
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(src)))
        rewrite(ds3 / "imagesTr" / f"case_00{i}_0001.nii.gz", array, like=src, spacing=(1.0, 1.0, 3.0 if i else 3.5))
    assert problems_of(ds3) == [
        "imagesTr/case_000_0001.nii.gz: does not line up with imagesTr/case_000_0000.nii.gz (spacing (3, 1, 1) vs "
        "(3.5, 1, 1)): if it was made on that image, copy the image's geometry onto it (SimpleITK: "
        "label.CopyInformation(image)); otherwise resample it onto that image's grid"
    ]


def test_label_values_and_float_labels(ds3, ds2):
    like = ds3 / "imagesTr" / "case_000_0000.nii.gz"
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(ds3 / "labelsTr" / "case_000.nii.gz")))
    label[0, 0, :2] = [3, 7]
    rewrite(ds3 / "labelsTr" / "case_000.nii.gz", label, like=like)
    rewrite(ds3 / "labelsTr" / "case_001.nii.gz", np.full((16, 20, 24), 0.5, np.float32), like=like)
    rewrite(ds3 / "labelsTr" / "case_002.nii.gz", np.full((16, 20, 24), 2.0, np.float32), like=like)  # accepted
    problems = problems_of(ds3)
    assert problems == [
        "labelsTr/case_000.nii.gz: holds value(s) 3, 7 that labels in dataset.json does not declare (declared: 0, 1, "
        "2): fix the label file (label values are 0..K-1 without gaps, so 7 cannot be declared; e.g. set those "
        "voxels to 0, background)",
        "labelsTr/case_001.nii.gz: has 7680 non-integer label values (e.g. 0.5); a label holds integer class values: if "
        "it was resampled, redo it with nearest-neighbour interpolation; if it is a probability map, threshold it",
    ]
    mask = np.asarray(Image.open(ds2 / "labelsTr" / "img_000.png")) * 255
    Image.fromarray(mask).save(ds2 / "labelsTr" / "img_000.png")
    assert problems_of(ds2) == [
        "labelsTr/img_000.png: holds value(s) 255 that labels in dataset.json does not declare (declared: 0, 1) (a "
        "0/255 mask: divide it by 255): fix the label"
    ]


def test_nan_zero_4d_and_truncated_images(ds3):
    like = ds3 / "imagesTr" / "case_000_0000.nii.gz"
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(like)))
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    rewrite(ds3 / "imagesTr" / "case_000_0000.nii.gz", image, like=like)  # ITK reads these as 0
    rewrite(ds3 / "imagesTr" / "case_001_0000.nii.gz", np.zeros((16, 20, 24), np.float32), like=like)
    data = (ds3 / "imagesTr" / "case_002_0000.nii.gz").read_bytes()
    (ds3 / "imagesTr" / "case_002_0000.nii.gz").write_bytes(data[: len(data) // 2])
    nib.save(nib.Nifti1Image(np.ones((24, 20, 16, 2), np.float32), np.eye(4)), ds3 / "labelsTr" / "case_000.nii.gz")
    problems = problems_of(ds3)
    assert [p.split(": ")[0] for p in problems] == [
        "imagesTr/case_000_0000.nii.gz", "imagesTr/case_001_0000.nii.gz", "imagesTr/case_002_0000.nii.gz",
        "labelsTr/case_000.nii.gz",
    ]
    assert "has 3 NaN or infinite voxel(s)" in problems[0]
    assert "is all zero (an empty image)" in problems[1]
    assert "is truncated: it holds" in problems[2]
    assert "is a 4D image (size 24x20x16x2" in problems[3]


def test_channel_count_must_match_channel_names(ds2):
    edit_json(ds2, channel_names={"0": "gray"})
    problems = problems_of(ds2)
    assert len(problems) == 4
    assert problems[0] == (
        "imagesTr/img_000_0000.png: case img_000: its image file(s) hold 3 channel(s) but channel_names in "
        "dataset.json lists 1 (gray): list one name per channel the files hold (an RGB file holds 3)"
    )


def test_symbolic_link_to_nothing_is_listed_with_the_other_problems(ds3):
    # Before, it stopped the check with "image file not found", hiding every other problem.
    image = ds3 / "imagesTr" / "case_001_0000.nii.gz"
    image.unlink()
    image.symlink_to(ds3 / "elsewhere" / "case_001_0000.nii.gz")
    (ds3 / "labelsTr" / "case_002.nii.gz").unlink()
    problems = problems_of(ds3)
    assert len(problems) == 2
    assert problems[0].startswith("imagesTr/case_001_0000.nii.gz: is a symbolic link to ") and \
        problems[0].endswith("elsewhere/case_001_0000.nii.gz, which does not exist: point the link at the file or "
                             "put the file in its place")
    assert problems[1].startswith("labelsTr/case_002.nii.gz: is missing")


def test_natural_images_of_very_different_sizes_pass(ds2):
    # Before: "imagesTr/img_000_0000.png: physical size 999x384x480 mm (Z x Y x X) is more than 10x away from the
    # dataset's median ...: if the header is wrong (metres instead of millimetres, ...), fix the spacing in the image
    # and label files", for a PNG, which has no spacing to fix.
    for path in (ds2 / "imagesTr" / "img_000_0000.png", ds2 / "labelsTr" / "img_000.png"):
        image = Image.open(path)
        image.resize((image.width * 12, image.height * 12), Image.NEAREST).save(path)
    dataset = check_dataset(ds2)
    assert dataset.geometries["img_000"].shape == [1, 32 * 12, 40 * 12]


def test_many_problems_at_once_sorted_and_repeatable(ds3):
    (ds3 / "labelsTr" / "case_002.nii.gz").unlink()
    (ds3 / "imagesTr" / "readme.txt").write_text("x")
    data = (ds3 / "imagesTr" / "case_001_0000.nii.gz").read_bytes()
    (ds3 / "imagesTr" / "case_001_0000.nii.gz").write_bytes(data[:500])
    like = ds3 / "imagesTr" / "case_000_0000.nii.gz"
    rewrite(ds3 / "labelsTr" / "case_000.nii.gz", np.full((16, 20, 24), 9, np.uint8), like=like)
    edit_json(ds3, numTraining=5)
    problems = problems_of(ds3, workers=2)
    assert [p.split(": ")[0] for p in problems] == [
        "dataset.json", "imagesTr/case_001_0000.nii.gz", "imagesTr/readme.txt", "labelsTr/case_000.nii.gz",
        "labelsTr/case_002.nii.gz",
    ]
    assert problems == problems_of(ds3, workers=1)


def test_worker_pool_runs_with_spawn(dataset_3d):
    ds = load_dataset_json(dataset_3d)
    raw = check_dataset(dataset_3d)
    tasks = [_CaseTask(c, dataset_3d, ("MRI",), ds.label_values, 1) for c in raw.cases]
    reports = map_cases(check_case, tasks, workers=2, start_method="spawn")
    assert [r.case_id for r in reports] == ["case_000", "case_001", "case_002"]
    assert all(r.problems == [] for r in reports)
    assert reports[2].geometry == raw.geometries["case_002"]


def _subset(source: Path, tmp_path: Path, n: int) -> Path:
    root = tmp_path / source.name
    ds = load_dataset_json(source)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for label in sorted((source / "labelsTr").iterdir())[:n]:
        case = label.name[: -len(ds.file_ending)]
        shutil.copy(label, root / "labelsTr" / label.name)
        shutil.copy(source / "imagesTr" / f"{case}_0000{ds.file_ending}", root / "imagesTr")
    data = json.loads((source / "dataset.json").read_text())
    data["numTraining"] = n
    (root / "dataset.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("name, channels, classes", [("Dataset004_Hippocampus", 1, 3), ("Dataset017_ISIC2017", 3, 2)])
def test_real_datasets(tmp_path, name, channels, classes):
    raw = check_dataset(_subset(shared_dataset(name), tmp_path, 5))
    assert len(raw.cases) == 5 and raw.num_channels == channels and raw.dataset_json.num_classes == classes


def test_one_grayscale_image_among_rgb_ones_is_named_as_the_file_to_fix(ds2):
    gray = ds2 / "imagesTr" / "img_001_0000.png"
    Image.open(gray).convert("L").save(gray)
    problems = problems_of(ds2)
    assert len(problems) == 1
    assert problems[0].startswith("imagesTr/img_001_0000.png: case img_001: its image file(s) hold 1 channel(s), "
                                  "but the other cases' hold 3")
    assert "convert this case to the same kind" in problems[0] and "dataset.json" not in problems[0]


def test_one_nii_among_nii_gz_is_its_own_problem_not_num_training(ds3):
    image = ds3 / "imagesTr" / "case_001_0000.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(image)), str(image.with_name("case_001_0000.nii")))
    image.unlink()
    problems = problems_of(ds3)
    assert any(p.startswith("imagesTr/case_001_0000.nii: does not end in '.nii.gz'") for p in problems)
    assert not any("numTraining" in p for p in problems), problems


def test_2d_label_beside_a_one_slice_3d_image_gets_a_fix_that_works(tmp_path):
    """CopyInformation cannot join a 2D and a 3D image: the fix names JoinSeries, and following it passes."""
    root = tmp_path / "Dataset009_Slices"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        image = sitk.GetImageFromArray(rng.random((1, 8, 8)).astype(np.float32) + 1)
        image.SetSpacing((0.5, 0.5, 3.0))
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.GetImageFromArray(np.eye(8, dtype=np.uint8))
        label.SetSpacing((0.5, 0.5))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{case}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1},
                                                   "numTraining": 2, "file_ending": ".nii.gz"}))
    problems = problems_of(root)
    assert len(problems) == 2 and problems[0] == (
        "labelsTr/a.nii.gz: does not line up with imagesTr/a_0000.nii.gz (3D file vs 2D file; spacing (3, 0.5, 0.5) "
        "vs (999, 0.5, 0.5)): save it as a 3D file, as imagesTr/a_0000.nii.gz is (SimpleITK: f = sitk.JoinSeries(f); "
        "f.CopyInformation(reference); sitk.WriteImage(f, path)), or save every file of the dataset in 2D")
    for case in ("a", "b"):
        f = sitk.JoinSeries(sitk.ReadImage(str(root / "labelsTr" / f"{case}.nii.gz")))
        f.CopyInformation(sitk.ReadImage(str(root / "imagesTr" / f"{case}_0000.nii.gz")))
        sitk.WriteImage(f, str(root / "labelsTr" / f"{case}.nii.gz"))
    check_dataset(root, workers=1)
