"""Fixtures for every test folder: tiny synthetic datasets written to a temporary folder per test
session, plans for preprocessing tests, and one PyTorch thread. Use a fixture by naming it (or with
`pytest.mark.usefixtures`), never by importing it; helpers to import are in satnet_testing.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.synthetic import make_dataset_2d_rgb, make_dataset_3d
from satnet_testing import build_plan, torch_threads


@pytest.fixture(scope="session")
def dataset_3d(tmp_path_factory) -> Path:
    """3 cases of 16x20x24 voxels, spacing (3, 1, 1), oblique direction, labels 0..2 (read-only: copy to edit)."""
    return make_dataset_3d(tmp_path_factory.mktemp("raw") / "Dataset900_Synth3D", num_cases=3)


@pytest.fixture(scope="session")
def dataset_2d(tmp_path_factory) -> Path:
    """4 RGB PNG cases of 32x40 pixels with a lesion label (read-only: copy to edit)."""
    return make_dataset_2d_rgb(tmp_path_factory.mktemp("raw") / "Dataset901_Synth2D", num_cases=4)


@pytest.fixture
def preprocessing_plan():
    """`preprocessing_plan(spacing, norms, spatial_dims=3, num_classes=3, **resampling)` -> ConfigurationPlan
    (tests/training/conftest.py's `training_plan` makes plans by patch and batch size)."""
    return build_plan


@pytest.fixture
def one_torch_thread():
    """One PyTorch thread for the test: tiny networks gain nothing from more, and on the shared 2-core
    machine several threads are much slower (docs/predict.md). Modules that want it for every test
    set `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """checkpoint_final of an uninterrupted tiny training run (tests/training/trainer_work_dir.py's RUN),
    which the resume tests in tests/training and tests/reliability compare with."""
    from tests.training.trainer_work_dir import uninterrupted_checkpoint

    return uninterrupted_checkpoint(tmp_path_factory.mktemp("reference"))
