"""Give nnU-Net v2 the weights of a trained satnet ORG U-Net, so both predict with the same network.

satnet's `unet` with `skip: org` is nnU-Net's PlainConvUNet layer for layer (conv -> instance
norm -> LeakyReLU, two per stage, strided-conv downsampling, transposed-conv upsampling,
concatenation of the upsampled map and then the skip, 1x1 heads). Its weights are renamed into
nnU-Net's state_dict, which holds every encoder weight under four names (`conv` and
`all_modules.0`, under `encoder.` and `decoder.encoder.`), counts decoder stages from the deepest
and puts the full-resolution head last. The checkpoint is written as
`nnUNet_results/<dataset>/nnUNetTrainer__nnUNetPlans__<config>/fold_<k>/<name>` with the plans and
dataset.json nnUNetv2_predict reads beside it. `verify_port` then runs nnU-Net's own network
(built by its predictor from that folder, in its venv) and satnet's on the same input and
returns the largest logit difference: the proof that the two are one function.

The point: prediction speed and Dice of the two tools compared at exactly equal weights, so any
difference in Dice comes from preprocessing, sliding window and export, not from training.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from satnet.io.checkpoints import load_checkpoint
from satnet.nets import NetworkSpec, build_network

TRAINER = "nnUNetTrainer"

_VERIFY = """
import sys, numpy as np, torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
torch.set_num_threads(1)
p = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False, perform_everything_on_device=False,
                    allow_tqdm=False)
p.initialize_from_trained_model_folder(sys.argv[1], use_folds=(int(sys.argv[2]),), checkpoint_name=sys.argv[3])
p.network.load_state_dict(p.list_of_parameters[0])
p.network.eval()
with torch.no_grad():
    out = p.network(torch.from_numpy(np.load(sys.argv[4])))
np.save(sys.argv[5], (out[0] if isinstance(out, (list, tuple)) else out).numpy())
"""


def nnunet_key_map(spec: NetworkSpec) -> dict[str, str]:
    """nnU-Net PlainConvUNet state_dict key -> satnet UNet (skip org) key, for every nnU-Net key."""
    n = spec.num_stages
    mapping: dict[str, str] = {}
    for stage in range(n):
        for j in range(2):
            ours = f"encoder.stages.{stage}.{j}"
            for prefix in ("encoder", "decoder.encoder"):
                theirs = f"{prefix}.stages.{stage}.0.convs.{j}"
                _conv_norm(mapping, theirs, ours)
    for level in range(n - 1):  # satnet level 0 = full resolution; nnU-Net decoder stage 0 = deepest
        s = n - 2 - level
        for j in range(2):
            _conv_norm(mapping, f"decoder.stages.{s}.convs.{j}", f"decoder.stages.{level}.{j}")
        for p in ("weight", "bias"):
            mapping[f"decoder.transpconvs.{s}.{p}"] = f"decoder.ups.{level}.{p}"
            mapping[f"decoder.seg_layers.{s}.{p}"] = f"decoder.heads.heads.{level}.{p}"
    return mapping


def _conv_norm(mapping: dict[str, str], theirs: str, ours: str) -> None:
    for p in ("weight", "bias"):
        for conv_name in ("conv", "all_modules.0"):
            mapping[f"{theirs}.{conv_name}.{p}"] = f"{ours}.0.{p}"
        for norm_name in ("norm", "all_modules.1"):
            mapping[f"{theirs}.{norm_name}.{p}"] = f"{ours}.1.{p}"


def check_same_network(spec: NetworkSpec, patch: list[int], nnunet_plans: dict, config: str) -> None:
    """Refuse a satnet plan that is not nnU-Net's network of `config`."""
    c = nnunet_plans["configurations"][config]
    arch = c["architecture"]["arch_kwargs"]
    problems = [f"{name}: satnet {ours}, nnU-Net {theirs}" for name, ours, theirs in (
        ("arch", f"{spec.arch}/{spec.skip}", "unet/org"), ("features", spec.features, arch["features_per_stage"]),
        ("kernel_sizes", spec.kernel_sizes, arch["kernel_sizes"]), ("strides", spec.strides, arch["strides"]),
        ("patch_size", list(patch), c["patch_size"]), ("norm", spec.norm, "instance"),
        ("convs_per_stage", spec.convs_per_stage or [2] * spec.num_stages, arch["n_conv_per_stage"]),
    ) if ours != theirs]
    if problems:
        raise SystemExit("the satnet configuration is not nnU-Net's network, so its weights cannot be ported: "
                         + "; ".join(problems) + " (plan it with `--spacing auto --skip org`)")


def port_checkpoint(satnet_checkpoint: Path, site, dataset_id: int, config: str, fold: int, name: str) -> Path:
    """Write nnU-Net's model folder with the satnet weights; return the folder (holding plans.json)."""
    ckpt = load_checkpoint(satnet_checkpoint)
    spec = NetworkSpec.from_dict(ckpt["network"])
    plans = json.loads(site.plans_file(dataset_id).read_text())
    satnet_plan = json.loads(ckpt["plans_json"])["configurations"][ckpt["config"]]
    check_same_network(spec, satnet_plan["patch_size"], plans, config)
    ours = ckpt["state_dict"]
    weights = {theirs: ours[key].clone() for theirs, key in nnunet_key_map(spec).items()}
    model_dir = site.results / site.dataset_name(dataset_id) / f"{TRAINER}__nnUNetPlans__{config}"
    (model_dir / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(site.plans_file(dataset_id), model_dir / "plans.json")
    (model_dir / "dataset.json").write_text(json.dumps(site.dataset_json(dataset_id), indent=2))
    torch.save({"network_weights": weights, "trainer_name": TRAINER, "current_epoch": ckpt["epoch"],
                "init_args": {"plans": plans, "configuration": config, "fold": fold,
                              "dataset_json": site.dataset_json(dataset_id)},
                "inference_allowed_mirroring_axes": (0, 1, 2), "optimizer_state": None, "grad_scaler_state": None,
                "logging": None, "_best_ema": None, "satnet_source": str(satnet_checkpoint)},
               model_dir / f"fold_{fold}" / name)
    return model_dir


def verify_port(satnet_checkpoint: Path, site, model_dir: Path, fold: int, name: str, seed: int = 0) -> float:
    """Largest |logit difference| between nnU-Net's network (its own code) and satnet's on one random patch."""
    ckpt = load_checkpoint(satnet_checkpoint)
    spec = NetworkSpec.from_dict(ckpt["network"])
    patch = json.loads(ckpt["plans_json"])["configurations"][ckpt["config"]]["patch_size"]
    network = build_network(spec).eval()
    network.load_state_dict(ckpt["state_dict"])
    x = torch.randn(1, spec.in_channels, *patch, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = network(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x.numpy())
        done = subprocess.run([str(site.tool("python")), "-c", _VERIFY, str(model_dir), str(fold), name,
                               str(Path(tmp) / "x.npy"), str(Path(tmp) / "y.npy")],
                              env=site.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nnU-Net could not run the ported weights:\n{done.stderr[-3000:]}")
        theirs = np.load(Path(tmp) / "y.npy", allow_pickle=False)
    return float(np.abs(ours - theirs).max())


def port_name(satnet_checkpoint: Path) -> str:
    """nnU-Net checkpoint file name for a satnet checkpoint (e.g. checkpoint_satnet_final.pth)."""
    return re.sub(r"^checkpoint_", "checkpoint_satnet_", satnet_checkpoint.stem) + ".pth"
