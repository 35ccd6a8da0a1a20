"""Work folders for prediction tests: plans and freshly initialised checkpoints.

Nothing here depends on the trainer: checkpoints are tiny networks straight from
`build_network`, saved following satnet.io.checkpoints' contract.
"""
from __future__ import annotations

from pathlib import Path

import torch

from satnet_testing import build_plan
from satnet.inference.models import checkpoint_path
from satnet.io.checkpoints import save_checkpoint
from satnet.nets import build_network
from satnet.planning.plans import ChannelNormalization, Plans, load_plans, save_plans

MRI = ChannelNormalization(channel="MRI", scheme="zscore", use_nonzero_mask=True)
LABELS = {"background": 0, "object1": 1, "object2": 2}


def tiny_plans(configs=("3d",), in_channels: int = 1, file_ending: str = ".nii.gz") -> Plans:
    """Plans with tiny networks (features 4, 8; patch 8) at 2 mm, for the synthetic 3D dataset."""
    configurations = {}
    for name in configs:
        dims = 2 if name.startswith("2d") else 3
        plan = build_plan([2.0, 2.0, 2.0], [MRI] * in_channels, spatial_dims=dims, num_classes=len(LABELS))
        plan.name = name
        configurations[name] = plan
    return Plans(
        dataset_name="Dataset900_Synth3D", channel_names={str(i): f"MRI{i}" for i in range(in_channels)},
        labels=dict(LABELS), file_ending=file_ending, configurations=configurations, planner={},
    )


def make_work_dir(root: Path, plans: Plans | None = None) -> Path:
    work_dir = Path(root) / "work"
    save_plans(plans or tiny_plans(), work_dir)
    return work_dir


def add_checkpoint(work_dir: Path, config: str, fold: str | int, seed: int, which: str = "final") -> torch.nn.Module:
    """Save a freshly initialised network (torch seed `seed`) as fold `fold`'s checkpoint; return it."""
    plans_text = (Path(work_dir) / "plans.json").read_text(encoding="utf-8")
    spec = load_plans(work_dir).configuration(config).network
    torch.manual_seed(seed)
    network = build_network(spec)
    with torch.no_grad():  # a fresh network's logits are near zero: spread them so folds disagree visibly
        for p in network.parameters():
            p.mul_(3.0)
    save_checkpoint(checkpoint_path(work_dir, config, str(fold), which), {
        "format_version": 1, "satnet_version": "test", "config": config, "fold": str(fold),
        "network": spec.to_dict(), "plans_json": plans_text, "state_dict": network.state_dict(), "epoch": 1,
    })
    return network.eval()
