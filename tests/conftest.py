"""Shared fixtures: tiny synthetic datasets written to a temporary folder per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet_testing import SHARED_DATA, build_plan, shared_dataset  # noqa: F401 (re-exported)
from satnet.synthetic import make_dataset_2d_rgb, make_dataset_3d


@pytest.fixture(scope="session")
def dataset_3d(tmp_path_factory) -> Path:
    """3 cases of 16x20x24 voxels, spacing (3, 1, 1), oblique direction, labels 0..2 (read-only: copy to edit)."""
    return make_dataset_3d(tmp_path_factory.mktemp("raw") / "Dataset900_Synth3D", num_cases=3)


@pytest.fixture(scope="session")
def dataset_2d(tmp_path_factory) -> Path:
    """4 RGB PNG cases of 32x40 pixels with a lesion label (read-only: copy to edit)."""
    return make_dataset_2d_rgb(tmp_path_factory.mktemp("raw") / "Dataset901_Synth2D", num_cases=4)


@pytest.fixture
def make_plan():
    """`make_plan(spacing, norms, spatial_dims=3, num_classes=3, **resampling)` -> ConfigurationPlan."""
    return build_plan
