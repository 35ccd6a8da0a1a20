"""Dice + CE loss, deep-supervision weights, online pseudo-Dice and its moving average."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from satnet.training.losses import DeepSupervisionLoss, DiceCELoss, SoftDiceLoss, deep_supervision_weights
from satnet.training.metrics import ExponentialMovingAverage, PseudoDice, mean_ignoring_nan


def _target(shape=(2, 1, 6, 7, 5), classes=3, seed=0) -> torch.Tensor:
    return torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(seed))


def _perfect_logits(target: torch.Tensor, classes: int = 3) -> torch.Tensor:
    return 30.0 * F.one_hot(target[:, 0], classes).movedim(-1, 1).float()


def test_perfect_prediction_gives_minus_one():
    target = _target()
    logits = _perfect_logits(target)
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(-1.0, abs=1e-5)
    assert DiceCELoss()(logits, target).item() == pytest.approx(-1.0, abs=1e-5)  # CE ~ 0
    assert SoftDiceLoss()(logits, target[:, 0]).item() == pytest.approx(-1.0, abs=1e-5)  # (B, *spatial) labels


def test_dice_matches_a_hand_computation():
    target = torch.tensor([[[0, 1, 1, 2]]])  # (B=1, 1, X=4), 2D-free 1D case is enough for the sums
    logits = torch.log(torch.tensor([[[0.5, 0.2, 0.1, 0.3], [0.25, 0.6, 0.8, 0.3], [0.25, 0.2, 0.1, 0.4]]]))
    probs = logits.softmax(1)[0]
    dice_1 = 2 * (probs[1, 1] + probs[1, 2]) / (2 + probs[1].sum())
    dice_2 = 2 * probs[2, 3] / (1 + probs[2].sum())
    expected = -(dice_1 + dice_2) / 2  # background excluded
    assert SoftDiceLoss(smooth=0.0)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    ce = F.cross_entropy(logits, target[:, 0])
    assert DiceCELoss(smooth=0.0)(logits, target).item() == pytest.approx((expected + ce).item(), rel=1e-6)


def test_batch_dice_pools_the_batch():
    target = _target(seed=1)
    logits = torch.randn(2, 3, 6, 7, 5, generator=torch.Generator().manual_seed(2))
    pooled, per_sample = SoftDiceLoss(batch_dice=True)(logits, target), SoftDiceLoss(batch_dice=False)(logits, target)
    assert not torch.isclose(pooled, per_sample)
    half = SoftDiceLoss(batch_dice=True)(logits[:1], target[:1])
    assert SoftDiceLoss(batch_dice=False)(logits[:1], target[:1]).item() == pytest.approx(half.item())


def _ddp_dice_rank(rank: int, world: int, store: str, out: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """One gloo rank: DiceCELoss(distributed=True) on its part of the batch; saves the loss and its gradient."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        part = slice(rank * len(logits) // world, (rank + 1) * len(logits) // world)
        mine = logits[part].clone().requires_grad_(True)
        loss = DiceCELoss(distributed=True)(mine, target[part])
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": mine.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_under_ddp_the_batch_dice_is_the_global_batchs(tmp_path):
    # 4 samples on 2 ranks; label 2 only in the first two, so rank 1 alone has none of it
    target = _target((4, 1, 5, 4, 3), classes=2, seed=3)
    target[:2, 0, 0, 0, :2] = 2
    logits = torch.randn(4, 3, 5, 4, 3, generator=torch.Generator().manual_seed(4))
    reference = logits.clone().requires_grad_(True)
    expected = DiceCELoss()(reference, target)  # one process, the whole batch
    expected.backward()
    torch.multiprocessing.spawn(_ddp_dice_rank, args=(2, str(tmp_path / "store"), str(tmp_path), logits, target),
                                nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # the mean over the ranks is the logged loss; DDP averages the ranks' gradients
    assert ((ranks[0]["loss"] + ranks[1]["loss"]) / 2).item() == pytest.approx(expected.item(), rel=1e-5)
    grad = torch.cat([r["grad"] for r in ranks]) / 2
    assert torch.allclose(grad, reference.grad, rtol=1e-4, atol=1e-7)


def test_gradients_are_finite_under_bf16_autocast():
    target = _target((2, 1, 8, 8), classes=2)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    image = torch.randn(2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        assert logits.dtype == torch.bfloat16
        loss = DiceCELoss()(logits, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_deep_supervision_weights():
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(2) == [1.0, 0.0]
    assert deep_supervision_weights(1) == [1.0]


def test_deep_supervision_loss_is_the_weighted_sum():
    full, half, quarter = _target((2, 1, 8, 8)), _target((2, 1, 4, 4), seed=1), _target((2, 1, 2, 2), seed=2)
    outputs = [torch.randn(2, 3, s, s, requires_grad=True) for s in (8, 4, 2)]
    loss = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(3))(outputs, [full, half, quarter])
    base = DiceCELoss()
    expected = 2 / 3 * base(outputs[0], full) + 1 / 3 * base(outputs[1], half)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert outputs[2].grad is None  # weight 0: never evaluated
    with pytest.raises(ValueError, match="3 outputs"):
        DeepSupervisionLoss(DiceCELoss(), [0.5, 0.5, 0.0])(outputs[:2], [full, half])


def test_pseudo_dice_counts_over_batches():
    metric = PseudoDice(num_classes=3)
    target = torch.tensor([[[0, 1, 1, 2, 0]]])  # (B, 1, X)
    prediction = torch.tensor([[[0, 1, 0, 1, 0]]])
    logits = 5.0 * F.one_hot(prediction[:, 0], 3).movedim(-1, 1).float()
    metric.update(logits, target)
    metric.update(prediction, target)  # labels are accepted too
    tp, fp, fn = metric.counts()
    assert tp.tolist() == [2, 0] and fp.tolist() == [2, 0] and fn.tolist() == [2, 2]
    dice = metric.compute()
    assert dice[0] == pytest.approx(0.5) and dice[1] == 0.0
    metric.reset()
    metric.update(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 1, 4, dtype=torch.long))
    assert all(math.isnan(d) for d in metric.compute())  # no foreground anywhere
    assert mean_ignoring_nan([0.5, math.nan, 1.0]) == 0.75 and math.isnan(mean_ignoring_nan([math.nan]))


def test_exponential_moving_average():
    ema = ExponentialMovingAverage(0.9)
    assert ema.update(math.nan) is None
    assert ema.update(0.5) == 0.5
    assert ema.update(1.0) == pytest.approx(0.55)
    assert ema.update(math.nan) == pytest.approx(0.55)
