"""Helpers shared by tests in several folders (imported by name: `from satnet_testing import ...`).

They live here rather than in conftest.py because several test folders have a conftest.py of
their own, and `from conftest import` would then pick whichever was imported first. Fixtures
live in the conftest.py files (tests/conftest.py for all folders), never imported by name.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from satnet.io.cases import CaseProperties, save_case
from satnet.io.geometry import ImageGeometry
from satnet.nets.spec import NetworkSpec
from satnet.planning.plans import ChannelNormalization, ConfigurationPlan, MemoryEstimate, ResamplingPlan

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/data, or skip the test when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"{path} is absent (../shared/data is only present in the satnet development workspace)")
    return path


def build_plan(
    spacing, norms: list[ChannelNormalization], spatial_dims: int = 3, num_classes: int = 3, **resampling
) -> ConfigurationPlan:
    """A valid ConfigurationPlan with a tiny network; for tests of preprocessing and export."""
    net = NetworkSpec(
        arch="unet", spatial_dims=spatial_dims, in_channels=len(norms), num_classes=num_classes,
        features=[4, 8], kernel_sizes=[[3] * spatial_dims] * 2, strides=[[1] * spatial_dims, [2] * spatial_dims],
    )
    return ConfigurationPlan(
        name=f"{spatial_dims}d", spacing=list(spacing), patch_size=[8] * spatial_dims, batch_size=2,
        normalization=norms, network=net, estimated_memory=MemoryEstimate(0, 0, 0, 0, 0),
        memory_budget_bytes=0, resampling=ResamplingPlan(**resampling),
    )


def write_case(
    folder: Path, case_id: str, image: np.ndarray, seg: np.ndarray, max_locations: int = 50, seed: int = 0
) -> None:
    """Save image (C, Z, Y, X) and seg (1, Z, Y, X) with up to `max_locations` sampled voxels per label."""
    rng = np.random.default_rng(seed)
    locations = {}
    for label in np.unique(seg):
        if label > 0:
            where = np.argwhere(seg[0] == label)
            pick = rng.choice(len(where), size=min(max_locations, len(where)), replace=False)
            locations[str(int(label))] = where[pick].tolist()
    shape = list(image.shape[1:])
    props = CaseProperties(
        case_id=case_id,
        geometry=ImageGeometry(shape=shape, spacing=[1.0] * 3, origin=[0.0] * 3, direction=[1, 0, 0, 0, 1, 0, 0, 0, 1]),
        crop_bbox=[[0, s] for s in shape],
        shape_after_crop=shape,
        shape_after_resampling=shape,
        spacing_after_resampling=[1.0] * 3,
        class_locations=locations,
    )
    save_case(folder, props, image, seg)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch runs on `n` threads inside the block (the fixture `one_torch_thread` does this for a test)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def interrupted_on_call(function, n: int):
    """`function`, except that its `n`-th call raises KeyboardInterrupt (Ctrl-C in the middle of a run)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    return wrapper


def remove_read_permission(path: Path) -> None:
    """chmod 0 `path`; skips the test when that does not stop this process from reading it (it runs as root). To
    run such a test as root: `unshare -U python -m pytest --basetemp=DIR ...`, DIR writable by everyone."""
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return
    pytest.skip("chmod does not stop this process from reading (it runs as root)")
