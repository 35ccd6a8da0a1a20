"""PatchDataLoader: patch shapes and contents, padding, foreground forcing, seeding."""
from __future__ import annotations

import random

import numpy as np
import pytest

from satnet.errors import InputError, MissingFileError
from satnet.training.dataloader import PatchDataLoader, num_foreground_samples, rank_foreground_samples
from satnet.training.loop import EpochPipelines
from satnet.training.pipeline import get_training_pipeline


def locate(patch: np.ndarray, image: np.ndarray) -> tuple[int, ...]:
    """Offset of `patch` (C, *p) inside `image` (C, *s), found from its first voxel (values are noise)."""
    hits = np.argwhere(image[0] == patch[(0,) + (0,) * (patch.ndim - 1)])
    assert len(hits) == 1
    return tuple(int(h) for h in hits[0])


def test_foreground_count_is_the_last_third():
    assert [num_foreground_samples(b) for b in (1, 2, 3, 9, 12)] == [0, 1, 1, 3, 4]


@pytest.mark.parametrize("batch, ranks", [(2, 1), (2, 2), (4, 2), (4, 4), (9, 3), (12, 2), (12, 4)])
def test_ranks_share_the_global_batchs_foreground_samples(batch, ranks):
    per_rank = batch // ranks
    shares = [rank_foreground_samples(per_rank, ranks, r) for r in range(ranks)]
    assert sum(shares) == num_foreground_samples(batch)  # as one process would force
    assert all(0 <= s <= per_rank for s in shares)
    assert shares == sorted(shares)  # the forced samples are the global batch's last


def test_a_rank_with_one_sample_of_a_batch_of_two_still_forces_foreground(cases_3d, training_plan):
    # per rank, num_foreground_samples(1) == 0: without the global rule no patch would be forced
    folder, ids = cases_3d
    plan = training_plan([8, 8, 8], 1, in_channels=2)  # this rank's part of a global batch of 2
    forced = []
    for rank in (0, 1):
        pipelines = EpochPipelines(folder, ids, ids, plan, 0, 0, rank, 0, 0, world_size=2)
        forced.append((pipelines.train.data_loader.num_foreground, pipelines.val.data_loader.num_foreground))
        pipelines.close()
    assert forced == [(0, 0), (1, 1)]


def test_3d_patches_are_slices_of_the_case(cases_3d):
    folder, ids = cases_3d
    loader = PatchDataLoader(folder, ids[:2], [16, 16, 16], batch_size=5, seed=0)
    batch = next(loader)
    assert batch["data"].shape == (5, 2, 16, 16, 16) and batch["data"].dtype == np.float32
    assert batch["seg"].shape == (5, 1, 16, 16, 16) and batch["seg"].dtype == np.int8
    for data, seg, key in zip(batch["data"], batch["seg"], batch["keys"]):
        image, labels = np.load(folder / f"{key}.npy"), np.load(folder / f"{key}_seg.npy")
        z, y, x = locate(data, image)
        np.testing.assert_array_equal(data, image[:, z:z + 16, y:y + 16, x:x + 16])
        np.testing.assert_array_equal(seg, labels[:, z:z + 16, y:y + 16, x:x + 16])


def test_case_smaller_than_patch_is_padded(cases_3d):
    folder, ids = cases_3d  # case_2 is 10 x 12 x 14
    batch = next(PatchDataLoader(folder, [ids[2]], [16, 16, 16], batch_size=3, read_size=[20, 16, 18], seed=0))
    assert batch["data"].shape == (3, 2, 20, 16, 18)
    image = np.load(folder / "case_2.npy")
    for data, seg in zip(batch["data"], batch["seg"]):
        inside = seg[0] >= 0
        assert inside.sum() == 10 * 12 * 14  # the whole case, the rest is padding
        assert np.all(data[:, ~inside] == 0)
        np.testing.assert_array_equal(np.sort(data[0][inside]), np.sort(image[0].ravel()))


def test_2d_patches_are_slices_of_one_z_plane(cases_2d):
    folder, ids = cases_2d
    batch = next(PatchDataLoader(folder, ids, [16, 16], batch_size=6, seed=1))
    assert batch["data"].shape == (6, 3, 16, 16) and batch["seg"].shape == (6, 1, 16, 16)
    for data, key in zip(batch["data"], batch["keys"]):
        image = np.load(folder / f"{key}.npy")  # (3, Z, Y, X)
        z, y, x = locate(data[:, None], image)
        np.testing.assert_array_equal(data, image[:, z, y:y + 16, x:x + 16])


def _central(seg: np.ndarray, patch: list[int]) -> np.ndarray:
    """The network patch at the centre of a read box (B, 1, *read)."""
    starts = [(r - p) // 2 for r, p in zip(seg.shape[2:], patch)]
    return seg[(slice(None), slice(None)) + tuple(slice(s, s + p) for s, p in zip(starts, patch))]


@pytest.mark.parametrize("dims", [3, 2])
def test_last_third_contains_foreground(cases_3d, cases_2d, dims):
    folder, ids = cases_3d if dims == 3 else cases_2d
    patch = [8] * dims
    loader = PatchDataLoader(folder, ids, patch, batch_size=9, read_size=[12, 14, 10][:dims], seed=2)
    random_with_foreground = []
    for _ in range(15):
        batch = next(loader)
        has_foreground = (_central(batch["seg"], patch) > 0).reshape(9, -1).any(1)
        for i, key in enumerate(batch["keys"]):
            if i >= 6 and key != "case_3":  # case_3 has no foreground
                assert has_foreground[i], f"sample {i} of case {key} has no foreground"
        random_with_foreground += list(has_foreground[:6])
    assert np.mean(random_with_foreground) < 0.5  # the objects are small: forcing, not luck


def test_same_seed_same_batches_and_workers_differ(cases_3d):
    folder, ids = cases_3d
    first, second, other = (PatchDataLoader(folder, ids, [8, 8, 8], batch_size=4, seed=s) for s in (7, 7, 8))
    for _ in range(3):
        a, b, c = next(first), next(second), next(other)
        np.testing.assert_array_equal(a["data"], b["data"])
        assert a["keys"] == b["keys"]
    assert not np.array_equal(a["data"], c["data"])
    second.set_thread_id(1)
    assert not np.array_equal(next(first)["data"], next(second)["data"])


def test_seeded_pipeline_is_deterministic_and_leaves_numpy_global_state(cases_3d, training_plan):
    folder, ids = cases_3d
    plan = training_plan([8, 8, 8], 3, in_channels=2)
    runs = []
    for _ in range(2):
        pipeline = get_training_pipeline(folder, ids, plan, num_workers=0, seed=11)
        runs.append([next(pipeline) for _ in range(4)])
        np.random.uniform(size=5)  # other users of the global state do not change the batches
    np.random.seed(0)
    for a, b in zip(*runs):
        assert a["data"].equal(b["data"])
        assert all(ta.equal(tb) for ta, tb in zip(a["target"], b["target"]))
    assert not runs[0][0]["data"].equal(runs[0][1]["data"])
    pipeline = get_training_pipeline(folder, ids, plan, num_workers=0, seed=11)
    np.random.seed(5)
    random.seed(5)
    before, before_python = np.random.get_state(), random.getstate()
    next(pipeline)
    after = np.random.get_state()
    # the whole state: the key array alone changes only every 624 draws, so a leaked draw left it equal
    assert np.array_equal(after[1], before[1]) and after[2:] == before[2:]
    assert random.getstate() == before_python


def test_bad_inputs_are_named(cases_3d, tmp_path):
    folder, ids = cases_3d
    with pytest.raises(MissingFileError, match="nope.*satnet plan-and-preprocess"):
        PatchDataLoader(folder, ids + ["nope"], [8, 8, 8], batch_size=2)
    with pytest.raises(InputError, match="no cases"):
        PatchDataLoader(folder, [], [8, 8, 8], batch_size=2)
    with pytest.raises(InputError, match="read_size"):
        PatchDataLoader(folder, ids, [8, 8, 8], batch_size=2, read_size=[4, 8, 8])
