"""Where `satnet predict` spends a case's time, and how fast the network runs inside the sliding window.

`time_stages(work_dir, config, fold, num_cases)` predicts the fold's first validation cases in this
process, stage by stage, with the functions `satnet predict` chains (satnet.inference.folder):
read + preprocess (`read_case`, `preprocess_case`), the sliding window with and without mirroring
TTA (`predict_probabilities`), export to the raw grid without and with the probabilities kept
(`export_case`), writing the mask (`write_case`) and writing the float16 npz (`save_probabilities`).
It also counts the network's FLOPs per forward (torch.utils.flop_counter: convolutions and
transposed convolutions) and turns the sliding-window times into GFLOP/s, next to a plain
32->32 3x3x3 convolution over one batch of the patch size timed on the same machine (the
network's largest layer, in the layout and batch the sliding window uses).
"""
from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from satnet.inference.models import load_configuration
from satnet.inference.predictor import (
    InferenceSettings, NetworkPredictor, export_case, predict_probabilities, save_probabilities, write_case,
)
from satnet.inference.sliding_window import tile_grid
from satnet.io.raw_cases import find_cases_in_folder, read_case
from satnet.nets.layers import preferred_memory_format
from satnet.planning.splits import fold_cases, load_splits
from satnet.preprocessing.case import preprocess_case

DEFAULT_RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "Dataset004_Hippocampus"


def network_gflop(network: torch.nn.Module, in_channels: int, patch: list[int]) -> float:
    """GFLOP of one eval forward of one (C, *patch) tile (a multiply-add counts 2).

    Counted on a batch of 2, halved: FlopCounterMode counts aten.convolution, and a batch-1 forward
    calls oneDNN's convolution op directly (satnet.nets.layers).
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(torch.zeros(2, in_channels, *patch))
    return counter.get_total_flops() / 2 / 1e9


def conv_gflops(patch: list[int], batch: int, repeats: int = 5) -> float:
    """GFLOP/s of a fp32 32->32 3x3x3 convolution forward over (batch, 32, *patch), in the preferred layout."""
    layout = preferred_memory_format(torch.device("cpu"), len(patch))
    x = torch.randn(batch, 32, *patch).contiguous(memory_format=layout)
    w = torch.randn(32, 32, *([3] * len(patch))).contiguous(memory_format=layout)
    conv = F.conv3d if len(patch) == 3 else F.conv2d
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            conv(x, w, None, 1, 1)
            if i:
                times.append(time.perf_counter() - start)
    flop = 2 * 32 * 32 * 3 ** len(patch) * x[0, 0].numel() * batch
    return flop / statistics.median(times) / 1e9


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def time_stages(work_dir: Path, config: str, fold: int, num_cases: int, checkpoint: str = "final",
                raw_dir: Path = DEFAULT_RAW) -> dict:
    """Median seconds per case of every stage over the fold's first `num_cases` validation cases; GFLOP/s."""
    models = load_configuration(work_dir, config, [str(fold)], checkpoint, "cpu")
    plan, plans, network = models.plan, models.plans, models.networks[0]
    predictor = NetworkPredictor(network, None, None, len(plan.patch_size))
    wanted = set(sorted(fold_cases(load_splits(work_dir), fold).val)[:num_cases])
    cases = [c for c in find_cases_in_folder(raw_dir / "imagesTr", plans.file_ending, len(plans.channel_names))
             if c.case_id in wanted]
    cpu = torch.device("cpu")
    settings = {tta: InferenceSettings(mirror=tta, device="cpu") for tta in (True, False)}
    gflop = network_gflop(network, plan.network.in_channels, plan.patch_size)
    conv_before = conv_gflops(plan.patch_size, settings[True].tile_batch_size)
    stages: dict[str, list[float]] = {}
    evaluations = {True: 0, False: 0}
    with tempfile.TemporaryDirectory() as out:
        for case in cases:
            def load():
                image, _, geometry = read_case(case, len(plans.channel_names))
                return preprocess_case(image, geometry, None, plan, case.case_id, plans.labels)

            (data, _, props), t = _timed(load)
            stages.setdefault("read + preprocess", []).append(t)
            tiles = len(list(itertools.product(*tile_grid([max(s, p) for s, p in zip(data.shape[1:], plan.patch_size)],
                                                          plan.patch_size, settings[True].step))))
            for tta in (True, False):
                probs, t = _timed(lambda: predict_probabilities([predictor], data, plan, settings[tta], cpu))
                stages.setdefault(f"sliding window, TTA {'on (8 flips)' if tta else 'off'}", []).append(t)
                evaluations[tta] += tiles * (2 ** len(plan.patch_size) if tta else 1)
            _, t = _timed(lambda: export_case(probs, props, plan, keep_probabilities=False))
            stages.setdefault("export: mask on the raw grid", []).append(t)
            full, t = _timed(lambda: export_case(probs, props, plan, keep_probabilities=True))
            stages.setdefault("export: probabilities on the raw grid + mask", []).append(t)
            _, t = _timed(lambda: write_case(full, out, plans.file_ending))
            stages.setdefault("write the mask (.nii.gz)", []).append(t)
            _, t = _timed(lambda: save_probabilities(Path(out) / f"{case.case_id}.npz", full.probabilities))
            stages.setdefault("write the probabilities (.npz, float16)", []).append(t)
    conv_after = conv_gflops(plan.patch_size, settings[True].tile_batch_size)
    totals = {tta: sum(stages[f"sliding window, TTA {'on (8 flips)' if tta else 'off'}"]) for tta in (True, False)}
    return {
        "description": f"{len(cases)} cases, checkpoint_{checkpoint}, {torch.get_num_threads()} threads",
        "cases": [c.case_id for c in cases],
        "times_s": stages,
        "median_s": {k: statistics.median(v) for k, v in stages.items()},
        "gflops": {
            "network_gflop_per_forward": gflop,
            "tta_gflops": gflop * evaluations[True] / totals[True],
            "no_tta_gflops": gflop * evaluations[False] / totals[False],
            "conv_gflops": statistics.median([conv_before, conv_after]),
            "conv_gflops_before_after": [conv_before, conv_after],
            "microbenchmark": f"fp32 conv3d 32->32 3x3x3 over {settings[True].tile_batch_size}x32x"
                              f"{'x'.join(map(str, plan.patch_size))}, channels_last",
        },
    }
