"""Fixtures of the reliability tests: the corpus's base folders, and a work folder to predict with."""
from __future__ import annotations

from pathlib import Path

import pytest

from satnet.synthetic import make_dataset_3d
from tests.inference.fakes import add_checkpoint, make_work_dir
from tests.reliability.sandbox import NUM_TEST, build_bases


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> dict[str, Path]:
    """The valid inputs that the corpus's cases break, built once (tests/reliability/sandbox.py)."""
    return build_bases(tmp_path_factory.mktemp("corpus_bases"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """(images to predict, WORK_DIR with a freshly initialised 3d fold 0)."""
    root = tmp_path_factory.mktemp("kill_predict")
    raw = make_dataset_3d(root / "Dataset900_Synth3D", num_cases=1, num_test=NUM_TEST, seed=3)
    work = make_work_dir(root)
    add_checkpoint(work, "3d", 0, seed=0)
    return raw / "imagesTs", work
