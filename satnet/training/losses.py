"""Training losses: nnU-Net's soft Dice + cross-entropy, and the deep-supervision wrapper.

Shapes: logits (B, K, *spatial) for K classes (background included), targets (B, 1, *spatial)
or (B, *spatial) of integer labels 0..K-1 (any integer or float dtype holding whole numbers).

Sign convention (nnU-Net's): the Dice term is the negative soft Dice, in [-1, 0], so a perfect
prediction gives Dice loss -1 and Dice + CE loss -1 + CE ~ -1. Logged losses are then comparable
with nnU-Net's, and lower is better throughout.

Losses are computed in float32 with autocast disabled: under bf16 autocast the logits arrive in
bf16, whose 8-bit mantissa would otherwise round the sums over a patch's voxels.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from satnet.errors import ConfigError
from satnet.training.distributed import differentiable_sum_over_ranks


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer labels (B, *spatial) as int64 from target (B, 1, *spatial) or (B, *spatial)."""
    if target.ndim == logits.ndim:
        target = target[:, 0]
    return target.long()


class SoftDiceLoss(nn.Module):
    """Negative soft Dice on softmax probabilities (nnU-Net's MemoryEfficientSoftDiceLoss).

    - batch_dice: sum intersections and volumes over the whole batch before dividing (one Dice per
      class per batch), as nnU-Net does for 3D full-resolution; False gives one Dice per sample.
    - include_background: nnU-Net leaves class 0 out of the Dice term (cross-entropy covers it).
    - smooth: added to numerator and denominator, so the loss stays finite when a class is absent.
    - distributed: with batch_dice under DDP, sum the batch's intersections and volumes over the
      ranks too (nnU-Net's ddp=True), so the Dice is that of the global batch, not one per rank's
      part (with one sample per rank that would be per-sample Dice). The sums keep their gradient,
      which comes back summed over the ranks; DDP's averaging then gives the global batch's.
      A no-op without an initialised process group.
    """

    def __init__(
        self, batch_dice: bool = True, include_background: bool = False, smooth: float = 1e-5,
        distributed: bool = False,
    ):
        super().__init__()
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.smooth = smooth
        self.distributed = distributed

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            probs = torch.softmax(logits.float(), dim=1)  # (B, K, *spatial)
            labels = _labels(target, logits)  # (B, *spatial)
            axes = tuple(range(2, logits.ndim))
            with torch.no_grad():
                # bool: the product below keeps it for backward, at 1 byte a voxel instead of 4 (the same
                # values as a float one-hot; satnet.planning.memory models this loss)
                onehot = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
                onehot.scatter_(1, labels.unsqueeze(1), True)
                if not self.include_background:
                    onehot = onehot[:, 1:]
                volume_target = onehot.sum(axes)  # (B, K')
            if not self.include_background:
                probs = probs[:, 1:]
            intersection = (probs * onehot).sum(axes)  # (B, K')
            volume_pred = probs.sum(axes)
            if self.batch_dice:
                # (3, K'): one collective for all three; the float volume rounds as the sum below would
                sums = torch.stack([intersection.sum(0), volume_pred.sum(0), volume_target.sum(0).to(probs.dtype)])
                if self.distributed:
                    sums = differentiable_sum_over_ranks(sums)
                intersection, volume_pred, volume_target = sums
            dice = (2 * intersection + self.smooth) / (volume_target + volume_pred + self.smooth).clamp_min(1e-8)
            return -dice.mean()


class DiceCELoss(nn.Module):
    """weight_dice * SoftDiceLoss + weight_ce * mean voxel cross-entropy (nnU-Net: 1 and 1).

    distributed: see SoftDiceLoss. The cross-entropy needs nothing: each rank's is the mean over
    as many voxels, so DDP's average of the ranks' gradients is the global batch's.
    """

    def __init__(
        self, weight_dice: float = 1.0, weight_ce: float = 1.0, batch_dice: bool = True, smooth: float = 1e-5,
        distributed: bool = False,
    ):
        super().__init__()
        self.dice = SoftDiceLoss(batch_dice=batch_dice, include_background=False, smooth=smooth,
                                 distributed=distributed)
        self.weight_dice = weight_dice
        self.weight_ce = weight_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            ce = F.cross_entropy(logits.float(), _labels(target, logits))
            return self.weight_dice * self.dice(logits, target) + self.weight_ce * ce


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's weights for outputs full resolution first: 1 / 2**i, the lowest resolution 0, sum 1.

    The lowest-resolution output gets no weight (nnU-Net: too coarse to help); a single output
    gets weight 1. E.g. 4 outputs -> [4/7, 2/7, 1/7, 0].
    """
    if num_outputs < 1:
        raise ConfigError(f"num_outputs must be at least 1, not {num_outputs}")
    weights = [1.0 / 2**i for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of `loss` over network outputs and targets, full resolution first.

    forward(outputs, targets): outputs a sequence of logits (B, K, *spatial_i), targets the
    matching sequence of labels (B, 1, *spatial_i), as the training pipeline yields them. Outputs
    with weight 0 are not evaluated.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]):
        super().__init__()
        self.loss = loss
        self.weights = [float(w) for w in weights]

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(outputs) != len(self.weights) or len(targets) != len(self.weights):
            raise ValueError(
                f"deep supervision expects {len(self.weights)} outputs and targets, got {len(outputs)} and {len(targets)}"
            )
        terms = [w * self.loss(o, t) for w, o, t in zip(self.weights, outputs, targets) if w != 0.0]
        return torch.stack(terms).sum()
