"""Checkpoints: `WORK_DIR/results/<config>/fold_<k>/checkpoint_{latest,best,final}.pt`.

A checkpoint is a dict saved with `torch.save` that loads with `torch.load(weights_only=True)`
(plain containers, numbers, strings and tensors only; no pickled classes):

- format_version (int), satnet_version (str)
- config (str), fold (str: "0".."4" or "all")
- network (dict): the NetworkSpec the weights belong to
- plans_json (str): the whole plans.json the run was trained with, as text
- state_dict: model weights (no DDP "module." prefix)
- epoch (int): epochs completed
- optimizer, scheduler (state dicts), rng (dict of RNG state tensors), train_options (dict),
  best_ema_dice (float or None), log (dict), grad_scaler (dict or None): needed to resume, ignored by
  prediction

Written atomically (temporary file + rename), so a kill during the write leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from satnet.contracts import atomic_write
from satnet.errors import InputError, MissingFileError

CHECKPOINT_FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "fold", "network", "plans_json", "state_dict", "epoch")


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself, beside its weights and its resume state (typed; the file stays a dict).

    network: the NetworkSpec dict the weights belong to; plans_json: the whole plans.json of the run, as text;
    epoch: epochs completed. satnet_version is "" in checkpoints that lack it.
    """

    config: str
    fold: str
    network: dict[str, Any]
    plans_json: str
    epoch: int
    satnet_version: str = ""
    format_version: int = CHECKPOINT_FORMAT_VERSION

    @classmethod
    def of(cls, checkpoint: Mapping[str, Any]) -> "CheckpointMeta":
        """The metadata of a loaded checkpoint dict (load_checkpoint has checked REQUIRED_KEYS)."""
        return cls(config=checkpoint["config"], fold=str(checkpoint["fold"]), network=checkpoint["network"],
                   plans_json=checkpoint["plans_json"], epoch=int(checkpoint["epoch"]),
                   satnet_version=checkpoint.get("satnet_version", ""), format_version=checkpoint["format_version"])

    def checkpoint(self, state_dict: Mapping[str, Any], **resume: Any) -> dict[str, Any]:
        """The checkpoint dict: this metadata, the weights and `resume` (optimizer, scheduler, rng, ...), with the
        keys in the order satnet has always written them."""
        return {"format_version": self.format_version, "satnet_version": self.satnet_version, "config": self.config,
                "fold": self.fold, "network": self.network, "plans_json": self.plans_json, "state_dict": state_dict,
                "epoch": self.epoch, **resume}


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write `checkpoint` atomically; it must hold at least REQUIRED_KEYS."""
    import torch

    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint is missing {missing}")
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    data = buf.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only); a missing, corrupt or foreign file gives a clear error."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint {path} not found; train this fold first with `satnet train WORK_DIR CONFIG FOLD`"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:  # not corrupt: the generic advice below would have the user delete good weights
        raise InputError(f"checkpoint {path} cannot be opened (permission denied): give the user running satnet read "
                         f"access to it (e.g. chmod a+r FILE)") from None
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise InputError(
            f"checkpoint {path} could not be loaded ({_load_failure(exc)}); it is corrupt or not a satnet checkpoint: "
            f"retrain with `satnet train ... --resume` from checkpoint_latest.pt or delete it and train again"
        ) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise InputError(f"{path} is not a satnet checkpoint (it lacks {', '.join(REQUIRED_KEYS)})")
    if not isinstance(ckpt["format_version"], int) or ckpt["format_version"] > CHECKPOINT_FORMAT_VERSION:
        raise InputError(
            f"checkpoint {path} has format_version {ckpt['format_version']!r}; this satnet reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}: upgrade satnet"
        )
    return ckpt


def _load_failure(exc: Exception) -> str:
    """Why torch.load failed, in one line. torch's refusal of a pickled object starts with advice to load with
    weights_only=False, which would let the file run code: only the reason is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        reason = next((ln for ln in lines[1:] if not ln.startswith(("Please file", "Check the documentation"))), "")
        detail = f": {reason.rstrip('.')}" if reason else ""
        return f"the safe loader refused its contents{detail}; satnet never unpickles objects"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
