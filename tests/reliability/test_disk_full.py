"""A full disk (a write raising OSError ENOSPC) at the writes of each stage: one clear error naming the file,
exit code 1, no traceback, nothing half-written (no partial file, no temporary, no incomplete case), and the
rerun, with space again, completes."""
from __future__ import annotations

from pathlib import Path

from satnet.io.cases import list_cases
from satnet.io.images import read_label
from tests.reliability.faults import disk_full, hook_writes, stray_temporaries
from tests.reliability.sandbox import predict, run_cli


def assert_disk_full_error(result, command: str, file_name: str) -> None:
    assert result.code == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"satnet {command}: error: No space left on device"), result.stderr
    assert file_name in message and "the disk has space" in message and "Traceback" not in result.stderr


def test_preprocessing_keeps_only_complete_cases(bases, tmp_path, monkeypatch):
    work = tmp_path / "work"
    argv = ["plan-and-preprocess", bases["raw3d"], "-o", work, "--configs", "3d", "-j", "1", "-q"]
    hook_writes("*_seg.npy", 2, disk_full, monkeypatch.setattr)  # the second case's label, after its image
    assert_disk_full_error(run_cli(argv), "plan-and-preprocess", "case_001_seg.npy")
    (folder,) = (work / "preprocessed").iterdir()
    assert list_cases(folder) == ["case_000"] and stray_temporaries(work) == []
    assert sorted(p.name for p in folder.glob("*.npy")) == ["case_000.npy", "case_000_seg.npy"]  # no orphan
    monkeypatch.undo()
    assert run_cli(argv).code == 0 and list_cases(folder) == ["case_000", "case_001", "case_002"]


def test_prediction_keeps_only_complete_masks(setup, tmp_path, monkeypatch):
    images, work = setup
    out = tmp_path / "out"
    hook_writes("*.nii.gz", 2, disk_full, monkeypatch.setattr)
    result = run_cli(predict(images, out, work))
    assert_disk_full_error(result, "predict", str(out / "case_002.nii.gz"))
    assert sorted(p.name for p in out.iterdir()) == ["case_001.nii.gz", "predict_started.json"]
    assert read_label(out / "case_001.nii.gz")
    monkeypatch.undo()
    assert run_cli(predict(images, out, work, "--continue")).code == 0 and len(list(out.glob("*.nii.gz"))) == 4


def test_a_checkpoint_write_keeps_the_previous_checkpoint(bases, tmp_path, monkeypatch):
    import shutil

    work = Path(shutil.copytree(bases["work"], tmp_path / "work"))
    fold_dir = work / "results" / "3d" / "fold_0"
    before = (fold_dir / "checkpoint_latest.pt").read_bytes()
    hook_writes("checkpoint_latest.pt", 1, disk_full, monkeypatch.setattr)
    argv = ["train", work, "3d", "0", "--epochs", "2", "--resume", "--no-validation", "-q"]
    assert_disk_full_error(run_cli(argv), "train", "checkpoint_latest.pt")
    assert (fold_dir / "checkpoint_latest.pt").read_bytes() == before and stray_temporaries(fold_dir) == []
