"""Sliding-window prediction against oracles: x + 1 must come back exactly, whatever the tiling."""
from __future__ import annotations

import math

import pytest
import torch

from satnet.errors import ConfigError, InputError
from satnet.inference.gaussian import cached_importance_map, gaussian_importance_map, uniform_importance_map
from satnet.inference.sliding_window import mirror_subsets, sliding_window_predict, tile_grid, tile_starts


def plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def ramp(axis: int):
    """A predictor that is not mirror-equivariant: adds 0, 1, ..., n-1 along one spatial axis of the tile."""

    def predict(x: torch.Tensor) -> torch.Tensor:  # (B, C, *patch)
        n = x.shape[2 + axis]
        shape = [1] * x.ndim
        shape[2 + axis] = n
        return x + torch.arange(n, dtype=x.dtype).reshape(shape)

    return predict


class Recorder:
    """Records the shape of every batch of tiles it is called with."""

    def __init__(self, num_outputs: int):
        self.num_outputs = num_outputs
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return torch.zeros((x.shape[0], self.num_outputs, *x.shape[2:]))


def random_image(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


ORACLE_CASES = [
    # image (C, Z, Y, X), patch, step, gaussian, mirror_axes
    ((2, 13, 17, 19), (8, 8, 8), 0.5, True, None),
    ((1, 5, 21, 9), (8, 16, 16), 1.0, False, None),  # patch larger than the image along Z and X
    ((2, 11, 12, 30), (6, 12, 8), 0.33, True, (0, 1, 2)),
    ((1, 7, 9, 11), (7, 9, 11), 0.5, True, (1,)),  # image exactly one patch
    ((1, 1, 20, 24), (4, 8, 8), 0.5, False, (0, 2)),  # 3D patch over a single slice: Z padded
    ((3, 4, 23, 18), (16, 16), 0.5, True, (0, 1)),  # 2D patch applied slice by slice
    ((3, 1, 30, 25), (32, 16), 0.33, False, (1,)),  # 2D case, Y shorter than the patch
    ((2, 6, 10, 40), (12, 16), 1.0, True, None),
]


@pytest.mark.parametrize("shape, patch, step, gaussian, mirror", ORACLE_CASES)
def test_plus_one_is_reproduced(shape, patch, step, gaussian, mirror):
    image = random_image(shape)
    out = sliding_window_predict(plus_one, image, patch, shape[0], step=step, gaussian=gaussian, mirror_axes=mirror)
    assert out.dtype == torch.float32 and out.shape == image.shape
    torch.testing.assert_close(out, image + 1, rtol=1e-5, atol=1e-5)


def test_numpy_image_and_low_precision_predictor():
    image = random_image((1, 6, 20, 20))
    out = sliding_window_predict(lambda x: (x + 1).to(torch.bfloat16), image.numpy(), (4, 8, 8), 1, tile_batch_size=3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, image + 1, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "patch, axis, mirror", [((6, 8, 10), 2, (2,)), ((6, 8, 10), 0, (0, 1, 2)), ((8, 12), 1, (0, 1))]
)
def test_mirroring_symmetrises_an_asymmetric_predictor(patch, axis, mirror):
    image = random_image((1, 9, 13, 17))
    n = patch[axis]
    out = sliding_window_predict(ramp(axis), image, patch, 1, mirror_axes=mirror)
    # mean of the ramp and its flip: (i + (n - 1 - i)) / 2 = (n - 1) / 2 at every voxel
    torch.testing.assert_close(out, image + (n - 1) / 2, rtol=1e-5, atol=1e-5)
    plain = sliding_window_predict(ramp(axis), image, patch, 1)
    assert (plain - image - (n - 1) / 2).abs().max() > 0.5  # without TTA the ramp shows through


def test_tile_starts_follow_nnunet_rule():
    # ceil((size - patch) / (patch * step)) + 1 steps, evenly spaced, rounded half to even
    assert tile_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]
    assert tile_starts(64, 32, 1.0) == [0, 32]
    assert tile_starts(65, 32, 1.0) == [0, 16, 33]
    assert tile_starts(50, 16, 0.33) == [0, 5, 10, 15, 19, 24, 29, 34]
    assert tile_starts(32, 32, 0.5) == [0]
    assert tile_grid((3, 20, 20), (16, 16), 0.5) == [[0, 1, 2], [0, 4], [0, 4]]


def test_tiles_are_batched_and_counted():
    recorder = Recorder(num_outputs=2)
    sliding_window_predict(recorder, torch.zeros(1, 20, 100, 37), (8, 32, 37), 2, tile_batch_size=5)
    # Z: [0, 4, 8, 12], Y: [0, 14, 27, 41, 54, 68], X: [0]: 24 tiles in batches of 5
    assert [s[0] for s in recorder.shapes] == [5, 5, 5, 5, 4]
    assert all(s[1:] == (1, 8, 32, 37) for s in recorder.shapes)


def test_mirroring_calls_every_subset():
    # one tile: its 8 mirrored copies are stacked into calls of at most tile_batch_size images
    recorder = Recorder(num_outputs=1)
    sliding_window_predict(recorder, torch.zeros(1, 8, 8, 8), (8, 8, 8), 1, mirror_axes=(0, 1, 2))
    assert [s[0] for s in recorder.shapes] == [4, 4]
    recorder = Recorder(num_outputs=1)
    sliding_window_predict(recorder, torch.zeros(1, 8, 8, 8), (8, 8, 8), 1, mirror_axes=(0, 1, 2), tile_batch_size=1)
    assert [s[0] for s in recorder.shapes] == [1] * 8
    recorder = Recorder(num_outputs=1)
    sliding_window_predict(recorder, torch.zeros(1, 1, 8, 8), (8, 8), 1, mirror_axes=(0, 1), tile_batch_size=3)
    assert [s[0] for s in recorder.shapes] == [3, 1]  # 4 subsets of one tile


@pytest.mark.parametrize("mirror_set, subsets", [
    ("all", [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]),
    ("axes", [(), (0,), (1,), (2,)]),
    ("opposite", [(), (0, 1, 2)]),
])
def test_cheaper_mirror_sets_predict_fewer_copies(mirror_set, subsets):
    assert mirror_subsets((0, 1, 2), mirror_set) == subsets
    recorder = Recorder(num_outputs=1)
    sliding_window_predict(recorder, torch.zeros(1, 8, 8, 8), (8, 8, 8), 1, mirror_axes=(0, 1, 2), tile_batch_size=1,
                           mirror_set=mirror_set)
    assert len(recorder.shapes) == len(subsets)
    image = random_image((1, 9, 13, 17))  # every set still undoes its flips: x + 1 comes back
    out = sliding_window_predict(plus_one, image, (6, 8, 10), 1, mirror_axes=(0, 1, 2), mirror_set=mirror_set)
    torch.testing.assert_close(out, image + 1, rtol=1e-5, atol=1e-5)
    # a ramp 0..9 along X is averaged with its flip 9..0 in the share of the subsets that flip X
    flipped = sum(2 in s for s in subsets) / len(subsets)  # all and opposite: 1/2 (fully symmetric), axes: 1/4
    i = torch.arange(10, dtype=torch.float32)
    image = random_image((1, 6, 8, 10))  # one tile, so the ramp is a function of X alone
    expected = image + (1 - flipped) * i + flipped * (9 - i)
    out = sliding_window_predict(ramp(2), image, (6, 8, 10), 1, mirror_axes=(0, 1, 2), mirror_set=mirror_set)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="mirror_set must be one of all, axes, opposite"):
        sliding_window_predict(plus_one, image, (6, 8, 10), 1, mirror_axes=(0, 1, 2), mirror_set="some")


def test_stacked_mirrors_match_one_by_one():
    torch.manual_seed(0)
    image = torch.randn(2, 9, 13, 11)
    weights = torch.randn(3, 2, 1, 1, 1)

    def asymmetric(x):  # depends on position, so each flip gives a different answer
        ramp = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, 1, -1)
        return torch.nn.functional.conv3d(x, weights) * (1 + ramp) + x.sum(1, keepdim=True) ** 2

    one = sliding_window_predict(asymmetric, image, (8, 8, 8), 3, mirror_axes=(0, 1, 2), tile_batch_size=1)
    many = sliding_window_predict(asymmetric, image, (8, 8, 8), 3, mirror_axes=(0, 1, 2), tile_batch_size=16)
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-5)


def test_2d_tiles_of_all_slices_share_batches():
    recorder = Recorder(num_outputs=3)
    sliding_window_predict(recorder, torch.zeros(2, 3, 20, 20), (16, 16), 3, tile_batch_size=5)
    # 3 slices x 2 x 2 positions = 12 tiles of (C, Y, X)
    assert recorder.shapes == [(5, 2, 16, 16), (5, 2, 16, 16), (2, 2, 16, 16)]


def test_gaussian_weights_tile_centres_more_than_borders():
    calls = iter(range(10))

    def constant_per_tile(x):  # first tile predicts 0 everywhere, second tile 1
        return torch.full_like(x, float(next(calls)))

    image = torch.zeros(1, 1, 1, 24)
    out = sliding_window_predict(constant_per_tile, image, (1, 1, 16), 1, tile_batch_size=1)  # tiles at X 0 and 8
    # X = 8 is 0.5 voxel from the first tile's centre (7.5) and 7.5 voxels from the second's (15.5); sigma = 2
    near, far = math.exp(-(0.5**2) / 8), math.exp(-(7.5**2) / 8)
    assert out[0, 0, 0, 8].item() == pytest.approx(far / (near + far), rel=1e-4)
    calls = iter(range(10))
    uniform = sliding_window_predict(constant_per_tile, image, (1, 1, 16), 1, gaussian=False, tile_batch_size=1)
    assert uniform[0, 0, 0, 8].item() == 0.5


def test_importance_maps():
    g = gaussian_importance_map((5, 8, 9))
    assert g.shape == (5, 8, 9) and g.dtype == torch.float32
    assert g.max().item() == pytest.approx(1.0) and g.min().item() > 0
    for dim in range(3):
        torch.testing.assert_close(g, torch.flip(g, [dim]))  # centred: symmetric under every flip
    # corner of a 9-voxel axis is 4 voxels from the centre with sigma 9/8
    assert g[2, 3, 0].item() / g[2, 3, 4].item() == pytest.approx(math.exp(-16 / (2 * (9 / 8) ** 2)), rel=1e-4)
    assert cached_importance_map((5, 8, 9), 1 / 8) is cached_importance_map((5, 8, 9), 1 / 8)
    g.zero_()  # the public function returns a copy: the cache is untouched
    assert cached_importance_map((5, 8, 9), 1 / 8).min().item() > 0
    tiny = gaussian_importance_map((64,), sigma_scale=0.01)  # underflows to 0 far from the centre
    assert tiny.min().item() > 0
    assert uniform_importance_map((2, 3)).eq(1).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"step": 0}, ConfigError, "step must be"),
        ({"step": 1.5}, ConfigError, "step must be"),
        ({"patch_size": (4, 4, 4, 4)}, ConfigError, "patch_size"),
        ({"patch_size": (4, 0, 4)}, ConfigError, "patch_size"),
        ({"patch_size": (8,)}, ConfigError, "2 .* or 3"),
        ({"patch_size": (8, 8), "mirror_axes": (2,)}, ConfigError, "mirror_axes"),
        ({"mirror_axes": (0, 0)}, ConfigError, "mirror_axes"),
        ({"tile_batch_size": 0}, ConfigError, "tile_batch_size"),
        ({"num_outputs": 3}, ConfigError, r"expected \[1, 3, 4, 4, 4\]"),
        ({"image": torch.zeros(4, 4, 4)}, InputError, r"\(C, Z, Y, X\)"),
    ],
)
def test_errors_name_the_problem(kwargs, error, match):
    args = {"predictor": plus_one, "image": torch.zeros(1, 4, 4, 4), "patch_size": (4, 4, 4), "num_outputs": 1}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sliding_window_predict(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predictor_on_gpu_output_on_cpu():
    image = random_image((2, 10, 30, 20))
    out = sliding_window_predict(
        plus_one, image, (8, 16, 16), 2, mirror_axes=(0, 1, 2), device="cuda", output_device="cpu"
    )
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, image + 1, rtol=1e-5, atol=1e-5)


def test_small_image_is_centred_in_the_zero_padded_tile():
    seen = []

    def record(x):
        seen.append(x.clone())
        return x

    sliding_window_predict(record, torch.ones(1, 1, 4, 5), (8, 8), 1)
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 2:6, 1:6] = 1  # 4 rows padded 2 + 2, 5 columns padded 1 + 2
    assert len(seen) == 1 and torch.equal(seen[0], expected)
