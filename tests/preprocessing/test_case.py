from __future__ import annotations

import numpy as np
import pytest

from satnet.errors import InputError
from satnet.io.cases import CaseProperties, load_case, save_case
from satnet.io.geometry import ImageGeometry
from satnet.planning.plans import ChannelNormalization
from satnet.preprocessing.case import preprocess_case, sample_class_locations
from satnet.synthetic import synthetic_case_3d

MRI = ChannelNormalization(channel="MRI", scheme="zscore", use_nonzero_mask=True)
RGB = [ChannelNormalization(channel=c, scheme="rgb") for c in "RGB"]


def geometry(shape, spacing) -> ImageGeometry:
    return ImageGeometry(list(shape), list(spacing), [0.0, 0.0, 0.0], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])


def padded_case(seed: int = 0, spacing=(3.0, 1.0, 1.0)):
    """A synthetic (1, 20, 28, 30) case whose body sits inside a margin of zeros."""
    image, label = synthetic_case_3d((16, 20, 24), np.random.default_rng(seed), spacing=spacing)
    full_image = np.zeros((1, 20, 28, 30), dtype=np.float32)
    full_label = np.zeros((20, 28, 30), dtype=np.uint8)
    full_image[0, 2:18, 3:23, 4:28] = image
    full_label[2:18, 3:23, 4:28] = label
    return full_image, full_label, geometry(full_label.shape, spacing)


def test_sample_class_locations_counts_and_determinism():
    seg = np.zeros((10, 10, 10), dtype=np.int8)
    seg[:5] = 1  # 500 voxels
    seg[9, 9, 9] = 2
    locs = sample_class_locations(seg, {"background": 0, "a": 1, "b": 2, "c": 3}, num_samples=3, seed=7)
    assert list(locs) == ["1", "2", "3"]
    assert len(locs["1"]) == 5  # 1% of 500 beats num_samples=3
    assert locs["2"] == [[9, 9, 9]] and locs["3"] == []
    assert all(seg[tuple(p)] == 1 for p in locs["1"])
    assert locs == sample_class_locations(seg, [1, 2, 3], num_samples=3, seed=7)
    assert locs != sample_class_locations(seg, [1, 2, 3], num_samples=3, seed=8)
    assert len(sample_class_locations(seg, [1], num_samples=10000)["1"]) == 500


def test_preprocess_3d_case(preprocessing_plan):
    image, label, geo = padded_case()
    plan = preprocessing_plan([2.0, 2.0, 2.0], [MRI])
    data, seg, props = preprocess_case(image, geo, label, plan, "case_000", [0, 1, 2])
    nonzero = np.nonzero(image[0])
    assert props.crop_bbox == [[int(i.min()), int(i.max()) + 1] for i in nonzero]
    box = np.array(props.crop_bbox)
    assert props.shape_after_crop == list(box[:, 1] - box[:, 0])
    expected = np.round(np.array(props.shape_after_crop) * [3.0, 1.0, 1.0] / 2.0).astype(int)
    assert props.shape_after_resampling == list(expected) == list(data.shape[1:])
    assert props.spacing_after_resampling == [2.0, 2.0, 2.0]
    assert data.dtype == np.float32 and data.shape[0] == 1
    assert seg.dtype == np.int8 and seg.shape == (1, *expected)
    assert set(np.unique(seg)) == {0, 1, 2}
    for key, points in props.class_locations.items():
        assert points and all(seg[0][tuple(p)] == int(key) for p in points)


def test_preprocess_is_deterministic_and_saves(preprocessing_plan, tmp_path):
    image, label, geo = padded_case(seed=3)
    plan = preprocessing_plan([2.0, 2.0, 2.0], [MRI])
    first = preprocess_case(image, geo, label, plan, "case_001", [0, 1, 2])
    second = preprocess_case(image.copy(), geo, label.copy(), plan, "case_001", [0, 1, 2])
    assert first[0].tobytes() == second[0].tobytes() and first[1].tobytes() == second[1].tobytes()
    assert first[2].to_dict() == second[2].to_dict()
    save_case(tmp_path, first[2], first[0], first[1])
    data, seg, props = load_case(tmp_path, "case_001")
    assert np.asarray(data).tobytes() == first[0].tobytes() and props == first[2]


def test_preprocess_case_read_from_nifti(dataset_3d, preprocessing_plan):
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(dataset_3d / "imagesTr" / "case_000_0000.nii.gz"))
    label = sitk.ReadImage(str(dataset_3d / "labelsTr" / "case_000.nii.gz"))
    geo = ImageGeometry.from_sitk(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    array = sitk.GetArrayFromImage(image)[None].astype(np.float32)  # (1, Z, Y, X)
    plan = preprocessing_plan([3.0, 1.5, 1.5], [MRI])
    data, seg, props = preprocess_case(array, geo, sitk.GetArrayFromImage(label), plan, "case_000", [0, 1, 2])
    assert props.geometry == geo and geo.spacing == [3.0, 1.0, 1.0]
    assert props.shape_after_resampling[0] == props.shape_after_crop[0]  # 3 mm -> 3 mm: Z untouched
    assert CaseProperties.from_dict(props.to_dict()) == props


def test_2d_natural_image_never_resamples_z(preprocessing_plan):
    rng = np.random.default_rng(5)
    image = rng.integers(1, 256, size=(3, 1, 32, 40)).astype(np.float32)
    label = np.zeros((1, 32, 40), dtype=np.uint8)
    label[0, 8:20, 10:30] = 1
    plan = preprocessing_plan([1.0, 2.0, 2.0], RGB, spatial_dims=2, num_classes=2)  # Z = 1.0 in the plan: ignored
    data, seg, props = preprocess_case(image, geometry((1, 32, 40), (999.0, 1.0, 1.0)), label, plan, "img_000", [0, 1])
    assert data.shape == (3, 1, 16, 20) and seg.shape == (1, 1, 16, 20)
    assert props.spacing_after_resampling == [999.0, 2.0, 2.0]
    np.testing.assert_allclose(data.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)) / 255, atol=0.02)  # rgb / 255


def test_2d_configuration_of_volumes_matches_3d_so_they_can_share_data(preprocessing_plan):
    image, label, geo = padded_case(spacing=(5.0, 1.0, 1.0))
    flat_plan = preprocessing_plan([2.5, 2.0, 2.0], [MRI], spatial_dims=2)
    flat = preprocess_case(image, geo, label, flat_plan, "c", [0, 1, 2])
    full = preprocess_case(image, geo, label, preprocessing_plan([2.5, 2.0, 2.0], [MRI]), "c", [0, 1, 2])
    assert flat[2].spacing_after_resampling == [2.5, 2.0, 2.0]
    assert flat[0].tobytes() == full[0].tobytes() and flat[1].tobytes() == full[1].tobytes()
    assert flat[2] == full[2]


def test_user_errors_name_the_case(preprocessing_plan):
    image, label, geo = padded_case()
    plan = preprocessing_plan([2.0, 2.0, 2.0], [MRI])
    with pytest.raises(InputError, match="case_x: label shape"):
        preprocess_case(image, geo, label[:-1], plan, "case_x", [0, 1, 2])
    with pytest.raises(InputError, match=r"case_x: label values must lie in 0..1"):
        preprocess_case(image, geo, label, plan, "case_x", [0, 1])
    with pytest.raises(InputError, match="case_x: 2 channel"):
        preprocess_case(np.concatenate([image, image]), geo, label, plan, "case_x", [0, 1, 2])
    with pytest.raises(InputError, match="case_x: image must be"):
        preprocess_case(image[:, :-1], geo, None, plan, "case_x", [0, 1, 2])
    with pytest.raises(InputError, match="must hold integers"):
        preprocess_case(image, geo, label.astype(np.float32), plan, "case_x", [0, 1, 2])
