"""nnU-Net v2's training step at a satnet ORG U-Net's network, as nnUNetTrainer runs it.

Used by benchmarks/gpu_step_check.py (`run --nnunet`) to time nnU-Net beside satnet on the same
device in the same run; needs nnunetv2 and dynamic_network_architectures importable.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn


def nnunet_training_step(spec, patch, device: torch.device, make_batch: Callable[[list], dict]) -> dict:
    """nnU-Net v2's training step at the same network (an ORG U-Net of the plan), as nnUNetTrainer runs it:
    PlainConvUNet with He init, DC_and_CE_loss (batch Dice, no background) under deep supervision,
    SGD (lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5), fp16 autocast with a GradScaler on CUDA,
    gradient clipping at 12, cudnn.benchmark on. Its data loader is left out, as satnet's is.

    spec: an ORG U-Net's NetworkSpec; make_batch(shapes): the CPU batch {"data", "target"} for the
    spatial shapes of the deep-supervision outputs. Returns {"network", "optimizer", "step", "infer"}.
    """
    torch.backends.cudnn.benchmark = True
    n, three_d = spec.num_stages, spec.spatial_dims == 3

    def build():
        return PlainConvUNet(
            spec.in_channels, n, spec.features, nn.Conv3d if three_d else nn.Conv2d, spec.kernel_sizes, spec.strides,
            [2] * n, spec.num_classes, [2] * (n - 1), conv_bias=True,
            norm_op=nn.InstanceNorm3d if three_d else nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)

    with torch.device("meta"):
        shapes = [tuple(o.shape[2:]) for o in build()(torch.empty(1, spec.in_channels, *patch))]
    torch.manual_seed(0)
    network = build().to(device)
    network.apply(InitWeights_He(1e-2))
    weights = np.array([1 / 2**i for i in range(len(shapes))])
    weights[-1] = 0
    loss_fn = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                    {}, weight_ce=1, weight_dice=1, ignore_label=None,
                                                    dice_class=MemoryEfficientSoftDiceLoss), weights / weights.sum())
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    batch = make_batch(shapes)
    autocast = (lambda: torch.autocast(device.type, enabled=True)) if cuda else contextlib.nullcontext

    def step():
        data = batch["data"].to(device, non_blocking=True)
        target = [t.to(device, non_blocking=True) for t in batch["target"]]
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(network(data), target)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(network.parameters(), 12)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), 12)
            optimizer.step()
        return loss.detach()

    def infer():
        with torch.no_grad(), autocast():
            network.decoder.deep_supervision = False
            network(batch["data"][:1].to(device))

    return {"network": network, "optimizer": optimizer, "infer": infer, "step": step}
