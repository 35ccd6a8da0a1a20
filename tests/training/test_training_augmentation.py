"""Augmentation recipe, enlarged patch, deep-supervision targets and the worker pipelines."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.spatial_transforms import SpatialTransform

from satnet.errors import ConfigError
from satnet.training.augmentation import (
    AugmentationConfig,
    ZeroOutsideImageTransform,
    default_augmentation,
    enlarged_patch_size,
    training_transforms,
)
from satnet.training.pipeline import WorkerAugmenter, get_training_pipeline, get_validation_pipeline

REPO = Path(__file__).resolve().parents[2]


def test_default_recipe_rules():
    iso = default_augmentation([40, 56, 40], [1.0, 1.0, 1.0])
    assert not iso.dummy_2d and iso.rotation_deg == ((-30.0, 30.0),) * 3 and iso.mirror_axes == (0, 1, 2)
    assert default_augmentation([8, 64, 48], [1.0, 1.0, 1.0]).dummy_2d  # flat patch
    flat_spacing = default_augmentation([32, 64, 64], [4.0, 1.0, 1.0])  # thick slices
    assert flat_spacing.dummy_2d and flat_spacing.rotation_deg[0] == (-180.0, 180.0)
    square = default_augmentation([256, 256], [999.0, 1.0, 1.0])
    assert square.rotation_deg == ((-180.0, 180.0),) and square.mirror_axes == (0, 1)
    assert default_augmentation([64, 256], [999.0, 1.0, 1.0]).rotation_deg == ((-15.0, 15.0),)


@pytest.mark.parametrize(
    "patch, config",
    [
        ([10, 14, 12], default_augmentation([10, 14, 12], [1, 1, 1])),
        ([24, 16], default_augmentation([24, 16], [1, 1, 1])),
        ([3, 16, 20], default_augmentation([3, 16, 20], [1, 1, 1])),
    ],
)
def test_enlarged_patch_holds_every_rotation_at_maximum_zoom(patch, config):
    read = enlarged_patch_size(patch, config)
    assert all((r - p) % 2 == 0 and r >= p for r, p in zip(read, patch))
    if not config.dummy_2d:
        assert max(read) < np.linalg.norm(patch) * max(config.scale) + 3  # not more than the rotated diagonal
    dims = config.spatial_transform_dims
    angles = [tuple(np.deg2rad(a)) for a in config.rotation_deg] + [(0.0, 0.0)] * (3 - len(config.rotation_deg))
    spatial = SpatialTransform(
        patch[-dims:], patch_center_dist_from_border=None, do_elastic_deform=False, angle_x=angles[0],
        angle_y=angles[1], angle_z=angles[2], scale=(config.scale[1], config.scale[1]), border_mode_seg="constant",
        border_cval_seg=-1, order_seg=0, random_crop=False, order_data=0,
    )
    np.random.seed(0)
    seg = np.ones((64, 1, *read[-dims:]), dtype=np.float32)
    out = spatial(data=np.zeros_like(seg), seg=seg)["seg"]
    assert out.min() == 1  # no grid point fell outside the read patch


def test_more_deep_supervision_outputs_than_decoder_stages_are_refused(cases_3d, training_plan):
    folder, ids = cases_3d
    with pytest.raises(ConfigError, match="at most 2"):
        get_training_pipeline(folder, ids, training_plan([16, 16, 16], 2, 2), num_workers=0, deep_supervision_outputs=3)


def test_zero_outside_image_only_for_masked_channels():
    seg = np.zeros((2, 1, 4, 4), dtype=np.int8)
    seg[:, :, :2] = -1
    out = ZeroOutsideImageTransform([1])(data=np.ones((2, 2, 4, 4), dtype=np.float32), seg=seg)["data"]
    assert out[:, 0].min() == 1 and out[:, 1, :2].max() == 0 and out[:, 1, 2:].min() == 1


BALL_RADIUS = np.sqrt(((np.indices((16, 16, 16)) - 7.5) ** 2).sum(0))  # voxel distance from the centre of 16^3
BALL = BALL_RADIUS < 6.5  # a centred ball: every mirror, and every rotation about the centre, maps it onto itself


def _augmented_balls(config: AugmentationConfig, batches: int):
    """(input data, output batch) of `batches` batches of 4 noisy balls, zero outside, through the training
    augmentation with channel 0 masked."""
    rng = np.random.default_rng(0)
    transform = training_transforms([16, 16, 16], config, None, mask_channels=[0])
    np.random.seed(0)
    random.seed(0)
    for _ in range(batches):
        data = np.where(BALL, rng.normal(1.0, 1.0, (4, 1, 16, 16, 16)), 0.0).astype(np.float32)
        seg = np.where(BALL, 1, 0).astype(np.int8)[None, None].repeat(4, axis=0)
        yield data, transform(data=data.copy(), seg=seg)


def test_intensity_augmentation_leaves_no_signal_outside_the_nonzero_mask():
    """A channel normalised over its nonzero region is exactly 0 outside it at inference; the stored label
    is 0 there (not -1), so the training augmentation must find the region from the image itself."""
    config = AugmentationConfig(spatial_dims=3, rotation_deg=((0, 0),) * 3, p_rotation=0.0, p_scale=0.0)
    changed = False
    for data, out in _augmented_balls(config, 20):
        assert float(out["data"][:, 0][:, ~BALL].abs().max()) == 0.0
        changed |= not np.allclose(out["data"].numpy(), data)
    assert changed  # the augmentation did run


def test_after_rotation_the_region_outside_the_nonzero_mask_stays_zero():
    """Rotated by the cubic spline, the zeros outside the mask pick up small non-zero values even far away, so
    the region must be found before the rotation (and rotated with the label), not in the rotated image."""
    config = AugmentationConfig(spatial_dims=3, rotation_deg=((-30, 30),) * 3, p_rotation=1.0, p_scale=0.0)
    noisy = False
    for _, out in _augmented_balls(config, 10):
        assert float(out["data"][:, 0][:, BALL_RADIUS > 9.0].abs().max()) == 0.0  # far outside, however rotated
        assert out["target"].shape == (4, 1, 16, 16, 16)  # the mask's channel is gone again
        noisy |= float(out["data"][:, 0][:, BALL_RADIUS < 5].std()) > 0
    assert noisy


def _check_batch(batch: dict, batch_size: int, channels: int, patch: list[int], scales: int) -> None:
    assert batch["data"].dtype == torch.float32 and tuple(batch["data"].shape) == (batch_size, channels, *patch)
    targets = batch["target"] if scales else [batch["target"]]
    assert isinstance(batch["target"], list) == bool(scales) and len(targets) == max(scales, 1)
    for i, t in enumerate(targets):
        assert t.dtype == torch.int64 and tuple(t.shape) == (batch_size, 1, *[p // 2**i for p in patch])
        assert t.min() >= 0 and t.max() <= 2


@pytest.mark.parametrize("patch, deep_supervision, scales", [([16, 16, 16], True, 2), ([4, 16, 16], True, 2)])
def test_training_pipeline_3d(cases_3d, training_plan, patch, deep_supervision, scales):
    folder, ids = cases_3d
    plan = training_plan(patch, 4, in_channels=2, deep_supervision=deep_supervision, nonzero_mask=True)
    pipeline = get_training_pipeline(folder, ids, plan, num_workers=0, seed=0)
    for _ in range(3):
        batch = next(pipeline)
        _check_batch(batch, 4, 2, patch, scales)
        assert torch.isfinite(batch["data"]).all()


def test_training_pipeline_2d_without_deep_supervision(cases_2d, training_plan):
    folder, ids = cases_2d
    plan = training_plan([16, 16], 5, in_channels=3, deep_supervision=False)
    pipeline = get_training_pipeline(folder, ids, plan, num_workers=0, seed=0)
    _check_batch(next(pipeline), 5, 3, [16, 16], 0)


def test_validation_pipeline_only_converts(cases_3d, training_plan):
    folder, ids = cases_3d
    plan = training_plan([8, 8, 8], 6, in_channels=2)
    batch = next(get_validation_pipeline(folder, ids, plan, num_workers=0, seed=0))
    _check_batch(batch, 6, 2, [8, 8, 8], 2)
    full, half = batch["target"]
    assert half.equal(full[:, :, ::2, ::2, ::2])
    for data, key in zip(batch["data"].numpy(), batch["keys"]):  # patches are unaugmented slices of the case
        image = np.load(folder / f"{key}.npy")
        assert np.isin(data[data != 0], image).all()
    assert (full[4:] > 0).flatten(1).any(1).sum() >= 1  # forced foreground survives


def test_workers_yield_reproducibly_and_close(cases_3d, training_plan):
    folder, ids = cases_3d
    plan = training_plan([8, 8, 8], 3, in_channels=2)
    python_state = random.getstate()
    single = get_training_pipeline(folder, ids, plan, num_workers=0, seed=3)
    expected = [next(single)["data"] for _ in range(3)]
    assert random.getstate() == python_state
    with get_training_pipeline(folder, ids, plan, num_workers=1, seed=3) as one:
        assert all(next(one)["data"].equal(e) for e in expected)  # worker 0 draws what the main process draws
    assert not any(p.is_alive() for p in one._processes) and one._processes == []
    two = get_training_pipeline(folder, ids, plan, num_workers=2, seed=3)
    batches = [next(two) for _ in range(4)]
    workers = list(two._processes)
    two.close()
    assert not any(p.is_alive() for p in workers)
    assert batches[0]["data"].equal(expected[0]) and not batches[1]["data"].equal(expected[1])


# Why close() can fail in the background: workers hand tensors over as shared-memory file descriptors
# that the collecting thread fetches from the live sender while unpickling a batch. A worker that is
# mid-batch when close() pauses the workers still puts that batch, and the collecting thread stops on
# the same abort event that lets the workers exit, so it can unpickle a batch whose worker has just
# exited (FileNotFoundError or ConnectionResetError in that thread). The old test closed 6 pipelines
# and hoped to hit that window; these two force it. The fix (satnet/training/pipeline.py,
# WorkerAugmenter) gives the collecting thread a stop event of its own and joins it before the
# workers are released: before it, the first test failed every time and the second 19 times in 20.


def _slow_rebuild(delay_s: float) -> None:
    time.sleep(delay_s)


class _SlowToUnpickle:
    """Unpickling it waits, so the tensors after it in a batch are fetched once their worker has exited."""

    def __reduce__(self):
        return _slow_rebuild, (0.5,)


class _HoldBatchUntilStopped(AbstractTransform):
    """In each worker, every batch after the first waits until close() has paused and then stopped
    the workers: each worker is mid-batch at close() and puts that batch while it exits."""

    def __init__(self, pause_event, abort_event):
        self.pause_event, self.abort_event, self.batches = pause_event, abort_event, 0

    def __call__(self, **data):
        self.batches += 1
        if self.batches > 1:
            self.pause_event.wait(20)
            self.abort_event.wait(20)
        return {"slow": _SlowToUnpickle(), **data}


def test_close_stops_the_collecting_thread_before_the_workers_may_exit(cases_3d, training_plan, monkeypatch):
    folder, ids = cases_3d
    pipeline = get_training_pipeline(folder, ids, training_plan([8, 8, 8], 2, in_channels=2), num_workers=2, seed=0)
    next(pipeline)
    thread, release = pipeline.pin_memory_thread, pipeline.abort_event.set
    collecting_when_released = []  # whether the collecting thread ran when the workers were let exit

    def set_abort() -> None:
        collecting_when_released.append(thread.is_alive())
        release()

    monkeypatch.setattr(pipeline.abort_event, "set", set_abort)
    pipeline.close()
    assert collecting_when_released and not any(collecting_when_released)


def test_close_while_a_worker_is_mid_batch_raises_nothing_in_the_background(cases_3d, training_plan, monkeypatch):
    folder, ids = cases_3d
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    single = get_training_pipeline(folder, ids, training_plan([8, 8, 8], 2, in_channels=2), num_workers=0, seed=0)
    # wait_time 0.5 s: the collecting thread waits long enough on a worker's queue to receive its last batch
    pipeline = WorkerAugmenter(single.data_loader, None, 2, seeds=[1, 2], wait_time=0.5)
    pipeline.transform = Compose([single.transform, _HoldBatchUntilStopped(pipeline.pause_event, pipeline.abort_event)])
    next(pipeline)
    pipeline.close()
    assert errors == []


@pytest.mark.slow
def test_workers_start_after_parallel_torch_work_and_the_interpreter_exits_with_them_running(cases_3d):
    folder, ids = cases_3d
    script = textwrap.dedent(f"""
        import sys
        import torch
        sys.path.insert(0, {str(REPO)!r})
        torch.set_num_threads(2)
        torch.ones(4_000_000).long()  # starts torch's OpenMP pool in the parent before the workers fork
        from satnet.nets.spec import NetworkSpec
        from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate
        from satnet.training.pipeline import get_training_pipeline
        net = NetworkSpec("unet", 3, 2, 3, [4, 8], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]])
        norm = [ChannelNormalization(str(c), "zscore") for c in range(2)]
        plan = ConfigurationPlan("3d", [1.0] * 3, [32, 32, 32], 2, norm, net, MemoryEstimate(0, 0, 0, 0, 0), 1)
        pipeline = get_training_pipeline({str(folder)!r}, {ids!r}, plan, num_workers=2, seed=0)
        print(tuple(next(pipeline)["data"].shape))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=45)
    assert done.returncode == 0, done.stderr
    assert "(2, 2, 32, 32, 32)" in done.stdout


def test_config_for_dims_is_checked():
    with pytest.raises(ConfigError, match="2 or 3"):
        default_augmentation([8, 8, 8, 8], [1, 1, 1])
    assert AugmentationConfig(3, ((-30, 30),) * 3).spatial_transform_dims == 3
