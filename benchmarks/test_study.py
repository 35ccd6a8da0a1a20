"""Tests of the skip study's arithmetic (benchmarks/study.py): the paired differences, the speed column and
the rule that picks the planner's default. Synthetic rows, no training (well under a second)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study  # noqa: E402

from satnet.nets import NetworkSpec  # noqa: E402


FIELDS = {"org": {"skip": "org"}, "sat": {"skip": "sat"}, "sat4": {"skip": "sat", "skip_channels": 4},
          "sat-org": {"skip": "sat", "skip_levels": ["sat", "org"]}}


def network(skip: str) -> dict:
    """A small 3-stage U-Net whose skip_label() is `skip` (a key of FIELDS)."""
    spec = NetworkSpec(arch="unet", spatial_dims=2, in_channels=1, num_classes=2, features=[8, 16, 32],
                       kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], **FIELDS[skip])
    assert spec.skip_label() == skip
    return spec.to_dict()


def row(dataset: str, config: str, skip: str, seed: int, case_dice: list[float], activation_mb: float) -> dict:
    mean = sum(case_dice) / len(case_dice)
    return {
        "dataset": dataset, "config": config, "seed": seed, "epochs": 2, "iterations": 5, "batch_size": 2,
        "patch": [16, 16], "network": network(skip), "parameters": 100, "train_activation_mb": activation_mb,
        "inference_peak_mb": 1.0, "seconds_per_iteration": 0.5 + seed, "label_names": {"1": "lesion"},
        "per_class": {"1": {"dice": mean, "fpr": 0.01, "fnr": 0.1, "dice_std": 0.05}},
        "case_dice": {f"case_{i}": {"1": d} for i, d in enumerate(case_dice)},
        "curve": [{"epoch": 0, "pseudo_dice": 0.5, "ema_dice": 0.5}, {"epoch": 1, "pseudo_dice": 0.6, "ema_dice": 0.55}],
    }


CASES = [0.70, 0.75, 0.80, 0.82, 0.85, 0.88, 0.90]


def rows_with(costs: dict[str, float], saved: dict[str, float], seeds=(1, 2, 3)) -> list[dict]:
    """ORG and one row per variant on both datasets; a variant's cases are ORG's minus its cost."""
    out = []
    for dataset in ("hip", "isic"):
        for seed in seeds:
            out.append(row(dataset, "org", "org", seed, CASES, 100.0))
            for skip, cost in costs.items():
                out.append(row(dataset, skip, skip, seed, [d - cost for d in CASES], 100.0 - saved[skip]))
    return out


def entry(table: list[dict], dataset: str, config: str) -> dict:
    return next(t for t in table if t["dataset"] == dataset and t["config"] == config)


def test_paired_difference_is_the_mean_case_difference():
    table = study.aggregate(rows_with({"sat": 0.02}, {"sat": 10.0}))
    vs = entry(table, "hip", "sat")["per_label"]["1"]["vs_org"]
    assert vs["mean"] == pytest.approx(-0.02)
    assert vs["seeds"] == 3 and vs["n"] == 3 * len(CASES)
    assert vs["wilcoxon_p"] < 0.05
    assert entry(table, "hip", "org")["per_label"]["1"]["vs_org"] is None


def test_speed_column_comes_from_the_side_by_side_measurement_when_there_is_one():
    rows = rows_with({"sat": 0.0}, {"sat": 10.0})
    table = study.aggregate(rows, {"hip": {"sat": {"seconds_per_iteration": 0.25}}})
    assert entry(table, "hip", "sat")["seconds_per_iteration"] == 0.25
    assert entry(table, "isic", "sat")["seconds_per_iteration"] is None  # not measured: shown as n/a
    assert entry(table, "hip", "sat")["run_seconds_per_iteration"] == 2.5  # the runs' median (seeds 1, 2, 3)
    assert "n/a (2.50)" in "\n".join(study.markdown(table))


def test_default_is_the_lightest_variant_within_tolerance():
    table = study.aggregate(rows_with({"sat": 0.004, "sat4": 0.001, "sat-org": 0.0},
                                      {"sat": 30.0, "sat4": 20.0, "sat-org": 5.0}))
    decision = study.choose_default(table)
    assert decision.startswith("default `sat`:"), decision


def test_default_skips_a_variant_over_tolerance_on_one_dataset():
    rows = rows_with({"sat": 0.004, "sat-org": 0.0}, {"sat": 30.0, "sat-org": 5.0})
    for r in rows:
        if r["dataset"] == "isic" and r["config"] == "sat":
            r["case_dice"] = {c: {"1": d["1"] - 0.01} for c, d in r["case_dice"].items()}  # -0.014 on isic
    decision = study.choose_default(study.aggregate(rows))
    assert decision.startswith("default `sat-org`:"), decision


def test_when_none_qualifies_the_least_dice_per_mb_is_named():
    table = study.aggregate(rows_with({"sat": 0.02, "sat-org": 0.01}, {"sat": 40.0, "sat-org": 5.0}))
    decision = study.choose_default(table)
    assert decision.startswith("no variant is within"), decision
    assert "`sat`" in decision.split("least Dice per MB saved is")[1]  # 0.0005 Dice per MB against 0.002


def test_fewer_seeds_than_the_study_needs_make_the_decision_provisional():
    table = study.aggregate(rows_with({"sat": 0.0}, {"sat": 10.0}, seeds=(1,)))
    assert study.choose_default(table).startswith("provisional (1 of 3 seeds")


def test_no_decision_without_org_runs_on_every_dataset():
    rows = [r for r in rows_with({"sat": 0.0}, {"sat": 10.0}) if not (r["dataset"] == "isic" and r["config"] == "org")]
    assert study.choose_default(study.aggregate(rows)) == "no decision: ORG has no runs on isic"
