from __future__ import annotations

import warnings

import numpy as np
import pytest

from satnet.planning.plans import ChannelNormalization
from satnet.preprocessing.normalize import normalize


def norm(scheme: str, **kw) -> ChannelNormalization:
    return ChannelNormalization(channel="c", scheme=scheme, **kw)


def test_ct_clips_then_uses_dataset_statistics():
    data = np.array([-2000.0, -100.0, 0.0, 50.0, 3000.0], dtype=np.float32).reshape(1, 1, 1, 5)
    out = normalize(data, [norm("ct", clip_low=-100.0, clip_high=200.0, mean=50.0, std=25.0)])
    np.testing.assert_allclose(out.ravel(), [-6.0, -6.0, -2.0, 0.0, 6.0])
    assert out.dtype == np.float32


def test_zscore_over_whole_case_and_input_untouched():
    rng = np.random.default_rng(1)
    data = rng.normal(300.0, 40.0, size=(1, 4, 5, 6)).astype(np.int16)
    out = normalize(data, [norm("zscore")])
    assert out.dtype == np.float32 and data.dtype == np.int16
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1.0) < 1e-5


@pytest.mark.parametrize("give_mask", [True, False])
def test_zscore_inside_nonzero_mask_zero_outside(give_mask):
    rng = np.random.default_rng(2)
    data = np.zeros((2, 6, 6, 6), dtype=np.float32)
    data[0, 1:5, 1:5, 1:5] = rng.normal(500.0, 50.0, size=(4, 4, 4))
    data[1] = rng.normal(3.0, 2.0, size=(6, 6, 6))
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[1:5, 1:5, 1:5] = True
    norms = [norm("zscore", use_nonzero_mask=True), norm("zscore")]
    out = normalize(data[:1], norms[:1], mask if give_mask else None)
    inside = out[0][mask]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1.0) < 1e-5
    assert np.all(out[0][~mask] == 0.0)
    both = normalize(data, norms, mask)  # channel 1 ignores the mask
    assert abs(both[1].mean()) < 1e-5 and np.count_nonzero(both[1][~mask]) > 0


def test_rgb_and_none():
    data = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3).repeat(2, axis=0)
    out = normalize(data, [norm("rgb"), norm("none")])
    np.testing.assert_allclose(out[0].ravel(), [0.0, 0.2, 1.0])
    np.testing.assert_array_equal(out[1].ravel(), [0.0, 51.0, 255.0])


def test_rescale_maps_each_case_to_0_1_over_the_whole_case():
    data = np.zeros((1, 2, 3, 4), dtype=np.int16)
    data[0, 1] = np.arange(12).reshape(3, 4) * 10 - 20  # -20 .. 90; the zeros count too (nnU-Net's rescale_to_0_1)
    out = normalize(data, [norm("rescale")])
    np.testing.assert_allclose(out[0, 1], (data[0, 1] + 20) / 110.0, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0], 20 / 110.0, rtol=1e-6)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0, abs=1e-6) and out.dtype == np.float32


@pytest.mark.parametrize("value", [0.0, 7.0, 1000.1])
def test_constant_image_becomes_zero_without_warnings(value):
    data = np.full((1, 3, 4, 5), value, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = normalize(data, [norm("zscore")])
        masked = normalize(data, [norm("zscore", use_nonzero_mask=True)])  # all-zero: empty mask
        rescaled = normalize(data, [norm("rescale")])  # no range
    assert np.all(whole == 0.0) and np.all(masked == 0.0) and np.all(rescaled == 0.0)


def test_rounding_noise_is_not_inflated_to_unit_variance():
    data = np.full((1, 3, 4, 5), 1000.0, dtype=np.float32)
    data[0, 0, 0, 0] = np.nextafter(np.float32(1000.0), np.float32(2000.0))  # one float32 step up
    assert np.all(normalize(data, [norm("zscore")]) == 0.0)


def test_channel_count_must_match():
    with pytest.raises(ValueError, match="2 normalization entries"):
        normalize(np.zeros((1, 2, 2, 2)), [norm("none"), norm("none")])
