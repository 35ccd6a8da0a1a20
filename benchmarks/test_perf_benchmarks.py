"""Tests of the side-by-side benchmarks' tooling that need no nnU-Net run (a few seconds):

    python -m pytest -q benchmarks/test_perf_benchmarks.py

Part of the project's suite (pytest.ini's testpaths), so CI runs them; the benchmarks themselves are
run by hand.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf_common  # noqa: E402
from bench_predict_vs_nnunet import steady_s_per_case  # noqa: E402
from bench_train_vs_nnunet import Variant, torch_layer_network  # noqa: E402
from nnunet_port import check_same_network, nnunet_key_map  # noqa: E402

from satnet.nets import NetworkSpec, build_network  # noqa: E402


def hippocampus_spec(skip: str = "org") -> NetworkSpec:
    return NetworkSpec(arch="unet", spatial_dims=3, in_channels=1, num_classes=3, features=[32, 64, 128, 256],
                       kernel_sizes=[[3, 3, 3]] * 4, strides=[[1, 1, 1]] + [[2, 2, 2]] * 3, skip=skip)


NNUNET_PLANS = {"configurations": {"3d_fullres": {"patch_size": [40, 56, 40], "architecture": {"arch_kwargs": {
    "features_per_stage": [32, 64, 128, 256], "kernel_sizes": [[3, 3, 3]] * 4,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "n_conv_per_stage": [2, 2, 2, 2]}}}}}


def test_key_map_gives_every_satnet_weight_its_nnunet_names():
    state = build_network(hippocampus_spec()).state_dict()
    mapping = nnunet_key_map(hippocampus_spec())
    assert set(mapping.values()) == set(state)
    encoder = [k for k in state if k.startswith("encoder.")]
    decoder = [k for k in state if k.startswith("decoder.")]
    assert len(mapping) == 4 * len(encoder) + 2 * len([k for k in decoder if ".stages." in k]) + len(
        [k for k in decoder if ".stages." not in k])
    assert mapping["decoder.seg_layers.2.weight"] == "decoder.heads.heads.0.weight"  # nnU-Net: full resolution last
    assert mapping["decoder.transpconvs.0.weight"] == "decoder.ups.2.weight"  # nnU-Net: deepest first
    assert mapping["decoder.encoder.stages.3.0.convs.1.all_modules.1.bias"] == "encoder.stages.3.1.1.bias"
    for theirs, ours in mapping.items():  # same shapes where nnU-Net has the same layer
        if "transpconvs" in theirs or "seg_layers" in theirs:
            continue
        assert state[ours].dim() in (1, 5)


def test_only_nnunets_own_network_is_ported():
    check_same_network(hippocampus_spec(), [40, 56, 40], NNUNET_PLANS, "3d_fullres")
    with pytest.raises(SystemExit, match="arch: satnet unet/sat"):
        check_same_network(hippocampus_spec("sat"), [40, 56, 40], NNUNET_PLANS, "3d_fullres")
    with pytest.raises(SystemExit, match="patch_size"):
        check_same_network(hippocampus_spec(), [48, 56, 40], NNUNET_PLANS, "3d_fullres")


def test_variants_parse_and_refuse_unknown_keys():
    v = Variant.parse("3d_org:bf16:workers=0:threads=1:layers=torch")
    assert (v.config, v.precision, v.workers, v.threads, v.torch_layers, v.compile) == ("3d_org", "bf16", 0, 1, True,
                                                                                        False)
    with pytest.raises(SystemExit):
        Variant.parse("3d:fp16")
    with pytest.raises(SystemExit):
        Variant.parse("3d:fp32:worker=1")


def test_torch_layer_network_has_torchs_classes_and_the_same_function():
    torch.manual_seed(0)
    model = build_network(hippocampus_spec()).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        expected = model(x)
        legacy = torch_layer_network(model)
        assert {type(m) for m in legacy.modules()} >= {torch.nn.Conv3d, torch.nn.InstanceNorm3d}
        torch.testing.assert_close(legacy(x), expected, rtol=1e-4, atol=1e-4)


def test_doc_sections_are_replaced_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(perf_common, "DOC", tmp_path / "performance.md")
    perf_common.write_doc_section("a", "first")
    perf_common.write_doc_section("b", "second")
    perf_common.write_doc_section("a", "third")
    text = (tmp_path / "performance.md").read_text()
    assert "third" in text and "first" not in text and text.index("third") < text.index("second")


def test_steady_seconds_per_case():
    assert steady_s_per_case([10.0, 12.0, 14.5]) == pytest.approx(2.25)
    assert steady_s_per_case([3.0]) is None


def test_gpu_step_check_runs_on_the_cpu_and_reports_measured_rows(tmp_path):
    """The device script's own check before a GPU is lent: one tiny job through run (CPU) and report."""
    import json

    import gpu_step_check
    from gpu_step_report import variant_name
    from satnet.planning.memory import estimate_memory

    spec = NetworkSpec(arch="unet", spatial_dims=3, in_channels=1, num_classes=3, features=[4, 8],
                       kernel_sizes=[[3, 3, 3]] * 2, strides=[[1, 1, 1], [2, 2, 2]], skip="sat")
    estimates = {p: estimate_memory(spec, [8, 8, 8], 2, precision=p).to_dict() for p in ("bf16", "fp32")}
    job = {"name": "tiny SAT", "network": spec.to_dict(), "patch": [8, 8, 8], "batch": 2, "estimates": estimates,
           "variants": False}
    jobs, out, doc = tmp_path / "jobs.json", tmp_path / "steps.json", tmp_path / "gpu.md"
    jobs.write_text(json.dumps({"jobs": [job]}))
    gpu_step_check.main(["run", "--jobs", str(jobs), "--out", str(out), "--device", "cpu", "--steps", "1",
                         "--warmup", "2", "--variant-jobs", "tiny"])
    results = json.loads(out.read_text())["results"]
    assert [(r["precision"], variant_name(r)) for r in results] == [
        ("bf16", ""), ("fp32", ""), ("bf16", "cudnn.benchmark"), ("bf16", "channels_last_3d"),
        ("fp32", "cudnn.benchmark"), ("fp32", "channels_last_3d")]
    assert all("error" not in r and r["steps_per_second"] > 0 and torch.isfinite(torch.tensor(r["loss"]))
               for r in results), results
    gpu_step_check.main(["report", str(out), "--jobs", str(jobs), "--doc", str(doc)])
    table = doc.read_text()
    assert table.count("| tiny SAT | 8x8x8 | 2 |") == 2 and "channels_last_3d" in table


def _collected_row(config: str, arch: str, skip: str, dice: list[float]) -> dict:
    return {"config": config, "arch": arch, "skip": skip, "gate_init": "ones", "label_names": {"1": "lesion"},
            "per_class": {"1": {m: {"mean": 0.5, "std": 0.1} for m in ("dice", "fpr", "fnr")}},
            "case_dice": {f"c{i}": {"1": d} for i, d in enumerate(dice)},
            "epochs": [{"epoch": 0, "train_loss": 0.3, "ema_dice": 0.5}, {"epoch": 1, "train_loss": 0.1, "ema_dice": 0.6}],
            "parameters": 10, "fraction_off_mean": None, "fraction_off_max": None,
            "train_activation_mb": 1.0, "inference_peak_mb": 1.0, "train_seconds": None}


def test_collect_runs_pairs_each_gated_run_with_its_own_architectures_org_run(tmp_path):
    from collect_runs import markdown, paired_against_org, plot

    org = [0.8, 0.7, 0.9, 0.6, 0.85, 0.75, 0.65]
    rows = [_collected_row("2d_org", "unet", "org", org),
            _collected_row("2d", "unet", "sat", [d - 0.1 for d in org]),
            _collected_row("2d_tiramisu", "tiramisu", "sat", org)]  # no Tiramisu ORG run: no pairing
    paired_against_org(rows)
    assert "vs_org" not in rows[0] and "vs_org" not in rows[2]
    pair = rows[1]["vs_org"]
    assert pair["config"] == "2d_org" and pair["1"]["n"] == 7
    assert pair["1"]["mean_difference"] == pytest.approx(-0.1)
    assert pair["1"]["wilcoxon_p"] < 0.05
    table = markdown(rows, "t", "cmd")
    assert "-0.100 (" in table and table.count("\n| ") == 4  # header + three rows
    plot(rows, tmp_path / "curves.png", "t")
    assert (tmp_path / "curves.png").stat().st_size > 0
