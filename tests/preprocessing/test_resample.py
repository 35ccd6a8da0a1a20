from __future__ import annotations

import numpy as np
import pytest

from satnet.preprocessing.resample import (
    compute_new_shape,
    nearest_indices,
    resample_image,
    resample_label,
    resample_probabilities,
    separate_z_axis,
)


def ball(shape, center, radius) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, center)) <= radius**2


def test_compute_new_shape():
    assert compute_new_shape([16, 20, 24], [3.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == [24, 10, 12]
    assert compute_new_shape([1, 256, 256], [999.0, 1.0, 1.0], [999.0, 0.5, 3.0]) == [1, 512, 85]
    assert compute_new_shape([2, 2, 2], [1.0, 1.0, 1.0], [10.0, 10.0, 10.0]) == [1, 1, 1]


def test_separate_z_rule():
    assert separate_z_axis([5.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == 0
    assert separate_z_axis([1.0, 1.0, 5.0], [1.0, 1.0, 1.0]) == 2
    assert separate_z_axis([3.0, 1.0, 1.0], [2.0, 2.0, 2.0]) is None  # max/min must exceed 3
    assert separate_z_axis([1.0, 5.0, 5.0], [1.0, 1.0, 1.0]) is None  # two coarse axes
    assert separate_z_axis([1.0, 1.0, 1.0], [4.0, 1.0, 1.0]) == 0  # the target decides when the image is isotropic
    assert separate_z_axis([999.0, 1.0, 1.0], [999.0, 2.0, 2.0]) == 0  # a 2D natural image


def test_nearest_indices_are_centre_aligned():
    np.testing.assert_array_equal(nearest_indices(4, 8), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(nearest_indices(6, 3), [1, 3, 5])
    np.testing.assert_array_equal(nearest_indices(5, 5), np.arange(5))


def test_linear_ramp_is_reproduced_on_aligned_centres():
    z = np.arange(6, dtype=np.float32)
    data = np.broadcast_to(z[:, None, None], (6, 4, 4))[None]  # (1, Z, Y, X), value = z index
    out = resample_image(data, [1.0, 1.0, 1.0], new_shape=[9, 4, 4], order=1)
    centres = np.clip((np.arange(9) + 0.5) * 6 / 9 - 0.5, 0, 5)  # old-grid coordinate of each new voxel
    np.testing.assert_allclose(out[0, :, 2, 2], centres, atol=1e-6)


def test_unchanged_shape_returns_equal_float32_copy():
    data = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    out = resample_image(data, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert out.dtype == np.float32 and out.shape == data.shape
    np.testing.assert_array_equal(out, data.astype(np.float32))


@pytest.mark.parametrize("axis", [0, 2])
def test_anisotropic_axis_is_resampled_by_nearest_neighbour(axis):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1, 6, 6, 6)).astype(np.float32)
    spacing, new_shape = [1.0, 1.0, 1.0], [6, 6, 6]
    spacing[axis], new_shape[axis] = 5.0, 12  # coarse axis upsampled x2: each slice appears twice
    out = resample_image(data, spacing, new_shape=new_shape, order=3)
    even = np.take(out, np.arange(0, 12, 2), axis=axis + 1)
    odd = np.take(out, np.arange(1, 12, 2), axis=axis + 1)
    np.testing.assert_array_equal(even, odd)
    np.testing.assert_allclose(even, data, atol=1e-5)  # in-plane shape unchanged: slices kept as they were
    isotropic = resample_image(data, [1.0, 1.0, 1.0], new_shape=new_shape, order=3)
    assert not np.allclose(np.take(isotropic, [4], axis=axis + 1), np.take(isotropic, [5], axis=axis + 1))


def test_separate_z_interpolates_in_plane_and_drops_slices():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(2, 8, 10, 12)).astype(np.float32)
    out = resample_image(data, [6.0, 1.0, 1.0], new_shape=[4, 15, 9], order=1)
    assert out.shape == (2, 4, 15, 9) and out.dtype == np.float32
    inplane = resample_image(data[:, [1, 3, 5, 7]], [1.0, 1.0, 1.0], new_shape=[4, 15, 9], order=1)
    np.testing.assert_allclose(out, inplane, atol=1e-6)


def test_label_nearest_picks_source_voxels():
    seg = np.random.default_rng(3).integers(0, 3, size=(4, 6, 5)).astype(np.int8)
    out = resample_label(seg, [8, 3, 5], [1.0, 1.0, 1.0], mode="nearest")
    np.testing.assert_array_equal(out, seg[np.ix_([0, 0, 1, 1, 2, 2, 3, 3], [1, 3, 5], range(5))])
    assert out.dtype == np.int8


@pytest.mark.parametrize("mode", ["onehot_linear", "nearest"])
def test_label_down_and_up_keeps_large_objects(mode):
    seg = np.zeros((24, 24, 24), dtype=np.uint8)
    seg[ball(seg.shape, (12, 12, 9), 7)] = 1
    seg[ball(seg.shape, (12, 12, 17), 5) & (seg == 0)] = 2
    small = resample_label(seg, [12, 12, 12], [1.0, 1.0, 1.0], mode=mode)
    back = resample_label(small, [24, 24, 24], [2.0, 2.0, 2.0], mode=mode)
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 1, 2}
    for label in (1, 2):
        a, b = seg == label, back == label
        assert 2 * np.sum(a & b) / (a.sum() + b.sum()) > 0.75


def test_label_onehot_ties_go_to_background():
    seg = np.zeros((1, 1, 2), dtype=np.uint8)
    seg[0, 0, 1] = 1
    out = resample_label(seg, [1, 1, 1], [1.0, 1.0, 1.0])  # one voxel, half background, half label 1
    assert out[0, 0, 0] == 0


def test_label_onehot_separate_z_is_nearest_along_z():
    seg = np.zeros((4, 8, 8), dtype=np.uint8)
    seg[1, 2:6, 2:6] = 1
    out = resample_label(seg, [8, 8, 8], [5.0, 1.0, 1.0])
    np.testing.assert_array_equal(out, seg[[0, 0, 1, 1, 2, 2, 3, 3]])


def test_probabilities_stay_a_distribution():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 5, 6, 7))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    out = resample_probabilities(probs, [9, 11, 4], [1.0, 1.0, 1.0])
    assert out.shape == (3, 9, 11, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        resample_image(np.zeros((1, 2, 2, 2)), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="label mode"):
        resample_label(np.zeros((2, 2, 2), dtype=np.uint8), [3, 3, 3], [1.0, 1.0, 1.0], mode="cubic")
