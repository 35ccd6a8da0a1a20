"""Folder evaluation on hand-made masks whose Dice, FPR and FNR are worked out by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from satnet.errors import InputError
from satnet.evaluation.evaluate import evaluate_folders, format_table

SHAPE = (2, 4, 5)  # 40 voxels


def write(path, array, spacing=(3.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0)):
    """A (Z, Y, X) uint8 label file; spacing and origin in (Z, Y, X) order."""
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.uint8))
    image.SetSpacing(list(reversed(spacing)))
    image.SetOrigin(list(reversed(origin)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def masks():
    """case a: label 1 has 4 reference voxels, 2 of them predicted plus 2 false positives; label 2 absent
    from both. case b: label 1 perfect (3 voxels); label 2: 2 reference voxels, none predicted."""
    ref_a, pred_a = np.zeros(SHAPE), np.zeros(SHAPE)
    ref_a[0, 0, :4] = 1
    pred_a[0, 0, :2] = 1
    pred_a[1, 3, 3:5] = 1
    ref_b, pred_b = np.zeros(SHAPE), np.zeros(SHAPE)
    ref_b[1, 1, :3] = pred_b[1, 1, :3] = 1
    ref_b[0, 2, :2] = 2
    return {"a": (ref_a, pred_a), "b": (ref_b, pred_b)}


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2}, "numTraining": 2,
        "file_ending": ".nii.gz"}))
    for case, (ref, pred) in masks().items():
        write(tmp_path / "labelsTr" / f"{case}.nii.gz", ref)
        write(tmp_path / "pred" / f"{case}.nii.gz", pred)
    return tmp_path / "labelsTr", tmp_path / "pred"


def test_hand_checked_metrics_and_summary_file(folders, tmp_path):
    summary = evaluate_folders(*folders, output=tmp_path / "summary.json")
    assert summary["labels"] == [1, 2] and summary["label_names"] == {"1": "liver", "2": "tumour"}
    a, b = ({k: v for k, v in r["metrics"].items()} for r in summary["per_case"])
    assert a["1"]["dice"] == pytest.approx(2 * 2 / (4 + 4))  # TP 2, FP 2, FN 2
    assert a["1"]["fnr"] == pytest.approx(2 / 4) and a["1"]["fpr"] == pytest.approx(2 / 36)
    assert a["2"]["dice"] is None and a["2"]["fnr"] is None and a["2"]["fpr"] == 0  # absent from both
    assert b["1"]["dice"] == 1 and b["2"]["dice"] == 0 and b["2"]["fnr"] == 1
    assert a["1"]["reference_volume_mm3"] == 4 * 3.0
    per_class = summary["per_class"]
    assert per_class["1"]["dice"]["mean"] == pytest.approx(0.75)
    assert per_class["1"]["dice"]["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert per_class["2"]["dice"] == {"mean": 0.0, "std": None, "count": 1}  # case a has no Dice for label 2
    assert summary["mean"]["dice"] == pytest.approx((0.75 + 0.0) / 2)
    assert summary["missing_predictions"] == [] and summary["unmatched_predictions"] == []
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    table = format_table(summary)
    assert "0.5000" in table and "0.7500 +- 0.3536" in table and "1 (liver)" in table


def test_geometry_mismatch_is_an_error_naming_the_case(folders):
    reference_dir, prediction_dir = folders
    write(prediction_dir / "b.nii.gz", masks()["b"][1], spacing=(3.0, 1.2, 1.0))
    with pytest.raises(InputError, match=r"- b: spacing \(3, 1, 1\) vs \(3, 1.2, 1\)"):
        evaluate_folders(reference_dir, prediction_dir)
    write(prediction_dir / "b.nii.gz", masks()["b"][1][:, :3])
    with pytest.raises(InputError, match=r"- b: shape \(Z, Y, X\) \(2, 4, 5\) vs \(2, 3, 5\)"):
        evaluate_folders(reference_dir, prediction_dir)


def test_missing_and_unmatched_predictions_are_reported(folders):
    reference_dir, prediction_dir = folders
    (prediction_dir / "b.nii.gz").rename(prediction_dir / "c.nii.gz")
    (prediction_dir / "summary.json").write_text("{}")  # not a prediction
    summary = evaluate_folders(reference_dir, prediction_dir)
    assert summary["num_cases"] == 1 and [r["case"] for r in summary["per_case"]] == ["a"]
    assert summary["missing_predictions"] == ["b"] and summary["unmatched_predictions"] == ["c"]
    assert "1 reference(s) without a prediction, left out: b" in format_table(summary)


def test_case_ids_restrict_the_references(folders):
    summary = evaluate_folders(*folders, case_ids=["b"])
    assert [r["case"] for r in summary["per_case"]] == ["b"] and summary["missing_predictions"] == []


def test_labels_default_to_the_values_present_without_dataset_json(folders):
    reference_dir, prediction_dir = folders
    (reference_dir.parent / "dataset.json").unlink()
    assert evaluate_folders(reference_dir, prediction_dir)["labels"] == [1, 2]
    assert evaluate_folders(reference_dir, prediction_dir, labels=[2])["labels"] == [2]


def test_no_matching_prediction_is_an_error(folders, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no prediction in .* matches a reference"):
        evaluate_folders(folders[0], empty)


def test_workers_give_the_same_summary(folders):
    one, two = (evaluate_folders(*folders, workers=w) for w in (1, 2))
    assert one == two and not math.isnan(two["mean"]["dice"])


def test_a_corrupt_prediction_under_two_workers_is_named(folders, capfd):
    # Before, the worker's ImageFileError could not be unpickled in the parent: the pool broke and the error
    # said a worker had died for lack of memory, after a "satnet.cli.Terminated" traceback from each worker.
    from satnet.cli import main

    reference_dir, prediction_dir = folders
    corrupt = prediction_dir / "b.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # truncated
    assert main(["evaluate", str(reference_dir), str(prediction_dir), "-j", "2"]) == 1
    err = capfd.readouterr().err
    assert f"{corrupt}: cannot be read as an image" in err, err
    assert "worker process died" not in err and "Traceback" not in err, err
    assert not (prediction_dir / "summary.json").exists()


@pytest.mark.parametrize("content", ["[]", "3", '"labels"'])
def test_a_dataset_json_that_is_no_object_is_named(folders, content, capsys):
    # Before: a bare "AttributeError: 'list' object has no attribute 'get'".
    from satnet.cli import main

    dataset_json = folders[0].parent / "dataset.json"
    dataset_json.write_text(content)
    with pytest.raises(InputError, match=rf"{dataset_json}: must hold a JSON object \(with labels and file_ending\)"):
        evaluate_folders(*folders)
    assert main(["evaluate", *map(str, folders)]) == 1
    err = capsys.readouterr().err
    assert f"satnet evaluate: error: {dataset_json}: must hold a JSON object" in err and "Traceback" not in err
    assert not (folders[1] / "summary.json").exists()


def test_2d_files_report_areas_not_volumes(tmp_path):
    """A 2D file is read as (1, Y, X) with a placeholder Z spacing, which must not enter the size."""
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "RGB"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1,
        "file_ending": ".nii.gz"}))
    ref = np.zeros((4, 6), np.uint8)
    ref[1:3, 1:3] = 1  # 4 pixels of 0.5 x 2 mm
    for folder in ("labelsTr", "pred"):
        image = sitk.GetImageFromArray(ref)
        image.SetSpacing([2.0, 0.5])  # (X, Y)
        (tmp_path / folder).mkdir()
        sitk.WriteImage(image, str(tmp_path / folder / "a.nii.gz"))
    metrics = evaluate_folders(tmp_path / "labelsTr", tmp_path / "pred")["per_case"][0]["metrics"]["1"]
    assert metrics["reference_area_mm2"] == metrics["prediction_area_mm2"] == 4 * 1.0
    assert "reference_volume_mm3" not in metrics


@pytest.fixture
def ignore_folders(tmp_path):
    """labels 1 and 2 plus nnU-Net's ignore label 3. Case a: label 1's 4 reference voxels predicted
    exactly, and 2 more voxels predicted as 1 where the reference is the ignore label (2 false positives
    if they counted: Dice 8/10); a further ignored voxel predicted as 2."""
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2, "ignore": 3},
        "numTraining": 1, "file_ending": ".nii.gz"}))
    ref, pred = np.zeros(SHAPE), np.zeros(SHAPE)
    ref[0, 0, :4] = pred[0, 0, :4] = 1
    ref[0, 1, :3] = 3
    pred[0, 1, :2] = 1
    pred[0, 1, 2] = 2
    ref[1, 2, :2] = pred[1, 2, :2] = 2
    write(tmp_path / "labelsTr" / "a.nii.gz", ref)
    write(tmp_path / "pred" / "a.nii.gz", pred)
    return tmp_path / "labelsTr", tmp_path / "pred"


def test_voxels_under_the_ignore_label_are_left_out_and_it_is_no_class(ignore_folders, tmp_path, capsys):
    from satnet.cli import main

    summary = evaluate_folders(*ignore_folders, output=tmp_path / "summary.json")
    assert summary["labels"] == [1, 2] and summary["label_names"] == {"1": "liver", "2": "tumour"}
    assert summary["ignore_label"] == 3 and "3" not in summary["per_class"]
    case = summary["per_case"][0]
    assert case["ignored_voxels"] == 3
    liver, tumour = case["metrics"]["1"], case["metrics"]["2"]
    assert liver["dice"] == 1 and liver["fp"] == 0 and liver["prediction_voxels"] == 4  # not 8/10, 2 FP, 6
    assert tumour["dice"] == 1 and tumour["fpr"] == 0
    assert liver["tn"] == 40 - 3 - 4  # the ignored voxels are no negatives either
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "voxels whose reference is 3 (the ignore label) are left out" in format_table(summary)
    # -l/--labels: the ignore label still masks; scoring it is refused
    assert evaluate_folders(*ignore_folders, labels=[1])["per_case"][0]["metrics"]["1"]["dice"] == 1
    with pytest.raises(InputError, match=r"label 3 is the ignore label .* leave it out of the labels to score"):
        evaluate_folders(*ignore_folders, labels=[1, 3])
    assert main(["evaluate", *map(str, ignore_folders), "-l", "1", "3"]) == 1
    assert "label 3 is the ignore label" in capsys.readouterr().err


def test_without_dataset_json_there_is_no_ignore_label(ignore_folders):
    """Nothing says 3 is special: it is scored like any value found, and the summary says there is no ignore label."""
    (ignore_folders[0].parent / "dataset.json").unlink()
    summary = evaluate_folders(*ignore_folders)
    assert summary["labels"] == [1, 2, 3] and summary["ignore_label"] is None
    assert "ignored_voxels" not in summary["per_case"][0]
    assert summary["per_case"][0]["metrics"]["1"]["dice"] == pytest.approx(8 / 10)


def test_a_dataset_json_kept_elsewhere_is_given_with_its_flag(ignore_folders, tmp_path, capsys):
    from satnet.cli import main

    moved = tmp_path / "elsewhere" / "dataset.json"
    moved.parent.mkdir()
    (ignore_folders[0].parent / "dataset.json").rename(moved)
    summary = evaluate_folders(*ignore_folders, dataset_json=moved)
    assert summary["ignore_label"] == 3 and summary["labels"] == [1, 2] and summary["labels_file"] == str(moved)
    assert summary["per_case"][0]["metrics"]["1"]["dice"] == 1  # not 8/10: the ignored voxels are left out
    out = tmp_path / "s.json"
    assert main(["evaluate", *map(str, ignore_folders), "--dataset-json", str(moved), "-o", str(out), "-j", "1"]) == 0
    assert json.loads(out.read_text())["ignore_label"] == 3
    capsys.readouterr()
    assert main(["evaluate", *map(str, ignore_folders), "--dataset-json", str(tmp_path / "nope.json")]) == 1
    assert "--dataset-json" in capsys.readouterr().err and not (ignore_folders[1] / "summary.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": {"background": 0, "liver": "one"}}))
    with pytest.raises(InputError, match=r'--dataset-json .*bad.json: no valid "labels"'):
        evaluate_folders(*ignore_folders, dataset_json=bad)


def test_a_summary_written_before_the_ignore_label_still_prints(folders):
    summary = evaluate_folders(*folders)
    del summary["ignore_label"]
    assert "ignore label" not in format_table(summary)


def test_region_based_labels_ask_for_label_values_and_keep_the_ignore_label(ignore_folders, capsys):
    """nnU-Net v2's region-based labels (a name mapped to a list of values) are not scored as regions. Before,
    such a dataset.json was passed over whole: every value found was scored, the ignore label 3 among them,
    its voxels counted as label 1's false positives (Dice 8/10), and the file ending was dropped."""
    from satnet.cli import main

    dataset = ignore_folders[0].parent / "dataset.json"
    data = json.loads(dataset.read_text())
    data["labels"] = {"background": 0, "liver": [1, 2], "tumour": 2, "ignore": 3}
    data["regions_class_order"] = [1, 2]
    dataset.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"dataset\.json defines region-based labels \('liver': \[1, 2\]\).* -l"):
        evaluate_folders(*ignore_folders)
    assert main(["evaluate", *map(str, ignore_folders)]) == 1
    assert "region-based labels" in capsys.readouterr().err
    for folder in ignore_folders:  # not of the dataset's file ending: left out
        write(folder / "other.nii", np.zeros(SHAPE))
    summary = evaluate_folders(*ignore_folders, labels=[1, 2])
    assert summary["labels"] == [1, 2] and summary["ignore_label"] == 3
    assert [c["case"] for c in summary["per_case"]] == ["a"]
    assert summary["per_case"][0]["metrics"]["1"]["dice"] == 1 and summary["label_names"] == {"2": "tumour"}
