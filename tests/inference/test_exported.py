"""`satnet export` and predicting an exported folder with ONNX Runtime: the same masks as torch, no work folder."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from satnet.cli import main
from satnet.errors import InputError
from satnet.synthetic import make_dataset_2d_rgb, make_dataset_3d
from satnet_testing import interrupted_on_call

pytest.importorskip("onnx", reason="the onnx extra: pip install -e \".[onnx]\"")

from satnet.inference.exported import (  # noqa: E402
    EXPORT_FILE,
    OnnxRuntimePredictor,
    OpenVinoPredictor,
    onnxruntime_available,
    openvino_available,
)
from satnet.inference.models import load_configuration  # noqa: E402
from satnet.inference.predictor import load_probabilities  # noqa: E402

RUNTIMES = [pytest.param("onnxruntime", marks=pytest.mark.skipif(not onnxruntime_available(), reason="no onnxruntime")),
            pytest.param("openvino", marks=pytest.mark.skipif(not openvino_available(), reason="no openvino"))]
PREDICTORS = {"onnxruntime": OnnxRuntimePredictor, "openvino": OpenVinoPredictor}
CASES = {  # name: (dataset maker, plan flags, configuration)
    "3d_sat": (make_dataset_3d, ["--configs", "3d"], "3d"),
    "2d_org": (make_dataset_2d_rgb, ["--configs", "2d", "--skip", "org"], "2d_org"),
}


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tmp_path_factory):
    make, flags, config = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    raw = make(root / "raw", num_cases=3)
    work = root / "work"
    assert main(["plan-and-preprocess", str(raw), "-o", str(work), "-j", "1", "-q", *flags]) == 0
    assert main(["train", str(work), config, "0", "--epochs", "1", "--iterations-per-epoch", "2", "--workers", "0",
                 "--seed", "0", "--no-validation", "-q"]) == 0
    return raw, work, config


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exported_logits_match_torch(trained, tmp_path, runtime):
    raw, work, config = trained
    assert main(["export", "-m", str(work), "-c", config, "-o", str(tmp_path / "model"), "-q"]) == 0
    network = load_configuration(work, config).networks[0]
    plan = load_configuration(work, config).plan
    session = PREDICTORS[runtime](tmp_path / "model" / "fold_0.onnx")
    torch.manual_seed(0)
    tiles = torch.randn(3, plan.network.in_channels, *[2 * p for p in plan.patch_size])  # another size and batch
    with torch.no_grad():
        expected = network(tiles)
    got = session(tiles)
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min())
    assert float((got - expected).abs().max()) <= 1e-4 * span


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exported_folder_predicts_the_torch_masks_without_the_work_folder(trained, tmp_path, capsys, runtime):
    raw, work, config = trained
    model, scans = tmp_path / "model", raw / "imagesTr"
    assert main(["export", "-m", str(work), "-c", config, "-o", str(model), "-q"]) == 0
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "torch"), "-m", str(work), "-c", config, "-q",
                 "--save-probabilities"]) == 0
    moved = tmp_path / "elsewhere"
    shutil.move(str(work), str(moved))  # the exported folder must not need it
    try:
        capsys.readouterr()
        assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "onnx"), "-m", str(model), "--backend",
                     runtime]) == 0
        assert f"backend: {runtime}" in capsys.readouterr().err
    finally:
        shutil.move(str(moved), str(work))
    ending = ".nii.gz" if config.startswith("3d") else ".png"
    masks = sorted(p.name for p in (tmp_path / "torch").glob(f"*{ending}"))
    assert masks and masks == sorted(p.name for p in (tmp_path / "onnx").glob(f"*{ending}"))
    for name in masks:
        ours, theirs = _read(tmp_path / "torch" / name), _read(tmp_path / "onnx" / name)
        # Identical but where two classes tie within round-off: a barely trained model has such voxels, and
        # which side of a tie fp32 round-off lands on differs between kernels (and CPUs).
        probs = np.sort(load_probabilities(tmp_path / "torch" / name.replace(ending, ".npz")), axis=0)
        margin = (probs[-1] - probs[-2]).reshape(ours.shape)
        differ = ours != theirs
        assert differ.mean() <= 1e-3 and (margin[differ] < 5e-3).all(), (name, differ.sum(), margin[differ].max())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrong_backend_and_a_broken_model_file_are_clear_errors(trained, tmp_path, capsys, runtime):
    raw, work, config = trained
    model = tmp_path / "model"
    assert main(["export", "-m", str(work), "-c", config, "-o", str(model), "-q"]) == 0
    common = ["predict", "-i", str(raw / "imagesTr"), "-o", str(tmp_path / "out"), "-q"]
    capsys.readouterr()
    assert main([*common, "-m", str(model), "--backend", "torch"]) == 1
    assert "is an exported model" in capsys.readouterr().err
    assert main([*common, "-m", str(work), "--backend", runtime]) == 1
    assert "satnet export -m" in capsys.readouterr().err
    assert main([*common, "-m", str(model), "--backend", runtime, "-f", "0", "3"]) == 1  # not a quiet fold-0 ensemble
    assert "holds folds 0, not 3; leave out -f" in capsys.readouterr().err
    onnx = model / "fold_0.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    assert main([*common, "-m", str(model), "--backend", runtime]) == 1
    name = "ONNX Runtime" if runtime == "onnxruntime" else "OpenVINO"
    assert f"{onnx}: {name} cannot load it" in capsys.readouterr().err
    onnx.unlink()  # satnet_model.json lists a fold file that is not there
    assert main([*common, "-m", str(model), "--backend", runtime]) == 1
    err = capsys.readouterr().err
    assert "lacks fold_0.onnx" in err and "export it again" in err
    (model / EXPORT_FILE).write_text("{")
    assert main([*common, "-m", str(model)]) == 1
    assert str(model / EXPORT_FILE) in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "-m", str(model), "--backend", "tensorrt"])
    assert exit_info.value.code == 2 and "--backend" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no error wrote anything


@pytest.mark.skipif(not openvino_available(), reason="no openvino")
def test_openvino_ir_export_predicts_the_onnx_masks_and_refuses_onnxruntime(trained, tmp_path, capsys):
    raw, work, config = trained
    scans = raw / "imagesTr"
    assert main(["export", "-m", str(work), "-c", config, "-o", str(tmp_path / "onnx"), "-q"]) == 0
    assert main(["export", "-m", str(work), "-c", config, "-o", str(tmp_path / "ir"), "--format", "openvino", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["fold_0.bin", "fold_0.xml", EXPORT_FILE]
    for model in ("onnx", "ir"):
        assert main(["predict", "-i", str(scans), "-o", str(tmp_path / f"out_{model}"), "-m", str(tmp_path / model),
                     "--backend", "openvino", "-q"]) == 0
    ending = ".nii.gz" if config.startswith("3d") else ".png"
    masks = sorted(p.name for p in (tmp_path / "out_onnx").glob(f"*{ending}"))
    assert masks and masks == sorted(p.name for p in (tmp_path / "out_ir").glob(f"*{ending}"))
    for name in masks:  # one runtime, one graph: identical
        assert (_read(tmp_path / "out_onnx" / name) == _read(tmp_path / "out_ir" / name)).all()
    capsys.readouterr()
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "x"), "-m", str(tmp_path / "ir"),
                 "--backend", "onnxruntime", "-q"]) == 1
    assert "holds OpenVINO IR" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "ir" / "fold_0.bin").unlink()
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "x"), "-m", str(tmp_path / "ir"), "-q"]) == 1
    assert "lacks fold_0.bin" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Replacing an export, folders that mix two, and flags or files that do not fit one. Freshly initialised tiny
# networks (tests/inference/fakes.py): a 3d configuration with folds 0 and 1, a 2d one with fold 0.


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    from tests.inference.fakes import add_checkpoint, make_work_dir, tiny_plans

    root = tmp_path_factory.mktemp("fake")
    raw = make_dataset_3d(root / "raw", num_cases=1, num_test=2)
    work = make_work_dir(root, tiny_plans(("3d", "2d")))
    add_checkpoint(work, "3d", 0, seed=0)
    add_checkpoint(work, "3d", 1, seed=1)
    add_checkpoint(work, "2d", 0, seed=2)
    return raw / "imagesTs", work


def _contents(folder):
    """Every entry of `folder` (hidden ones included) -> its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _export(capsys, work, config, out, *extra):
    code = main(["export", "-m", str(work), "-c", config, "-o", str(out), "-q", *extra])
    return code, capsys.readouterr().err


@pytest.mark.skipif(not onnxruntime_available(), reason="no onnxruntime")
def test_an_interrupted_export_leaves_the_earlier_export_whole(fake, tmp_path, capsys, monkeypatch):
    import satnet.inference.exported as exported

    scans, work = fake
    model = tmp_path / "model"
    assert _export(capsys, work, "2d", model)[0] == 0
    before = _contents(model)
    monkeypatch.setattr(exported, "export_onnx", interrupted_on_call(exported.export_onnx, 2))  # in fold 1
    assert _export(capsys, work, "3d", model)[0] == 130
    assert _contents(model) == before  # not one new fold beside the old JSON, and no staging folder left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.undo()
    predict = ["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(model), "--backend", "onnxruntime",
               "--no-tta", "-q"]
    assert main(predict) == 0
    assert _export(capsys, work, "3d", model)[0] == 0  # over it, uninterrupted: the 3d export, nothing of the 2d
    assert sorted(_contents(model)) == sorted([EXPORT_FILE, "fold_0.onnx", "fold_1.onnx"])
    assert main([*predict[:4], str(tmp_path / "out3d"), *predict[5:]]) == 0
    assert _export(capsys, work, "3d", model, "-f", "1")[0] == 0  # fewer folds: the other one goes
    assert sorted(_contents(model)) == sorted([EXPORT_FILE, "fold_1.onnx"])


@pytest.mark.skipif(not onnxruntime_available(), reason="no onnxruntime")
def test_export_checks_its_output_folder_before_loading_the_models(fake, tmp_path, capsys):
    scans, work = fake
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    code, err = _export(capsys, work, "3d", afile, "-f", "7")  # fold 7 does not exist: the folder is checked first
    assert code == 1 and f"cannot create output folder {afile}: {afile} is a file" in err and "-o" in err
    assert afile.read_text() == "mine\n"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine\n")
    code, err = _export(capsys, work, "3d", notes)
    assert code == 1 and f"-o {notes} holds notes.txt and is no folder of `satnet export`" in err
    assert _contents(notes) == {"notes.txt": b"mine\n"} and "Traceback" not in err
    # A folder that an export left without satnet_model.json (stopped while replacing files): predict says so,
    # and exporting into it again is allowed.
    model = tmp_path / "model"
    assert _export(capsys, work, "3d", model)[0] == 0
    (model / EXPORT_FILE).unlink()
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(model), "-q"]) == 1
    assert f"{model} holds exported networks but no {EXPORT_FILE}: an export into it was interrupted" in \
        capsys.readouterr().err
    assert _export(capsys, work, "3d", model)[0] == 0 and (model / EXPORT_FILE).is_file()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_folder_mixing_two_exports_is_one_clear_error(fake, tmp_path, capsys, runtime):
    scans, work = fake
    assert _export(capsys, work, "2d", tmp_path / "a")[0] == 0
    assert _export(capsys, work, "3d", tmp_path / "b")[0] == 0
    mixed = tmp_path / "a" / "fold_0.onnx"  # what an interrupted export of an older satnet left
    mixed.write_bytes((tmp_path / "b" / "fold_0.onnx").read_bytes())
    code = main(["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "a"), "--backend",
                 runtime, "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert f"{mixed}: the network takes (?, 1, ?, ?, ?) and gives (?, 3, ?, ?, ?), but {EXPORT_FILE} describes " \
           f"configuration '2d'" in err and "export it again" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=f"{tmp_path / 'b' / 'fold_0.onnx'}: .* cannot run it on tiles of shape "
                                         r"\(1, 1, 8, 8\) .*export the model again"):
        PREDICTORS[runtime](tmp_path / "b" / "fold_0.onnx")(torch.zeros(1, 1, 8, 8))


@pytest.mark.skipif(not onnxruntime_available(), reason="no onnxruntime")
@pytest.mark.parametrize("flag", [["--device", "cuda"], ["--precision", "bf16"], ["--checkpoint", "best"],
                                  ["--checkpoint", "final"]])
def test_flags_that_do_not_apply_to_an_exported_model_are_refused(fake, tmp_path, capsys, flag):
    scans, work = fake
    assert _export(capsys, work, "3d", tmp_path / "model")[0] == 0
    code = main(["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model"), *flag, "-q"])
    err = capsys.readouterr().err
    assert code == 1 and f"{' '.join(flag)} does not apply to {tmp_path / 'model'}: an exported model" in err, err
    assert f"leave out {flag[0]}" in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(not onnxruntime_available(), reason="no onnxruntime")
def test_the_summary_of_an_exported_model_records_fp32_on_the_cpu(fake, tmp_path, capsys):
    import json

    scans, work = fake
    assert _export(capsys, work, "3d", tmp_path / "model")[0] == 0
    assert main(["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model"),
                 "--backend", "onnxruntime", "--device", "cpu", "--no-tta", "-q"]) == 0
    summary = json.loads((tmp_path / "out" / "predict_summary.json").read_text())
    assert summary["precision"] == "fp32" and summary["device"] == "cpu"


@pytest.mark.skipif(not onnxruntime_available(), reason="no onnxruntime")
@pytest.mark.parametrize("edit, expected", [
    ({"format": "tflite"}, "format must be one of onnx, openvino, not 'tflite'"),
    ({"folds": ["0", "1"]}, "folds and files must be lists of the same length"),
    ({"files": ["../fold_0.onnx"]}, "files must name fold_<k>.onnx files beside it"),
    ({"files": ["fold_0.xml"]}, "files must name fold_<k>.onnx files beside it"),
])
def test_a_wrong_satnet_model_json_is_one_clear_error(fake, tmp_path, capsys, edit, expected):
    import json

    scans, work = fake
    model = tmp_path / "model"
    assert _export(capsys, work, "3d", model, "-f", "0")[0] == 0
    data = json.loads((model / EXPORT_FILE).read_text())
    (model / EXPORT_FILE).write_text(json.dumps({**data, **edit}))
    code = main(["predict", "-i", str(scans), "-o", str(tmp_path / "out"), "-m", str(model), "--backend",
                 "onnxruntime", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and f"{model / EXPORT_FILE}: {expected}" in err and "export the model again" in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
