"""End-to-end training runs on a tiny work folder: outputs, checkpoints, 2D, Adadelta, and user errors."""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch

from satnet.errors import ConfigError, InputError, MissingFileError
from satnet.io.checkpoints import REQUIRED_KEYS, load_checkpoint
from satnet.training.options import TrainOptions
from satnet.training.trainer import fold_dir_of, train
from satnet_testing import torch_threads
from tests.training.trainer_work_dir import make_work_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(epochs=2, iterations_per_epoch=2, val_iterations=1, workers=0, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A work folder (configurations 3d and 2d) whose 3d fold 0 was trained for 2 epochs. Copy to modify."""
    work_dir = make_work_dir(tmp_path_factory.mktemp("trained"), configs=("3d", "2d"))
    with torch_threads(1):
        train(work_dir, "3d", 0, TrainOptions(**TINY), progress_bar=False)
    return work_dir


def copy_of(work_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(work_dir, tmp_path / "copy"))


def test_a_run_writes_every_output_and_checkpoints_load_with_weights_only(trained):
    fold_dir = fold_dir_of(trained, "3d", 0)
    names = sorted(p.name for p in fold_dir.iterdir())
    assert names == ["checkpoint_best.pt", "checkpoint_final.pt", "checkpoint_latest.pt", "progress.png",
                     "training_log.json"]  # no temporary files left
    final = torch.load(fold_dir / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    for key in REQUIRED_KEYS + ("optimizer", "scheduler", "rng", "train_options", "best_ema_dice", "log"):
        assert key in final, key
    assert final["config"] == "3d" and final["fold"] == "0" and final["epoch"] == 2
    assert not any(k.startswith("module.") for k in final["state_dict"])
    assert json.loads(final["plans_json"]) == json.loads((trained / "plans.json").read_text())
    assert final["train_options"]["lr"] == 0.01 and final["train_options"]["init"] == "he"
    assert isinstance(final["rng"]["torch"], torch.Tensor)
    assert load_checkpoint(fold_dir / "checkpoint_best.pt")["epoch"] in (1, 2)
    assert (fold_dir / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_log_has_one_record_per_epoch(trained):
    log = json.loads((fold_dir_of(trained, "3d", 0) / "training_log.json").read_text())
    assert log["class_names"] == ["left", "right"]
    assert [r["epoch"] for r in log["epochs"]] == [0, 1]
    first, second = log["epochs"]
    assert first["lr"] == 0.01 and second["lr"] == pytest.approx(0.01 * 0.5**0.9)  # poly decay per epoch
    assert len(first["pseudo_dice"]) == 2 and set(first["gates_off"]) == {"skip0", "skip1"}
    assert all(isinstance(r["train_loss"], float) and r["seconds"] > 0 for r in log["epochs"])


def test_2d_configuration_with_adadelta_uses_the_sat_paper_settings(trained, tmp_path):
    work_dir = copy_of(trained, tmp_path)
    result = train(work_dir, "2d", "all", TrainOptions(**{**TINY, "epochs": 1}, optimizer="adadelta"),
                   progress_bar=False)
    o = result.options
    assert (o.lr, o.rho, o.eps, o.init, o.lr_schedule, o.weight_decay) == (1.0, 0.95, 1e-8, "glorot", "constant", 0.0)
    checkpoint = load_checkpoint(result.checkpoint_final)
    assert "acc_delta" in checkpoint["optimizer"]["state"][0]  # Adadelta's state, not SGD's momentum
    assert result.network.spec.spatial_dims == 2 and not result.network.training
    assert result.val_cases == sorted(result.val_cases) and len(result.val_cases) == 5  # fold "all"


def test_errors_for_missing_plans_and_preprocessed_data(trained, tmp_path):
    with pytest.raises(MissingFileError, match="plan-and-preprocess"):
        train(tmp_path / "empty", "3d", 0, TrainOptions(**TINY))
    work_dir = copy_of(trained, tmp_path)
    shutil.rmtree(work_dir / "preprocessed" / "2d")
    with pytest.raises(MissingFileError, match=r"preprocessed data of configuration '2d'.*plan-and-preprocess"):
        train(work_dir, "2d", 0, TrainOptions(**TINY))


def test_errors_for_unknown_configuration_and_fold(trained):
    with pytest.raises(ConfigError, match='did you mean "3d"'):
        train(trained, "3D", 0, TrainOptions(**TINY))
    with pytest.raises(ConfigError, match=r"fold must be 0\.\.4 or 'all', not 7"):
        train(trained, "3d", 7, TrainOptions(**TINY))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_cuda_is_an_error(trained):
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train(trained, "2d", 1, TrainOptions(**TINY, device="cuda"))


def test_a_new_run_does_not_overwrite_an_existing_one(trained):
    with pytest.raises(ConfigError, match="already holds a training run.*--resume"):
        train(trained, "3d", 0, TrainOptions(**TINY))


def test_resume_errors(trained, tmp_path):
    with pytest.raises(MissingFileError, match="Drop --resume"):
        train(trained, "3d", 1, TrainOptions(**TINY), resume=True)
    work_dir = copy_of(trained, tmp_path)
    other = fold_dir_of(work_dir, "2d", 0)
    other.mkdir(parents=True)
    shutil.copy(fold_dir_of(work_dir, "3d", 0) / "checkpoint_latest.pt", other / "checkpoint_latest.pt")
    with pytest.raises(ConfigError, match="belongs to configuration '3d', not '2d'"):
        train(work_dir, "2d", 0, TrainOptions(**TINY), resume=True)
    with pytest.raises(ConfigError, match=r"--lr 0.02 \(the checkpoint was trained with 0.01\)"):
        train(work_dir, "3d", 0, TrainOptions(**TINY, lr=0.02), resume=True)
    latest = fold_dir_of(work_dir, "3d", 0) / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(InputError, match="corrupt"):
        train(work_dir, "3d", 0, TrainOptions(**TINY), resume=True)


def test_resuming_a_finished_run_trains_more_epochs_only_when_asked(trained, tmp_path):
    work_dir = copy_of(trained, tmp_path)
    same = train(work_dir, "3d", 0, TrainOptions(**TINY), resume=True, progress_bar=False)
    assert same.epochs_completed == 2
    more = train(work_dir, "3d", 0, TrainOptions(**{**TINY, "epochs": 3}), resume=True, progress_bar=False)
    assert more.epochs_completed == 3
    log = json.loads((more.fold_dir / "training_log.json").read_text())
    assert [r["epoch"] for r in log["epochs"]] == [0, 1, 2]


def test_bf16_on_the_cpu_trains_3d_in_channels_last_and_saves_contiguous_weights(trained, tmp_path):
    work_dir = copy_of(trained, tmp_path)
    result = train(work_dir, "3d", 1, TrainOptions(**{**TINY, "epochs": 1}, precision="bf16"), progress_bar=False)
    convs = [m.weight for m in result.network.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3,) * 3]
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # (with one input channel both layouts coincide)
    final = load_checkpoint(result.checkpoint_final)
    assert final["train_options"]["precision"] == "bf16"
    assert all(t.is_contiguous() and t.dtype == torch.float32 for t in final["state_dict"].values())


def test_background_workers_train_and_are_stopped_at_the_end(trained, tmp_path):
    result = train(copy_of(trained, tmp_path), "3d", 2, TrainOptions(**{**TINY, "epochs": 1, "workers": 1}),
                   progress_bar=False)
    assert result.epochs_completed == 1 and result.options.workers == 1
    assert not multiprocessing.active_children()
