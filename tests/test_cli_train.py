"""`satnet train` end to end on the CPU: plan-and-preprocess a synthetic dataset, train, check the outputs;
flag and user errors give exit codes 2 and 1 with clear messages."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from satnet.cli import main
from satnet.io.checkpoints import load_checkpoint
from satnet.planning.plans import load_plans, save_plans

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_FLAGS = ["--epochs", "2", "--iterations-per-epoch", "2", "--val-iterations", "1", "--workers", "0", "--seed", "0"]


@pytest.fixture(scope="module")
def work_dir(dataset_3d, tmp_path_factory) -> Path:
    """dataset_3d planned and preprocessed (3d only), its network shrunk to 2 stages of 4 and 8 features."""
    work_dir = tmp_path_factory.mktemp("cli_train") / "work"
    assert main(["plan-and-preprocess", str(dataset_3d), "-o", str(work_dir), "--configs", "3d", "-j", "1", "-q"]) == 0
    plans = load_plans(work_dir)
    plan = plans.configurations["3d"]
    stride = [2 if p >= 8 else 1 for p in plan.patch_size]
    plan.network = plan.network.replace(features=[4, 8], kernel_sizes=plan.network.kernel_sizes[:2],
                                        strides=[[1, 1, 1], stride], convs_per_stage=None)
    plan.patch_size = [min(p, 16) // s * s for p, s in zip(plan.patch_size, stride)]
    plan.batch_size = 2
    save_plans(plans, work_dir)
    return work_dir


def test_plan_preprocess_then_train_writes_a_finished_fold(work_dir, capsys):
    assert main(["train", str(work_dir), "3d", "0", *TINY_FLAGS]) == 0
    fold_dir = work_dir / "results" / "3d" / "fold_0"
    assert f"trained 3d fold 0 for 2 epochs (4 iterations): {fold_dir}" in capsys.readouterr().out
    final = torch.load(fold_dir / "checkpoint_final.pt", weights_only=True)
    assert final["epoch"] == 2 and final["network"] == load_plans(work_dir).configurations["3d"].network.to_dict()
    assert len(json.loads((fold_dir / "training_log.json").read_text())["epochs"]) == 2
    assert (fold_dir / "progress.png").is_file() and (fold_dir / "checkpoint_best.pt").is_file()
    # --resume with more epochs continues the same run
    assert main(["train", str(work_dir), "3d", "0", *TINY_FLAGS, "--epochs", "3", "--resume"]) == 0
    assert load_checkpoint(fold_dir / "checkpoint_final.pt")["epoch"] == 3


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "argument --epochs: must be a positive integer, not '0'"),
    (["--lr", "-1"], "argument --lr: must be a positive finite number, not '-1'"),
    (["--momentum", "1.5"], "argument --momentum: must be a number in [0, 1], not '1.5'"),
    (["--optimizer", "adam"], "argument --optimizer: must be one of sgd, adadelta, not 'adam'"),
    (["--precision", "bf61"], 'did you mean "bf16"'),
    (["--device", "gpu"], "argument --device: must be one of auto, cpu, cuda, not 'gpu'"),
])
def test_bad_flag_values_exit_2_naming_the_flag(work_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(work_dir), "3d", "0", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["3D", "1"], 'unknown configuration "3D" (did you mean "3d"?)'),
    (["3d", "9"], "fold must be 0..2 or 'all', not 9"),
    (["3d", "1", "--resume"], "Drop --resume to start training fold 1 from scratch"),
])
def test_user_errors_exit_1_with_the_fix(work_dir, capsys, args, message):
    assert main(["train", str(work_dir), *args, *TINY_FLAGS]) == 1
    err = capsys.readouterr().err
    assert err.startswith("satnet train: error: ") and message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_validation_only_runs_on_the_device_asked_for(work_dir, capsys):
    # it loaded the checkpoint onto the CPU whatever --device said
    assert main(["train", str(work_dir), "3d", "0", "--validation-only", "--device", "cuda"]) == 1
    assert "--device cuda, but PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_validation_only_refuses_the_training_flags_it_would_ignore(work_dir, capsys):
    assert main(["train", str(work_dir), "3d", "0", "--validation-only", "--epochs", "5", "--no-validation"]) == 1
    err = capsys.readouterr().err
    assert "--validation-only predicts" in err and "--epochs, --no-validation would do nothing: drop them" in err


def test_missing_plans_say_to_run_plan_and_preprocess(tmp_path, capsys):
    assert main(["train", str(tmp_path), "3d", "0"]) == 1
    assert "run `satnet plan-and-preprocess" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["plan-and-preprocess", "plan", "preprocess"])
@pytest.mark.parametrize("inside, where", [
    ("imagesTr", "is the raw dataset's imagesTr folder"),
    ("labelsTr/work", "is inside the raw dataset's labelsTr folder"),
    ("imagesTs", "is the raw dataset's imagesTs folder"),
    (".", "is the raw dataset folder itself"),
])
def test_a_work_folder_among_the_raw_files_is_refused(dataset_3d, tmp_path, capsys, command, inside, where):
    # Before, `-o RAW/imagesTr` was accepted and plans and preprocessed data were written among the raw files.
    raw = tmp_path / "raw"
    shutil.copytree(dataset_3d, raw)
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    assert main([command, str(raw), "-o", str(raw / inside), "--configs", "3d", "-j", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert f"satnet {command}: error: work folder {raw / inside} (-o) {where}" in err, err
    assert f"give -o a folder other than {raw.resolve()}" in err
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before
