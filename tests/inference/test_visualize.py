from __future__ import annotations

import json

import numpy as np
import pytest

from fakes import add_checkpoint, make_work_dir, tiny_plans
from satnet.cli import main
from satnet.errors import InputError
from satnet.inference.visualize import visualize_scan


def test_visualize_writes_attention_maps_select_bars_and_numbers(tmp_path, dataset_3d):
    work_dir = make_work_dir(tmp_path)
    net = add_checkpoint(work_dir, "3d", 0, seed=1)
    with_select = [g for _, g in net.gates() if g.select is not None]
    with_select[0].select.data[:2] = -1.0  # two channels off in the first gate
    from satnet.inference.models import checkpoint_path
    from satnet.io.checkpoints import load_checkpoint, save_checkpoint

    path = checkpoint_path(work_dir, "3d", "0")
    ckpt = load_checkpoint(path)
    ckpt["state_dict"] = net.state_dict()
    save_checkpoint(path, ckpt)

    scan = dataset_3d / "imagesTr" / "case_000_0000.nii.gz"
    out = tmp_path / "viz"
    assert main(["visualize", "-m", str(work_dir), "-c", "3d", "-f", "0", "-i", str(scan), "-o", str(out)]) == 0
    report = json.loads((out / "gates.json").read_text())
    gates = report["gates"]
    assert [g["name"] for g in gates] == [name for name, _ in net.gates()]
    first = gates[0]
    assert first["mode"] == "sat" and len(first["trelu_w"]) == first["channels"]
    assert first["fraction_off"] == pytest.approx(2 / first["channels"])
    assert first["trelu_w"][:2] == [0.0, 0.0]
    assert 0.0 <= first["attention"]["min"] <= first["attention"]["max"] <= 1.0
    for g in gates:
        assert (out / g["attention_png"]).stat().st_size > 1000
    assert (out / "select_weights.png").read_bytes()[:4] == b"\x89PNG"
    assert all(not g.record for _, g in net.gates())


def test_visualize_refuses_org_and_bad_scan_names(tmp_path, dataset_3d, capsys):
    plans = tiny_plans()
    plans.configurations["3d"].network = plans.configurations["3d"].network.replace(skip="org")
    work_dir = make_work_dir(tmp_path, plans)
    add_checkpoint(work_dir, "3d", 0, seed=1)
    scan = dataset_3d / "imagesTr" / "case_000_0000.nii.gz"
    assert main(["visualize", "-m", str(work_dir), "-c", "3d", "-f", "0", "-i", str(scan), "-o", str(tmp_path / "v")]) == 1
    assert "no gates to visualise" in capsys.readouterr().err
    plans = tiny_plans()
    work_dir = make_work_dir(tmp_path / "b", plans)
    add_checkpoint(work_dir, "3d", 0, seed=1)
    label = dataset_3d / "labelsTr" / "case_000.nii.gz"
    with pytest.raises(InputError, match=r"\{case\}_0000"):
        visualize_scan(work_dir, "3d", "0", label, tmp_path / "v2")
