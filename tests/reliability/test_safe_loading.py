"""Safe loading: no pickle in satnet's own code, checkpoints loaded with weights_only=True everywhere, and no
name from a user's files (case ids, configuration and data folder names, planted symlinks) can make satnet
write outside WORK_DIR or OUTPUT_DIR."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.reliability.sandbox import predict, run_cli, snapshot

REPO = Path(__file__).resolve().parents[2]
OWN_CODE = sorted([*(REPO / "satnet").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")])
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _keyword(call: ast.Call, name: str):
    """The constant value of keyword `name` of `call`, "missing", or "not a constant"."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "not a constant"
    return "missing"


def unsafe_loading(path: Path, root: Path = REPO) -> list[str]:
    """'file:line: what' for each import of a pickling module, torch.load without weights_only=True, np.load
    without allow_pickle=False, allow_pickle other than False, and `load` imported bare from torch or numpy.
    File names are relative to `root`."""
    problems = []
    where = lambda node: f"{path.relative_to(root)}:{node.lineno}"  # noqa: E731
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            problems += [f"{where(node)}: imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLING_MODULES:
                problems.append(f"{where(node)}: imports from {node.module}")
            if node.module in ("torch", "numpy") and any(a.name == "load" for a in node.names):
                problems.append(f"{where(node)}: imports load from {node.module} (call {node.module}.load instead)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = ast.unparse(node.func.value)
            if owner == "torch" and _keyword(node, "weights_only") is not True:
                problems.append(f"{where(node)}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and _keyword(node, "allow_pickle") is not False:
                problems.append(f"{where(node)}: {owner}.load without allow_pickle=False")
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                isinstance(node.value, ast.Constant) and node.value.value is False):
            problems.append(f"{where(node.value)}: allow_pickle other than False")
    return problems


def test_no_pickle_and_only_weights_only_loading_in_satnets_own_code():
    assert len(OWN_CODE) > 50
    assert [p for path in OWN_CODE for p in unsafe_loading(path)] == []


def test_the_checker_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nfrom torch import load\nimport torch, numpy as np\ntorch.load('x')\n"
                   "torch.load('x', weights_only=False)\nnp.load('y')\nnp.load('y', allow_pickle=True)\n"
                   "np.save('z', 1, allow_pickle=True)\ntorch.load('x', weights_only=True)\n")
    found = unsafe_loading(bad, root=tmp_path)
    assert [p.split(":", 2)[1] for p in found] == ["1", "2", "4", "5", "6", "7", "7", "8"]


def test_every_checkpoint_load_of_predict_and_resume_is_weights_only(bases, tmp_path, monkeypatch):
    work = Path(shutil.copytree(bases["work"], tmp_path / "work"))
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    images = bases["raw3d"] / "imagesTs"
    assert run_cli(["predict", "-i", images, "-o", tmp_path / "out", "-m", work, "-c", "3d", "--no-tta"]).code == 0
    assert run_cli(["train", work, "3d", "0", "--epochs", "2", "--iterations-per-epoch", "1", "--val-iterations",
                    "1", "--workers", "0", "--resume", "--no-validation", "-q"]).code == 0
    assert len(calls) >= 2 and set(calls) == {True}


# ---------------------------------------------------------------------------------------------
# Path traversal


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _add_to_splits(case: str):
    def change(splits: dict) -> None:
        splits["folds"][0]["val"].append(case)
        for fold in splits["folds"][1:]:
            fold["train"].append(case)
    return change


@pytest.mark.parametrize("file, change, argv, message", [
    ("splits.json", _add_to_splits("../evil"), ["train", "{work}", "3d", "0"], "'../evil' are not case names"),
    ("splits.json", _add_to_splits("/tmp/evil"), ["train", "{work}", "3d", "0"], "'/tmp/evil' are not case names"),
    ("plans.json", lambda d: d["configurations"]["3d"].update(data_identifier="../../escaped"),
     ["preprocess", "{raw}", "-o", "{work}", "-j", "1"], "data_identifier '../../escaped' must be a plain folder"),
    ("plans.json", lambda d: d["configurations"].update({"../x": {**d["configurations"]["3d"], "name": "../x"}}),
     ["train", "{work}", "../x", "0"], "name '../x' must be a plain folder name"),
])
def test_names_in_work_files_cannot_escape_work_dir(bases, tmp_path, file, change, argv, message):
    work = Path(shutil.copytree(bases["work"], tmp_path / "inside" / "work"))
    edit(work / file, change)
    before = snapshot(tmp_path)
    argv = [a.format(work=work, raw=bases["raw3d"]) for a in argv]
    result = run_cli([*argv, "--epochs", "1", "--workers", "0", "-q"] if argv[0] == "train" else argv)
    assert result.code == 1 and message in result.stderr and f"fix {work / file}" in result.stderr, result.stderr
    assert snapshot(tmp_path) == before


def test_case_names_with_dots_are_refused(bases, tmp_path):
    raw = Path(shutil.copytree(bases["raw3d"], tmp_path / "raw" / bases["raw3d"].name))
    for folder, old, new in (("imagesTr", "case_000_0000", "a..b_0000"), ("labelsTr", "case_000", "a..b")):
        (raw / folder / f"{old}.nii.gz").rename(raw / folder / f"{new}.nii.gz")
    result = run_cli(["plan-and-preprocess", raw, "-o", tmp_path / "work", "--configs", "3d", "-j", "1"])
    assert result.code == 1 and "case id 'a..b'" in result.stderr and not (tmp_path / "work").exists()


def test_a_planted_symlink_is_replaced_not_written_through(setup, tmp_path):
    images, work = setup
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "case_001.nii.gz").symlink_to(victim)
    refused = run_cli(predict(images, out, work))  # not predict's folder: it replaces nothing there
    assert refused.code == 1 and "already holds case_001.nii.gz" in refused.stderr
    assert run_cli(predict(images, out, work, "--overwrite")).code == 0
    assert victim.read_text() == "precious\n"
    assert not (out / "case_001.nii.gz").is_symlink() and (out / "case_001.nii.gz").stat().st_size > 0


def test_a_symlinked_preprocessed_file_is_replaced_not_written_through(bases, tmp_path):
    work = Path(shutil.copytree(bases["work"], tmp_path / "work"))
    (folder,) = (work / "preprocessed").iterdir()
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"precious")
    (folder / "case_001.json").unlink()  # an incomplete case: the rerun writes it again
    (folder / "case_001.npy").unlink()
    (folder / "case_001.npy").symlink_to(victim)
    assert run_cli(["preprocess", bases["raw3d"], "-o", work, "-j", "1", "-q"]).code == 0
    assert victim.read_bytes() == b"precious" and not (folder / "case_001.npy").is_symlink()
