"""`satnet predict`, `satnet evaluate` and `satnet find-best` through satnet.cli.main, in-process.

The end-to-end test runs plan-and-preprocess on a synthetic dataset, saves freshly initialised
checkpoints for every fold (no trainer needed), predicts each fold's validation cases as
training will (predict_preprocessed_cases), runs find-best, and then the predict command it
prints, and evaluate.
"""
from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest

from satnet.cli import main
from satnet.errors import ConfigError
from satnet.evaluation.evaluate import evaluate_folders
from satnet.inference.folder import predict_folder
from satnet.inference.models import load_configuration, results_dir
from satnet.inference.predictor import InferenceSettings, predict_preprocessed_cases
from satnet.io.images import read_image, read_label
from satnet.planning.splits import load_splits
from satnet.synthetic import make_dataset_3d
from satnet_testing import interrupted_on_call
from tests.inference.fakes import add_checkpoint, make_work_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_dataset_3d(tmp_path_factory.mktemp("raw") / "Dataset900_Synth3D", num_cases=3, num_test=2)


@pytest.fixture(scope="module")
def tiny_work(tmp_path_factory):
    work = make_work_dir(tmp_path_factory.mktemp("tiny"))
    add_checkpoint(work, "3d", 0, seed=0)
    return work


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_validate_find_best_predict_evaluate(raw, tmp_path, capsys):
    work = tmp_path / "work"
    assert run(capsys, "plan-and-preprocess", raw, "-o", work, "-j", "1", "--configs", "3d", "-q")[0] == 0
    splits = load_splits(work)
    for k, fold in enumerate(splits.folds):  # what training does at the end of each fold
        add_checkpoint(work, "3d", k, seed=k)
        models = load_configuration(work, "3d", folds=[str(k)])
        validation = results_dir(work, "3d") / f"fold_{k}" / "validation"
        report = predict_preprocessed_cases(models.networks, models.plan, models.plan.data_dir(work), fold.val,
                                            validation, ".nii.gz", settings=InferenceSettings(mirror=False))
        assert report.predicted == fold.val
        summary = evaluate_folders(work / "gt_segmentations", validation, case_ids=fold.val,
                                   output=validation / "summary.json")
        assert summary["num_cases"] == len(fold.val) and (validation / "summary.json").is_file()

    code, out, _ = run(capsys, "find-best", work, "-j", "1")
    assert code == 0 and "1. 3d:" in out
    command = out.strip().splitlines()[-1].strip()
    assert command == f"satnet predict -i INPUT_DIR -o OUTPUT_DIR -m {work} -c 3d"
    assert (work / "results" / "3d" / "postprocessing.json").is_file()

    argv = shlex.split(command.replace("INPUT_DIR", str(raw / "imagesTs")).replace("OUTPUT_DIR", str(tmp_path / "out")))
    code, out, err = run(capsys, *argv[1:], "--threads", "1", "--save-probabilities")
    assert code == 0 and "predicted 2 case(s)" in out and "postprocessing from" in err
    for case in ("case_003", "case_004"):
        seg, geometry = read_label(tmp_path / "out" / f"{case}.nii.gz")
        assert geometry == read_image([raw / "imagesTs" / f"{case}_0000.nii.gz"])[1] and seg.dtype == np.uint8
        assert np.load(tmp_path / "out" / f"{case}.npz")["probabilities"].shape == (3, *seg.shape)

    code, out, _ = run(capsys, "evaluate", raw / "labelsTs", tmp_path / "out", "-j", "1")
    assert code == 0 and "1 (object1)" in out and "case_004" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_cases"] == 2 and summary["labels"] == [1, 2]


def test_a_corrupt_case_makes_predict_exit_non_zero_naming_it(raw, tiny_work, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(raw / "imagesTs", images)
    (images / "case_003_0000.nii.gz").write_bytes(b"not an image")
    code, out, err = run(capsys, "predict", "-i", images, "-o", tmp_path / "out", "-m", tiny_work, "--no-tta",
                         "--threads", "1")
    assert code == 1 and "predicted 1 case(s)" in out
    assert "1 case(s) could not be predicted" in err and "- case_003: " in err and "--continue" in err
    assert (tmp_path / "out" / "case_004.nii.gz").is_file() and "Traceback" not in err


def test_a_folder_in_the_way_of_a_mask_is_named_not_the_temporary_file(raw, tiny_work, tmp_path, capsys):
    # Before, the error named the hidden temporary file (OUT/.case_003.nii.gz.xxxx.tmp/case_003.nii.gz).
    out = tmp_path / "out"
    (out / "case_003.nii.gz").mkdir(parents=True)
    code, _, err = run(capsys, "predict", "-i", raw / "imagesTs", "-o", out, "-m", tiny_work, "--no-tta",
                       "--threads", "1", "--overwrite")  # without it, predict refuses to replace what it did not write
    assert code == 1 and f"satnet predict: error: Is a directory ({out / 'case_003.nii.gz'});" in err, err
    assert ".tmp" not in err and "Traceback" not in err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_evaluate_output_that_is_a_folder_is_named(raw, tmp_path, capsys):
    # Before: "Is a directory (OUT/.summary.json.xxxx.tmp)", the temporary file's name.
    summary = tmp_path / "summary.json"
    summary.mkdir()
    code, _, err = run(capsys, "evaluate", raw / "labelsTs", raw / "labelsTs", "-o", summary, "-j", "1")
    assert code == 1 and f"satnet evaluate: error: Is a directory ({summary});" in err, err
    assert ".tmp" not in err and list(tmp_path.iterdir()) == [summary]


@pytest.mark.parametrize("flag, value, expected", [
    ("--part", "2/2", "argument --part: must be I/N with integers 0 <= I < N"),
    ("--step", "1.5", "argument --step: must be a number in (0, 1]"),
    ("--precision", "bf61", "argument --precision: must be one of fp32, bf16, not 'bf61' (did you mean \"bf16\"?)"),
    ("--checkpoint", "latest", "argument --checkpoint: must be one of final, best"),
    ("-f", "one", "argument -f/--folds: must be a fold number"),
    ("--device", "gpu", "argument --device: must be one of auto, cpu, cuda"),
])
def test_bad_flag_values_are_argparse_errors_naming_the_flag(raw, tiny_work, tmp_path, capsys, flag, value, expected):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-i", str(raw / "imagesTs"), "-o", str(tmp_path), "-m", str(tiny_work), flag, value])
    assert exc.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected", [
    (["-f", "0", "2"], "fold 2: .* not found; train it with `satnet train .* 3d 2`"),
    (["-c", "3dd"], 'unknown configuration "3dd" \\(did you mean "3d"\\?\\)'),
])
def test_model_errors_are_one_clear_message(raw, tiny_work, tmp_path, capsys, extra, expected):
    code, _, err = run(capsys, "predict", "-i", raw / "imagesTs", "-o", tmp_path, "-m", tiny_work, *extra)
    assert code == 1 and "Traceback" not in err
    assert __import__("re").search(expected, err)


def test_empty_input_folder_and_wrong_channel_count(raw, tiny_work, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "-i", tmp_path / "empty", "-o", tmp_path / "out", "-m", tiny_work)
    assert code == 1 and "is empty: put the files there named {case}_0000.nii.gz" in err
    two_channels = tmp_path / "two"
    shutil.copytree(raw / "imagesTs", two_channels)
    for case in ("case_003", "case_004"):
        shutil.copy(two_channels / f"{case}_0000.nii.gz", two_channels / f"{case}_0001.nii.gz")
    code, _, err = run(capsys, "predict", "-i", two_channels, "-o", tmp_path / "out", "-m", tiny_work)
    assert code == 1 and "case_003_0001.nii.gz: is channel 1, but the model takes 1 channel(s)" in err


def test_continue_and_part_through_the_cli(raw, tiny_work, tmp_path, capsys):
    common = ["predict", "-i", raw / "imagesTs", "-o", tmp_path, "-m", tiny_work, "--no-tta", "--threads", "1"]
    code, out, _ = run(capsys, *common, "--part", "1/2")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "case_004.nii.gz", "predict_started.json", "predict_summary_part1of2.json"]
    before = (tmp_path / "case_004.nii.gz").stat().st_mtime_ns
    code, out, _ = run(capsys, *common, "--continue")
    assert code == 0 and "predicted 1 case(s)" in out and "(1 already there, skipped)" in out
    assert (tmp_path / "case_004.nii.gz").stat().st_mtime_ns == before and (tmp_path / "case_003.nii.gz").is_file()


def test_find_best_without_trained_folds_says_what_to_train(tiny_work, capsys):
    from satnet.planning.splits import make_splits, save_splits

    save_splits(make_splits(["a", "b", "c"]), tiny_work)
    (tiny_work / "gt_segmentations").mkdir(exist_ok=True)
    code, _, err = run(capsys, "find-best", tiny_work, "-j", "1")
    assert code == 1 and "no configuration has validation outputs for all 3 folds" in err
    assert f"train them with `satnet train {tiny_work} 3d 1`; `satnet train {tiny_work} 3d 2`" in err
    assert f"`satnet train {tiny_work} 3d 0 --validation-only`" in err  # fold 0 has its checkpoint_final.pt


def _bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_refuses_the_raw_datasets_own_folders(raw, tiny_work, tmp_path, capsys):
    copy = shutil.copytree(raw, tmp_path / raw.name)
    for folder, extra in ((copy / "labelsTs", []), (copy / "labelsTr", ["--overwrite"]), (copy, ["--overwrite"])):
        before = _bytes(folder)  # the audit's `-o RAW/labelsTs` replaced its reference labels
        code, _, err = run(capsys, "predict", "-i", copy / "imagesTs", "-o", folder, "-m", tiny_work, *extra)
        assert code == 1 and f"-o {folder} is a folder of the raw dataset {copy} (beside its dataset.json)" in err
        assert "choose another -o" in err and _bytes(folder) == before


def test_predict_replaces_no_file_it_did_not_write(raw, tiny_work, tmp_path, capsys):
    out = shutil.copytree(raw / "labelsTs", tmp_path / "references")  # the audit's RAW/labelsTs, moved elsewhere
    before = _bytes(out)
    common = ["predict", "-i", raw / "imagesTs", "-o", out, "-m", tiny_work, "--no-tta", "--threads", "1"]
    code, _, err = run(capsys, *common)
    assert code == 1 and f"-o {out} already holds case_003.nii.gz and 1 more file(s)" in err
    assert "which satnet predict did not write" in err and "--overwrite" in err and "Traceback" not in err
    assert _bytes(out) == before
    (out / "case_003.nii.gz").unlink()  # one left: --continue skips it, the other case is written
    code, out_text, _ = run(capsys, *common, "--continue")
    assert code == 0 and "predicted 1 case(s)" in out_text and (out / "case_004.nii.gz").read_bytes() == before[
        "case_004.nii.gz"]
    other = shutil.copytree(raw / "labelsTs", tmp_path / "other")
    code, _, err = run(capsys, *common[:4], other, *common[5:], "--save-probabilities", "--continue")
    assert code == 1 and "already holds case_003.nii.gz" in err  # its .npz is missing: the mask would be replaced
    assert run(capsys, *common[:4], other, *common[5:], "--overwrite")[0] == 0
    assert _bytes(other)["case_003.nii.gz"] != before["case_003.nii.gz"]


def test_predict_reruns_into_its_own_folder_after_an_interruption(raw, tiny_work, tmp_path, capsys, monkeypatch):
    import satnet.inference.folder as folder

    monkeypatch.setattr(folder, "write_case", interrupted_on_call(folder.write_case, 2))  # at the second mask
    common = ["predict", "-i", raw / "imagesTs", "-o", tmp_path, "-m", tiny_work, "--no-tta", "--threads", "1"]
    assert run(capsys, *common)[0] == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_003.nii.gz", "predict_started.json"]
    monkeypatch.undo()
    code, out, _ = run(capsys, *common, "--continue")
    assert code == 0 and "predicted 1 case(s)" in out and "(1 already there, skipped)" in out
    code, out, _ = run(capsys, *common)  # without --continue: its own masks are replaced
    assert code == 0 and "predicted 2 case(s)" in out


def test_a_configuration_given_twice_is_refused(raw, tiny_work, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # by the flag (as -f), since this session
        run(capsys, "predict", "-i", raw / "imagesTs", "-o", tmp_path / "out", "-m", tiny_work, "-c", "3d", "3d")
    assert exit_info.value.code == 2 and "3d is given more than once (3d 3d)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"-c names 3d more than once \(3d 3d\); give each configuration once"):
        predict_folder(raw / "imagesTs", tmp_path / "out", tiny_work, configs=["3d", "3d"])  # the Python API too
    assert not (tmp_path / "out").exists()
