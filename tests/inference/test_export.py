from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from satnet.errors import ConfigError, InputError
from satnet.inference.export import probabilities_to_segmentation, revert_to_original
from satnet.io.cases import CaseProperties, load_case, save_case
from satnet.io.geometry import ImageGeometry
from satnet.planning.plans import ChannelNormalization
from satnet.preprocessing.case import preprocess_case

MRI = ChannelNormalization(channel="MRI", scheme="zscore", use_nonzero_mask=True)


def ellipsoid(shape, center, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0


def anisotropic_case(spacing):
    """(1, 24, 72, 80) image at `spacing` mm: a body off-centre in a zero margin, two labelled objects.

    Object radii are 13 and 15 mm, i.e. 6.5 and 7.5 voxels at 2 mm: big enough that a 2 mm grid can hold them.
    """
    shape = (24, 72, 80)
    mm = lambda r: [r / s for s in spacing]  # noqa: E731 (radius in mm -> voxels per axis)
    body = ellipsoid(shape, (12, 40, 44), [11, 30, 33])
    label = np.zeros(shape, dtype=np.uint8)
    label[ellipsoid(shape, (12, 36, 34), mm(15.0))] = 1
    label[ellipsoid(shape, (12, 44, 56), mm(13.0)) & (label == 0)] = 2
    rng = np.random.default_rng(0)
    image = np.where(body, rng.normal(100.0, 5.0, shape) + 40.0 * label, 0.0).astype(np.float32)
    label[~body] = 0
    geometry = ImageGeometry(list(shape), list(spacing), [1.0, 2.0, 3.0], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
    return image[None], label, geometry


def one_hot(seg: np.ndarray, num_classes: int) -> np.ndarray:
    """(1, z, y, x) labels -> float32 (K, z, y, x) 'probabilities' of a perfect prediction."""
    return (np.arange(num_classes)[:, None, None, None] == seg).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (a.sum() + b.sum())


@pytest.mark.parametrize("spacing", [(3.0, 1.0, 1.0), (5.0, 0.8, 0.8)])  # (5, .8, .8): separate-z both ways
def test_label_round_trip_through_2mm(spacing, preprocessing_plan):
    image, label, geometry = anisotropic_case(spacing)
    plan = preprocessing_plan([2.0, 2.0, 2.0], [MRI])
    data, seg, props = preprocess_case(image, geometry, label, plan, "c0", [0, 1, 2])
    assert props.crop_bbox != [[0, s] for s in geometry.shape]  # the crop did something to undo
    back = probabilities_to_segmentation(one_hot(seg, 3), props)
    assert back.shape == label.shape and back.dtype == np.uint8
    for k in (1, 2):
        assert dice(back == k, label == k) > 0.95
    probs = revert_to_original(one_hot(seg, 3), props)
    assert probs.shape == (3, *label.shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(probs, axis=0), back)


def test_round_trip_is_exact_without_resampling_and_crop_box_restored(preprocessing_plan):
    image, label, geometry = anisotropic_case((3.0, 1.0, 1.0))
    plan = preprocessing_plan([3.0, 1.0, 1.0], [MRI])
    data, seg, props = preprocess_case(image, geometry, label, plan, "c1", [0, 1, 2])
    np.testing.assert_array_equal(probabilities_to_segmentation(one_hot(seg, 3), props), label)
    everything = np.zeros((3, *data.shape[1:]), dtype=np.float32)
    everything[2] = 1.0  # "class 2 everywhere": must cover exactly the crop box
    back = probabilities_to_segmentation(everything, props)
    inside = np.zeros(label.shape, dtype=bool)
    inside[tuple(slice(a, b) for a, b in props.crop_bbox)] = True
    assert np.all(back[inside] == 2) and np.all(back[~inside] == 0)
    probs = revert_to_original(everything, props)
    assert np.all(probs[0][~inside] == 1.0) and np.all(probs[1:][:, ~inside] == 0.0)


def test_upsampled_round_trip_is_nearly_exact(preprocessing_plan):
    image, label, geometry = anisotropic_case((2.0, 2.0, 2.0))
    plan = preprocessing_plan([1.0, 1.0, 1.0], [MRI])
    data, seg, props = preprocess_case(image, geometry, label, plan, "c2", [0, 1, 2])
    back = probabilities_to_segmentation(one_hot(seg, 3), props)
    for k in (1, 2):
        assert dice(back == k, label == k) > 0.99


def test_2d_natural_image_round_trip(preprocessing_plan):
    yy, xx = np.mgrid[:96, :128]
    disc = ((yy - 40) ** 2 + (xx - 70) ** 2 <= 25**2)[None]  # (1, Y, X)
    rgb = np.stack([np.where(disc, 80.0, 200.0), np.where(disc, 50.0, 160.0), np.where(disc, 40.0, 140.0)])
    geometry = ImageGeometry([1, 96, 128], [999.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], 2)
    norms = [ChannelNormalization(channel=c, scheme="rgb") for c in "RGB"]
    plan = preprocessing_plan([999.0, 1.5, 1.5], norms, spatial_dims=2, num_classes=2)
    data, seg, props = preprocess_case(rgb.astype(np.float32), geometry, disc.astype(np.uint8), plan, "img", [0, 1])
    assert seg.shape == (1, 1, 64, 85)
    back = probabilities_to_segmentation(one_hot(seg, 2), props)
    assert back.shape == (1, 96, 128)
    assert dice(back == 1, disc) > 0.98


def test_probabilities_of_the_wrong_shape_are_refused(preprocessing_plan):
    image, label, geometry = anisotropic_case((3.0, 1.0, 1.0))
    _, seg, props = preprocess_case(image, geometry, label, preprocessing_plan([2.0, 2.0, 2.0], [MRI]), "c3", [0, 1, 2])
    with pytest.raises(InputError, match="c3: probabilities must be"):
        revert_to_original(one_hot(seg, 3)[:, :-1], props)


@pytest.mark.parametrize("raw_target", [(2.0, 2.0, 2.0), (2.0, 2.0, 3.0)])
def test_a_reordered_configuration_exports_exactly_what_the_scans_order_gives(raw_target, preprocessing_plan):
    # thick slices along X (array axis 2): the planner puts X first (plan_axis_order -> [2, 0, 1])
    image, label, geometry = anisotropic_case((3.0, 1.0, 1.0))
    image, label = np.ascontiguousarray(image.transpose(0, 2, 3, 1)), np.ascontiguousarray(label.transpose(1, 2, 0))
    geometry = ImageGeometry(list(label.shape), [1.0, 1.0, 3.0], geometry.origin, geometry.direction)
    as_stored = preprocessing_plan(list(raw_target), [MRI])
    order = [2, 0, 1]
    reordered = dataclasses.replace(as_stored, spacing=[raw_target[a] for a in order], axis_order=order)
    assert reordered.raw_spacing() == list(raw_target)
    data, seg, props = preprocess_case(image, geometry, label, as_stored, "c4", [0, 1, 2])
    data_t, seg_t, props_t = preprocess_case(image, geometry, label, reordered, "c4", [0, 1, 2])
    np.testing.assert_array_equal(data_t, data.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(seg_t, seg.transpose(0, 3, 1, 2))
    assert props_t.axis_order == order and props.axis_order is None
    assert props_t.shape_after_resampling == list(seg_t.shape[1:]) and props_t.spacing_after_resampling == [
        raw_target[a] for a in order]
    assert props_t.crop_bbox == props.crop_bbox and props_t.shape_after_crop == props.shape_after_crop
    for key, points in props_t.class_locations.items():
        assert points and all(seg_t[0][tuple(p)] == int(key) for p in points)
    back = probabilities_to_segmentation(one_hot(seg_t, 3), props_t, 3.0)
    np.testing.assert_array_equal(back, probabilities_to_segmentation(one_hot(seg, 3), props, 3.0))
    assert back.shape == label.shape and dice(back == 1, label == 1) > 0.9
    np.testing.assert_array_equal(revert_to_original(one_hot(seg_t, 3), props_t),
                                  revert_to_original(one_hot(seg, 3), props))


def test_case_properties_keep_their_axis_order_and_refuse_a_bad_one(preprocessing_plan, tmp_path):
    image, label, geometry = anisotropic_case((1.0, 1.0, 1.0))
    plan = dataclasses.replace(preprocessing_plan([2.0, 2.0, 2.0], [MRI]), axis_order=[1, 0, 2])
    data, seg, props = preprocess_case(image, geometry, label, plan, "c5", [0, 1, 2])
    save_case(tmp_path, props, data, seg)
    assert load_case(tmp_path, "c5")[2].axis_order == [1, 0, 2]
    with pytest.raises(ConfigError, match="axis_order must be a permutation"):
        CaseProperties.from_dict({**props.to_dict(), "axis_order": [0, 0, 2]}, "c5.json")
