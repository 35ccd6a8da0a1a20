from __future__ import annotations

import numpy as np
import pytest

from satnet.preprocessing.crop import bounding_box, crop_to_nonzero, nonzero_bbox, nonzero_mask, uncrop


def test_box_covers_voxels_nonzero_in_any_channel():
    data = np.zeros((2, 6, 7, 8), dtype=np.float32)
    data[0, 1:3, 2:4, 3:5] = 5.0
    data[1, 4, 6, 7] = -1.0  # only channel 1 is non-zero here: the box must reach it
    seg = np.arange(6 * 7 * 8).reshape(6, 7, 8)
    cropped, cropped_seg, bbox = crop_to_nonzero(data, seg)
    assert bbox == [[1, 5], [2, 7], [3, 8]]
    assert nonzero_mask(data)[4, 6, 7] and bounding_box(nonzero_mask(data)) == bbox  # the mask, too, reads every channel
    assert cropped.shape == (2, 4, 5, 5)
    np.testing.assert_array_equal(cropped, data[:, 1:5, 2:7, 3:8])
    np.testing.assert_array_equal(cropped_seg, seg[1:5, 2:7, 3:8])
    cropped[...] = 0  # a copy: the input is untouched
    assert data[0, 1, 2, 3] == 5.0


def test_all_zero_image_is_kept_whole():
    data = np.zeros((1, 3, 4, 5), dtype=np.float32)
    cropped, seg, bbox = crop_to_nonzero(data, None)
    assert bbox == [[0, 3], [0, 4], [0, 5]]
    assert cropped.shape == data.shape and seg is None


def test_mask_fills_holes_in_3d_and_in_single_slices():
    shell = np.zeros((1, 5, 5, 5), dtype=np.float32)
    shell[0, 1:4, 1:4, 1:4] = 1.0
    shell[0, 2, 2, 2] = 0.0  # an enclosed zero voxel
    assert nonzero_mask(shell)[2, 2, 2]
    ring = np.zeros((3, 1, 5, 5), dtype=np.float32)  # a one-slice RGB image
    ring[:, 0, 1:4, 1:4] = 1.0
    ring[:, 0, 2, 2] = 0.0
    assert nonzero_mask(ring)[0, 2, 2]
    assert not nonzero_mask(ring)[0, 0, 0]
    for image in (shell, ring):  # filling holes never moves the box
        assert nonzero_bbox(image) == bounding_box(nonzero_mask(image))


def test_bounding_box_of_empty_mask_and_uncrop_round_trip():
    assert bounding_box(np.zeros((2, 3, 4), dtype=bool)) == [[0, 2], [0, 3], [0, 4]]
    rng = np.random.default_rng(0)
    data = np.zeros((2, 9, 8, 7), dtype=np.float32)
    data[:, 2:7, 1:5, 3:6] = rng.normal(size=(2, 5, 4, 3)) + 10
    cropped, _, bbox = crop_to_nonzero(data, None)
    np.testing.assert_array_equal(uncrop(cropped, bbox, data.shape[1:]), data)
    with pytest.raises(ValueError, match="does not fit"):
        uncrop(cropped[:, :-1], bbox, data.shape[1:])
