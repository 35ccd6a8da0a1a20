"""DistributedDataParallel on the CPU: torchrun with 2 gloo processes trains one tiny epoch.

Run by the test through torchrun, this file is also the per-rank entry point (the `__main__` block).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from satnet.io.checkpoints import load_checkpoint
from satnet.planning.plans import load_plans
from satnet.training.loop import EpochPipelines
from satnet.training.options import TrainOptions
from satnet.training.trainer import _loss_functions, fold_dir_of, train
from tests.training.trainer_work_dir import make_work_dir

REPO = Path(__file__).resolve().parents[2]
OPTIONS = dict(epochs=1, iterations_per_epoch=2, val_iterations=1, workers=0, seed=0, device="cpu")


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights_and_write_one_set_of_outputs(tmp_path):
    work_dir = make_work_dir(tmp_path)
    resumed, uninterrupted = make_work_dir(tmp_path / "resumed"), make_work_dir(tmp_path / "uninterrupted")
    out = tmp_path / "ranks"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
               str(work_dir), str(out), str(resumed), str(uninterrupted)]
    # tests/ too: the ranks import tests.training.trainer_work_dir, which imports satnet_testing
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2 and rank0["batch_size"] == rank1["batch_size"] == 1
    for key, value in rank0["weights"].items():
        assert torch.equal(value, rank1["weights"][key]), key
    final = load_checkpoint(fold_dir_of(work_dir, "3d", 0) / "checkpoint_final.pt")
    assert all(torch.equal(final["state_dict"][k], v) for k, v in rank0["weights"].items())
    names = sorted(p.name for p in fold_dir_of(work_dir, "3d", 0).iterdir())
    assert names == ["checkpoint_best.pt", "checkpoint_final.pt", "checkpoint_latest.pt", "progress.png",
                     "training_log.json"]
    assert done.stderr.count("epoch 1/1: train") == 2  # only rank 0 logs: once per 1-epoch run (the first two)
    assert not torch.equal(rank0["torch_draws"], rank1["torch_draws"])  # dropout masks differ between the ranks
    # a run stopped after epoch 1 and resumed ends where the uninterrupted run does, on every rank: weights and
    # the torch stream (dropout masks) of rank 1, which is not checkpointed but restarts from (seed, epoch, rank)
    for r in (0, 1):
        stopped, straight = torch.load(out / f"resume{r}.pt", weights_only=True)
        assert torch.equal(stopped["torch_draws"], straight["torch_draws"]), f"rank {r}"
        for key, value in straight["weights"].items():
            assert torch.equal(stopped["weights"][key], value), (r, key)


def test_under_ddp_the_training_and_validation_losses_pool_the_batch_dice_over_the_ranks():
    for distributed in (False, True):
        train_loss, val_loss = _loss_functions(2, distributed)
        assert train_loss.loss.dice.distributed == val_loss.dice.distributed == distributed


def test_ranks_draw_different_patches(tmp_path):
    work_dir = make_work_dir(tmp_path)
    plan = load_plans(work_dir).configuration("3d")
    first = []
    for rank in (0, 1):
        pipelines = EpochPipelines(plan.data_dir(work_dir), ["case_00", "case_01"], ["case_02"], plan, workers=0,
                                   seed=0, rank=rank, outputs=2, start_epoch=0)
        pipelines.start_epoch(0)
        first.append(next(pipelines.train)["data"])
        pipelines.close()
    assert not torch.equal(*first)


def _rank_main(work_dir: str, out: str, resumed: str, uninterrupted: str) -> None:
    """One rank: train, then save what the test compares (not part of satnet's outputs); then 2 epochs at a constant
    learning rate, stopped after the first and resumed, and the same uninterrupted."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    result = train(work_dir, "3d", 0, TrainOptions(**OPTIONS), progress_bar=False)
    world_size = int(os.environ["WORLD_SIZE"])
    torch.save({"weights": result.network.state_dict(), "world_size": world_size,
                "batch_size": max(1, result.options.batch_size // world_size), "torch_draws": torch.rand(8)},
               Path(out) / f"rank{os.environ['RANK']}.pt")
    two = TrainOptions(**{**OPTIONS, "epochs": 2, "lr_schedule": "constant"})
    train(resumed, "3d", 0, two.replace(epochs=1), progress_bar=False)
    ends = []
    for folder, resume in ((resumed, True), (uninterrupted, False)):
        end = train(folder, "3d", 0, two, resume=resume, progress_bar=False)
        ends.append({"weights": end.network.state_dict(), "torch_draws": torch.rand(8)})  # where the stream stands
    torch.save(ends, Path(out) / f"resume{os.environ['RANK']}.pt")


if __name__ == "__main__":
    _rank_main(*sys.argv[1:5])
