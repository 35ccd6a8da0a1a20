from __future__ import annotations

import numpy as np
import pytest

from satnet.errors import InputError
from satnet.inference.export import probabilities_to_segmentation, revert_to_original
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
