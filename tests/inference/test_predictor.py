"""Folder prediction and end-of-fold validation with freshly initialised tiny networks."""
from __future__ import annotations

import gc
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage

from satnet.errors import ConfigError, DatasetCheckError, MissingFileError
from satnet.inference.export import revert_to_original
from satnet.inference.folder import Part, predict_folder
from satnet.inference.models import default_configurations, load_configuration, postprocessing_path
from satnet.inference.postprocessing import PostprocessingDecision, save_postprocessing
from satnet.inference.predictor import (
    InferenceSettings,
    NetworkPredictor,
    cpu_supports_bf16,
    load_probabilities,
    predict_preprocessed_cases,
    predict_probabilities,
)
from satnet.inference.sliding_window import sliding_window_predict
from satnet.io.cases import save_case
from satnet.io.images import geometry_mismatch, read_image, read_label
from satnet.planning.plans import ChannelNormalization, load_plans
from satnet.preprocessing.case import preprocess_case
from satnet.synthetic import make_dataset_3d
from tests.inference.fakes import LABELS, add_checkpoint, make_work_dir, tiny_plans

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_TTA = InferenceSettings(mirror=False)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """imagesTs with 3 cases of 16x20x24 voxels, spacing (3, 1, 1), oblique, origin off zero."""
    return make_dataset_3d(tmp_path_factory.mktemp("raw") / "Dataset900_Synth3D", num_cases=1, num_test=3)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Plans with tiny 3d and 2d networks; two folds of 3d (different weights), one of 2d."""
    work_dir = make_work_dir(tmp_path_factory.mktemp("w"), tiny_plans(("3d", "2d")))
    add_checkpoint(work_dir, "3d", 0, seed=0)
    add_checkpoint(work_dir, "3d", 1, seed=1)
    add_checkpoint(work_dir, "2d", 0, seed=2)
    return work_dir


def preprocessed(raw, case_id, plan):
    image, geometry = read_image([raw / "imagesTs" / f"{case_id}_0000.nii.gz"])
    data, _, props = preprocess_case(image, geometry, None, plan, case_id, LABELS)
    return data, props


def test_output_has_the_inputs_exact_geometry(raw, work, tmp_path):
    report = predict_folder(raw / "imagesTs", tmp_path, work, settings=NO_TTA)
    assert report.ok and report.predicted == ["case_001", "case_002", "case_003"]
    for case in report.predicted:
        seg, geometry = read_label(tmp_path / f"{case}.nii.gz")
        _, original = read_image([raw / "imagesTs" / f"{case}_0000.nii.gz"])
        assert seg.dtype == np.uint8 and seg.shape == (16, 20, 24) and set(np.unique(seg)) <= {0, 1, 2}
        assert geometry_mismatch(geometry, original) is None
        assert geometry == original  # exactly: the same float32 values in the NIfTI header
        assert original.origin != [0.0, 0.0, 0.0] and original.direction[4] < 0.9  # the case is a real test


def test_folds_are_ensembled_by_averaging_probabilities(raw, work, tmp_path):
    predict_folder(raw / "imagesTs", tmp_path, work, configs=["3d"], settings=NO_TTA, save_probabilities=True,
                   part=Part(0, 3))
    saved = load_probabilities(tmp_path / "case_001.npz")  # (K, Z, Y, X) on the raw grid
    models = load_configuration(work, "3d")
    data, props = preprocessed(raw, "case_001", models.plan)
    logits = [sliding_window_predict(NetworkPredictor(n, None, False, 3), data, [8, 8, 8], 3) for n in models.networks]
    per_fold = [torch.softmax(fold, 0).numpy() for fold in logits]
    expected = revert_to_original(np.mean(per_fold, axis=0), props)
    assert saved.shape == (3, 16, 20, 24)
    np.testing.assert_allclose(saved, expected, atol=1e-3)  # float16 on disk
    mean_logits = revert_to_original(torch.softmax(sum(logits) / 2, 0).numpy(), props)
    assert np.abs(saved - mean_logits).max() > 0.01  # averaging logits instead would be told apart
    for fold in per_fold:  # each fold alone is far from the ensemble: both folds counted
        assert np.abs(revert_to_original(fold, props) - expected).max() > 0.05
    mask = read_label(tmp_path / "case_001.nii.gz")[0]
    np.testing.assert_array_equal(mask, np.argmax(saved.astype(np.float32), axis=0))


@pytest.mark.parametrize("config, axes", [("3d", (1, 2, 3)), ("2d", (2, 3))])
def test_mirroring_makes_a_symmetric_input_give_a_symmetric_output(work, config, axes):
    """A random network is not mirror-symmetric; averaging over all flips of the patch axes makes it so."""
    models = load_configuration(work, config, folds=["0"])
    predictor = [NetworkPredictor(models.networks[0], None, False, len(models.plan.patch_size))]
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1, 8, 16, 16)).astype(np.float32)
    for axis in axes:  # make the input symmetric under each flip
        data = (data + np.flip(data, axis)) / 2
    for mirror in (True, False):
        settings = InferenceSettings(mirror=mirror)
        probs = predict_probabilities(predictor, data, models.plan, settings, torch.device("cpu"))
        asymmetry = max(float((probs - probs.flip(a)).abs().max()) for a in axes)
        if mirror:
            assert asymmetry < 1e-5
        else:
            assert asymmetry > 1e-2


def test_out_of_memory_retry_starts_after_the_failed_attempt_is_freed(preprocessing_plan):
    """A CUDA out-of-memory error makes the case run again with its logits on the CPU. The failed attempt's
    accumulators (on the GPU) must be gone by then: retried inside `except`, the error's traceback kept them."""
    plan = preprocessing_plan([1.0, 1.0, 1.0], [ChannelNormalization(channel="CT", scheme="zscore")])
    data = np.random.default_rng(0).normal(size=(1, 12, 13, 14)).astype(np.float32)
    accumulator_shape = (3, 12, 13, 14)  # (K, Z, Y, X): the logits summed over tiles
    calls, live_at_retry = [], []

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tiles.shape[0])
        if len(calls) == 2:  # mid-case, as when the accumulators leave too little room for a batch of tiles
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if len(calls) == 3:  # the retry's first batch: only its own accumulator may exist
            live_at_retry.append(sum(1 for o in gc.get_objects()
                                     if issubclass(type(o), torch.Tensor) and tuple(o.shape) == accumulator_shape))
        return torch.zeros(tiles.shape[0], 3, *tiles.shape[2:])

    probs = predict_probabilities([predictor], data, plan, NO_TTA, torch.device("cpu"))
    assert live_at_retry == [1]
    assert tuple(probs.shape) == accumulator_shape and torch.allclose(probs, torch.full_like(probs, 1 / 3))


def test_continue_keeps_existing_outputs_and_predicts_the_rest(raw, work, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    existing = tmp_path / "case_002.nii.gz"
    existing.write_bytes(b"an earlier result")
    report = predict_folder(raw / "imagesTs", tmp_path, work, settings=NO_TTA, resume=True)
    assert report.skipped == ["case_002"] and report.predicted == ["case_001", "case_003"]
    assert existing.read_bytes() == b"an earlier result"
    assert (tmp_path / "case_001.nii.gz").is_file() and (tmp_path / "case_003.nii.gz").is_file()


@pytest.mark.parametrize("part, expected", [((0, 2), ["case_001", "case_003"]), ((1, 2), ["case_002"]),
                                            ((2, 3), ["case_003"])])
def test_part_predicts_every_nth_case(raw, work, tmp_path, part, expected):
    report = predict_folder(raw / "imagesTs", tmp_path, work, settings=NO_TTA, part=Part(*part))
    assert report.predicted == expected
    summary = f"predict_summary_part{part[0]}of{part[1]}.json"  # one per part: the processes share the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{c}.nii.gz" for c in expected] + [summary,
                                                                                                      "predict_started.json"])


def test_a_corrupt_case_is_reported_and_the_others_are_predicted(raw, work, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(raw / "imagesTs", images)
    (images / "case_002_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    report = predict_folder(images, tmp_path / "out", work, settings=NO_TTA)
    assert report.predicted == ["case_001", "case_003"] and list(report.failed) == ["case_002"]
    assert "case_002_0000.nii.gz" in report.failed["case_002"] and not report.ok
    assert not (tmp_path / "out" / "case_002.nii.gz").exists()


def test_wrong_channel_count_fails_each_case_with_the_fix(raw, tmp_path):
    work = make_work_dir(tmp_path, tiny_plans(in_channels=2))
    add_checkpoint(work, "3d", 0, seed=0)
    report = predict_folder(raw / "imagesTs", tmp_path / "out", work, settings=NO_TTA)
    assert not report.predicted and len(report.failed) == 3
    assert all("1 channel(s), but the dataset has 2" in reason for reason in report.failed.values())


def test_extra_channel_files_are_reported_before_predicting(raw, work, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(raw / "imagesTs", images)
    shutil.copy(images / "case_001_0000.nii.gz", images / "case_001_0001.nii.gz")
    with pytest.raises(DatasetCheckError, match="case_001_0001.nii.gz: is channel 1"):
        predict_folder(images, tmp_path / "out", work)


def test_missing_checkpoint_names_the_fold_and_the_train_command(raw, work, tmp_path):
    with pytest.raises(MissingFileError, match=r"fold 3: .*fold_3/checkpoint_final.pt not found; train it with "
                                               r"`satnet train .* 3d 3`"):
        predict_folder(raw / "imagesTs", tmp_path, work, folds=["0", "3"])
    with pytest.raises(MissingFileError, match="no trained fold with checkpoint_best.pt"):
        predict_folder(raw / "imagesTs", tmp_path, work, checkpoint="best")


def test_unknown_configuration_suggests_the_closest(raw, work, tmp_path):
    with pytest.raises(ConfigError, match='unknown configuration "3dd" \\(did you mean "3d"\\?\\)'):
        predict_folder(raw / "imagesTs", tmp_path, work, configs=["3dd"])


def test_validation_from_preprocessed_cases_equals_prediction_from_raw(raw, work, tmp_path):
    models = load_configuration(work, "3d")
    folder = tmp_path / "preprocessed"
    for case in ("case_001", "case_003"):
        image, geometry = read_image([raw / "imagesTs" / f"{case}_0000.nii.gz"])
        data, _, props = preprocess_case(image, geometry, None, models.plan, case, LABELS)
        save_case(folder, props, data, None)
    networks = [n.train() for n in models.networks]
    report = predict_preprocessed_cases(networks, models.plan, folder, ["case_001", "case_003"], tmp_path / "val",
                                        ".nii.gz", settings=NO_TTA)
    assert report.predicted == ["case_001", "case_003"] and all(n.training for n in networks)  # mode restored
    predict_folder(raw / "imagesTs", tmp_path / "raw", work, settings=NO_TTA, save_probabilities=True)
    for case in report.predicted:
        np.testing.assert_array_equal(read_label(tmp_path / "val" / f"{case}.nii.gz")[0],
                                      read_label(tmp_path / "raw" / f"{case}.nii.gz")[0])
        np.testing.assert_array_equal(np.load(tmp_path / "val" / f"{case}.npz")["probabilities"],
                                      np.load(tmp_path / "raw" / f"{case}.npz")["probabilities"])
        assert np.load(tmp_path / "val" / f"{case}.npz")["probabilities"].dtype == np.float16


def test_postprocessing_is_applied_when_decided(raw, work, tmp_path):
    def components(path, label):
        return ndimage.label(read_label(path)[0] == label, structure=np.ones((3, 3, 3)))[1]

    predict_folder(raw / "imagesTs", tmp_path / "plain", work, settings=NO_TTA, part=Part(0, 3))
    assert components(tmp_path / "plain" / "case_001.nii.gz", 2) > 1  # the random network leaves islands
    work_copy = tmp_path / "work"
    shutil.copytree(work, work_copy)
    save_postprocessing(PostprocessingDecision(largest_component_labels=[2]), postprocessing_path(work_copy, ["3d"]))
    predict_folder(raw / "imagesTs", tmp_path / "post", work_copy, settings=NO_TTA, part=Part(0, 3))
    assert components(tmp_path / "post" / "case_001.nii.gz", 2) == 1


def test_two_configurations_are_averaged_on_the_raw_grid(raw, work, tmp_path):
    for configs in (["3d"], ["2d"], ["3d", "2d"]):
        predict_folder(raw / "imagesTs", tmp_path / "+".join(configs), work, configs=configs, settings=NO_TTA,
                       save_probabilities=True, part=Part(0, 3))
    single = [load_probabilities(tmp_path / c / "case_001.npz") for c in ("3d", "2d")]
    both = load_probabilities(tmp_path / "3d+2d" / "case_001.npz")
    np.testing.assert_allclose(both, (single[0] + single[1]) / 2, atol=2e-3)


def test_default_configuration(work, tmp_path):
    plans = load_plans(work)
    assert default_configurations(work, plans) == ["3d"]
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "results" / "find_best.json").write_text('{"best": {"configurations": ["2d", "3d"]}}')
    assert default_configurations(copy, plans) == ["2d", "3d"]


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 convolutions")
def test_bf16_predicts_close_to_fp32(raw, work, tmp_path):
    outputs = {}
    for precision in ("fp32", "bf16"):
        settings = InferenceSettings(mirror=False, precision=precision)
        predict_folder(raw / "imagesTs", tmp_path / precision, work, settings=settings, save_probabilities=True,
                       part=Part(0, 3))
        outputs[precision] = load_probabilities(tmp_path / precision / "case_001.npz")
    difference = np.abs(outputs["bf16"] - outputs["fp32"])
    assert 0 < difference.max() < 0.1  # bf16 really ran, and stayed close


def test_the_summary_records_the_precision_that_ran(raw, work, tmp_path, monkeypatch):
    import json

    import satnet.inference.settings as settings_module

    monkeypatch.setattr(settings_module, "cpu_supports_bf16", lambda: False)  # bf16 asked, fp32 runs
    predict_folder(raw / "imagesTs", tmp_path, work, settings=InferenceSettings(mirror=False, precision="bf16",
                                                                                  device="cpu"), part=Part(0, 3))
    summary = json.loads((tmp_path / "predict_summary_part0of3.json").read_text())
    assert summary["precision"] == "fp32" and summary["device"] == "cpu"
    if cpu_supports_bf16():
        monkeypatch.undo()
        predict_folder(raw / "imagesTs", tmp_path / "bf16", work,
                       settings=InferenceSettings(mirror=False, precision="bf16", device="cpu"))
        assert json.loads((tmp_path / "bf16" / "predict_summary.json").read_text())["precision"] == "bf16"


def test_2d_rgb_png_round_trip(tmp_path):
    from satnet.synthetic import make_dataset_2d_rgb

    raw = make_dataset_2d_rgb(tmp_path / "Dataset901_Synth2D", num_cases=2)
    work = make_work_dir(tmp_path, tiny_plans(("2d",), in_channels=3, file_ending=".png"))
    add_checkpoint(work, "2d", 0, seed=0)
    report = predict_folder(raw / "imagesTr", tmp_path / "out", work, save_probabilities=True)
    assert report.predicted == ["img_000", "img_001"]
    seg, geometry = read_label(tmp_path / "out" / "img_000.png")
    assert geometry == read_image([raw / "imagesTr" / "img_000_0000.png"])[1] and geometry.spatial_dims_in_file == 2
    assert seg.shape == (1, 32, 40) and load_probabilities(tmp_path / "out" / "img_000.npz").shape == (3, 1, 32, 40)
