"""Online pseudo-Dice: the validation signal nnU-Net logs each epoch and picks checkpoint_best by.

Over an epoch's validation patches, true positives, false positives and false negatives are
summed per foreground class from argmax predictions, then Dice = 2 TP / (2 TP + FP + FN) per
class. It is "pseudo" because it is computed on patches, not whole cases. The exponential moving
average of its foreground mean (decay 0.9) smooths the epoch-to-epoch noise of a few patches.
"""
from __future__ import annotations

import math

import torch


class PseudoDice:
    """Accumulates TP / FP / FN per class over batches; `compute()` gives per-class Dice.

    update(prediction, target):
    - prediction: logits or probabilities, floating (B, K, *spatial), of which the argmax over K is
      taken; or integer labels shaped like target or like target without its channel axis.
    - target: labels (B, 1, *spatial) or (B, *spatial), values 0..K-1.
    Counting adds into a K x K confusion matrix: no one-hot tensors, no GPU sync until `compute()`.
    """

    def __init__(self, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one label), not {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)  # [target, prediction]

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        k = self.num_classes
        labels = prediction.argmax(1) if prediction.is_floating_point() else prediction  # (B, *spatial)
        if target.ndim == labels.ndim + 1:
            target = target[:, 0]
        if labels.shape != target.shape:
            raise ValueError(f"prediction labels {tuple(labels.shape)} and target {tuple(target.shape)} differ in shape")
        pairs = target.long().reshape(-1) * k + labels.long().reshape(-1)
        if self.confusion.device != pairs.device:  # accumulate where the predictions are
            self.confusion = self.confusion.to(pairs.device)
        # index_add_ rather than bincount: bincount reads the maximum back to size its output, a GPU sync
        self.confusion.view(-1).index_add_(0, pairs, torch.ones_like(pairs))

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(TP, FP, FN) per foreground class 1..K-1, int64 (K-1,)."""
        confusion = self.confusion.cpu()
        tp = confusion.diagonal()
        fp = confusion.sum(0) - tp
        fn = confusion.sum(1) - tp
        return tp[1:], fp[1:], fn[1:]

    def compute(self) -> list[float]:
        """Dice per foreground class 1..K-1; nan for a class absent from both targets and predictions."""
        tp, fp, fn = (c.double() for c in self.counts())
        dice = 2 * tp / (2 * tp + fp + fn)
        return dice.tolist()


def mean_ignoring_nan(values: list[float]) -> float:
    """Mean of the values that are not nan; nan when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


class ExponentialMovingAverage:
    """value <- decay * value + (1 - decay) * new; the first update sets it (nnU-Net's ema_fg_dice).

    nan updates (an epoch whose validation patches held no foreground at all) are skipped.
    """

    def __init__(self, decay: float = 0.9):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), not {decay}")
        self.decay = decay
        self.value: float | None = None

    def update(self, new: float) -> float | None:
        """Add one epoch's value and return the average (None until a non-nan value arrived)."""
        if not math.isnan(new):
            self.value = new if self.value is None else self.decay * self.value + (1 - self.decay) * new
        return self.value
