"""satnet.io.checkpoints: what a checkpoint that cannot be loaded is reported as (safe loading itself:
tests/reliability/test_safe_loading.py)."""
from __future__ import annotations

import pytest
import torch

from satnet.errors import InputError
from satnet.io.checkpoints import load_checkpoint

from satnet_testing import remove_read_permission


def test_checkpoint_without_read_permission_is_not_called_corrupt(tmp_path):
    # Before: "could not be loaded (PermissionError: ...); it is corrupt or not a satnet checkpoint: retrain ... or
    # delete it and train again", advice that loses good weights.
    path = tmp_path / "checkpoint_final.pt"
    torch.save({"epoch": 1}, path)
    remove_read_permission(path)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    assert str(info.value) == (f"checkpoint {path} cannot be opened (permission denied): give the user running satnet "
                               f"read access to it (e.g. chmod a+r FILE)")
