"""What a training checkpoint holds beyond the weights, and loading one to resume.

The on-disk contract (keys, atomic writes, `weights_only` loading) is satnet.io.checkpoints';
this module fills it for training and reads it back:

- `capture_rng` / `restore_rng`: the global random states of torch (CPU and CUDA), numpy and
  Python as tensors and lists of ints, never pickled objects. The data pipelines do not need
  theirs: they are reseeded from (seed, epoch, rank) at every epoch start (see trainer.py).
- `load_for_resume`: checkpoint_latest.pt of a fold, checked against the configuration and fold
  being trained, with errors that say what to do.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from satnet.errors import ConfigError, MissingFileError
from satnet.io.checkpoints import CheckpointMeta, load_checkpoint
from satnet.io.workdir import checkpoint_name
from satnet.names import CHECKPOINT_NAMES


def checkpoint_file(fold_dir: Path, which: str) -> Path:
    """fold_dir/checkpoint_<which>.pt, which in CHECKPOINT_NAMES."""
    if which not in CHECKPOINT_NAMES:
        raise ValueError(f"which must be one of {CHECKPOINT_NAMES}, not {which!r}")
    return Path(fold_dir) / checkpoint_name(which)


def capture_rng() -> dict[str, Any]:
    """Global RNG states: torch CPU (uint8 tensor), CUDA (one per device), numpy MT19937, Python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNG states `capture_rng` returned (CUDA only when both runs have as many GPUs)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def portable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights as contiguous tensors (whatever memory format training used), for any later loader."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def load_for_resume(fold_dir: Path, config: str, fold: str) -> dict[str, Any]:
    """checkpoint_latest.pt of `fold_dir`, checked to belong to `config` and `fold`.

    Missing: MissingFileError saying so and that training without --resume starts the fold.
    Corrupt: satnet.io.checkpoints' InputError. Another configuration or fold: ConfigError naming both.
    """
    path = checkpoint_file(fold_dir, "latest")
    if not path.is_file():
        others = sorted(p.name for p in Path(fold_dir).glob("checkpoint_*.pt")) if Path(fold_dir).is_dir() else []
        found = f" (the folder has {', '.join(others)})" if others else ""
        raise MissingFileError(
            f"--resume needs {path}, which does not exist{found}: this fold has no run to continue. "
            f"Drop --resume to start training fold {fold} from scratch"
        )
    ckpt = load_checkpoint(path)
    meta = CheckpointMeta.of(ckpt)
    if meta.config != config:
        raise ConfigError(
            f"{path} belongs to configuration {meta.config!r}, not {config!r} (the one being trained); "
            f"resume it with `satnet train WORK_DIR {meta.config} {fold} --resume`, or move the file away"
        )
    if meta.fold != str(fold):
        raise ConfigError(f"{path} belongs to fold {meta.fold!r}, not {fold!r}; move the file away")
    for key in ("optimizer", "scheduler", "rng", "train_options", "log"):
        if key not in ckpt:
            raise ConfigError(f"{path} has no {key!r}: it was not written by `satnet train` and cannot be resumed; "
                              f"drop --resume to train from scratch")
    return ckpt
