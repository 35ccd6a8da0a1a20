"""Shared fixtures: tiny synthetic datasets written to a temporary folder per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.synthetic import make_dataset_2d_rgb, make_dataset_3d

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def dataset_3d(tmp_path_factory) -> Path:
    """3 cases of 16x20x24 voxels, spacing (3, 1, 1), oblique direction, labels 0..2 (read-only: copy to edit)."""
    return make_dataset_3d(tmp_path_factory.mktemp("raw") / "Dataset900_Synth3D", num_cases=3)


@pytest.fixture(scope="session")
def dataset_2d(tmp_path_factory) -> Path:
    """4 RGB PNG cases of 32x40 pixels with a lesion label (read-only: copy to edit)."""
    return make_dataset_2d_rgb(tmp_path_factory.mktemp("raw") / "Dataset901_Synth2D", num_cases=4)


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/data, or skip the test when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"{path} is absent (../shared/data is only present in the satnet development workspace)")
    return path
