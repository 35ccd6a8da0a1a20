"""A tiny work folder for the trainer tests: plans.json, splits.json and preprocessed cases; and the
reference run that the resume tests compare with (the fixture `uninterrupted` in tests/conftest.py).

Written directly (no planner, no raw images), so the trainer tests stay fast and test training
only; tests/test_cli_train.py runs the real `satnet plan-and-preprocess` end to end.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate, Plans, save_plans
from satnet.planning.splits import make_splits, save_splits
from satnet_testing import torch_threads
from satnet_testing import write_case

RUN = dict(epochs=3, iterations_per_epoch=2, val_iterations=1, workers=0, seed=3)  # the resume tests' run
LABELS = {"background": 0, "left": 1, "right": 2}


def tiny_plan(name: str, dims: int, channels: int, skip: str = "sat", deep_supervision: bool = True) -> ConfigurationPlan:
    """3 stages (features 4-8-16, strides 1-2-2), patch 8 per axis, batch 2: 2 outputs with deep supervision."""
    network = NetworkSpec(
        arch="unet", spatial_dims=dims, in_channels=channels, num_classes=len(LABELS), features=[4, 8, 16],
        kernel_sizes=[[3] * dims] * 3, strides=[[1] * dims, [2] * dims, [2] * dims], skip=skip,
        deep_supervision=deep_supervision,
    )
    norms = [ChannelNormalization(channel=str(c), scheme="zscore") for c in range(channels)]
    return ConfigurationPlan(
        name=name, spacing=[1.0, 1.0, 1.0], patch_size=[8] * dims, batch_size=2, normalization=norms,
        network=network, estimated_memory=MemoryEstimate(0, 0, 0, 0, 0), memory_budget_bytes=1,
    )


def _case(shape: tuple[int, ...], channels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise with two boxes (labels 1 and 2) that are brighter and darker: learnable in a few steps."""
    seg = np.zeros((1, *shape), dtype=np.int8)
    z = shape[0] // 2
    seg[0, max(0, z - 2):z + 2, 2:7, 2:7] = 1
    seg[0, max(0, z - 2):z + 2, -7:-2, -7:-2] = 2
    image = rng.normal(size=(channels, *shape)).astype(np.float32) + 2.0 * (seg == 1) - 2.0 * (seg == 2)
    return image, seg


def make_work_dir(
    root: Path, configs: tuple[str, ...] = ("3d",), num_cases: int = 5, skip: str = "sat", deep_supervision: bool = True,
) -> Path:
    """WORK_DIR with the configurations `configs` ("3d": 1 channel, cases 8x14x14; "2d": 3 channels,
    single-slice cases 1x14x14), 5 folds of one validation case each."""
    work_dir = Path(root) / "work"
    case_ids = [f"case_{i:02d}" for i in range(num_cases)]
    configurations = {}
    for name in configs:
        dims, channels, shape = (2, 3, (1, 14, 14)) if name.startswith("2d") else (3, 1, (8, 14, 14))
        plan = tiny_plan(name, dims, channels, skip, deep_supervision)
        rng = np.random.default_rng(0)
        for i, case_id in enumerate(case_ids):
            write_case(plan.data_dir(work_dir), case_id, *_case(shape, channels, rng), seed=i)
        configurations[name] = plan
    plans = Plans(
        dataset_name="Dataset900_Tiny", channel_names={str(c): f"ch{c}" for c in range(channels)}, labels=dict(LABELS),
        file_ending=".nii.gz", configurations=configurations, planner={},
    )
    save_plans(plans, work_dir)
    save_splits(make_splits(case_ids), work_dir)
    return work_dir


def uninterrupted_checkpoint(root: Path) -> dict:
    """checkpoint_final of RUN (3 uninterrupted epochs x 2 iterations) on one torch thread, as the resumed runs."""
    from satnet.io.checkpoints import load_checkpoint
    from satnet.training.options import TrainOptions
    from satnet.training.trainer import train

    with torch_threads(1):
        result = train(make_work_dir(root), "3d", 0, TrainOptions(**RUN), progress_bar=False)
    return load_checkpoint(result.checkpoint_final)


def assert_same_run(checkpoint: dict, reference: dict) -> None:
    assert checkpoint["epoch"] == reference["epoch"] == RUN["epochs"]
    assert checkpoint["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        assert torch.equal(checkpoint["state_dict"][key], value), key
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(checkpoint["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
    losses = [[r[k] for k in ("train_loss", "val_loss", "pseudo_dice", "lr")] for r in checkpoint["log"]["epochs"]]
    assert losses == [[r[k] for k in ("train_loss", "val_loss", "pseudo_dice", "lr")] for r in reference["log"]["epochs"]]
