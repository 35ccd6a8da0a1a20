"""The network call of prediction on each backend: torch (satnet's CPU layers, channels_last) against ONNX Runtime
on the same exported weights, interleaved, medians of `--repeats` calls after warm-up (docs/performance.md).

Two 3D U-Nets of random weights, SAT and ORG skips: satnet's Hippocampus 2 mm plan (32-64-128, tiles 20x28x20) and
nnU-Net's Hippocampus 1 mm shape (32-256, tiles 40x56x40); a batch of `--batch` tiles per call, as the sliding
window sends them. Also the largest difference of the logits, relative to their range.

    PYTHONPATH=. python benchmarks/bench_backends.py [--threads 2] [--repeats 7] [--batch 4] [--no-write]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import machine, machine_line, publish  # noqa: E402

from satnet.inference.exported import OnnxRuntimePredictor, export_onnx  # noqa: E402
from satnet.inference.predictor import NetworkPredictor  # noqa: E402
from satnet.nets import NetworkSpec, build_network  # noqa: E402

SHAPES = {"2 mm plan, 32-128": ([32, 64, 128], [20, 28, 20]), "1 mm (nnU-Net's), 32-256": ([32, 64, 128, 256], [40, 56, 40])}


def spec(features: list[int], skip: str) -> NetworkSpec:
    n = len(features)
    return NetworkSpec(arch="unet", spatial_dims=3, in_channels=1, num_classes=3, features=features,
                       kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), skip=skip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (features, patch) in SHAPES.items():
            for skip in ("sat", "org"):
                torch.manual_seed(0)
                network = build_network(spec(features, skip)).eval()
                path = Path(tmp) / f"{skip}{len(features)}.onnx"
                export_onnx(network, 1, patch, path)
                torch_predictor = NetworkPredictor(network, None, None, 3)
                ort_predictor = OnnxRuntimePredictor(path, args.threads)
                tiles = torch.randn(args.batch, 1, *patch)
                times = {"torch": [], "onnxruntime": []}
                with torch.no_grad():
                    expected, got = torch_predictor(tiles), ort_predictor(tiles)
                    for _ in range(2):  # warm-up
                        torch_predictor(tiles), ort_predictor(tiles)
                    for _ in range(args.repeats):
                        for key, predictor in (("torch", torch_predictor), ("onnxruntime", ort_predictor)):
                            start = time.perf_counter()
                            predictor(tiles)
                            times[key].append(time.perf_counter() - start)
                error = float((got - expected).abs().max() / (expected.max() - expected.min()))
                t, o = statistics.median(times["torch"]), statistics.median(times["onnxruntime"])
                rows.append({"network": name, "skip": skip, "patch": patch, "batch": args.batch, "torch_s": t,
                             "onnxruntime_s": o, "onnxruntime_over_torch": o / t, "max_rel_logit_error": error})
    record = {"machine": machine(), "repeats": args.repeats, "rows": rows}
    lines = [machine_line(record), "",
             f"Network call on a batch of {args.batch} tiles, medians of {args.repeats} interleaved calls; random weights.",
             "", "| network | skip | tiles | torch s | ONNX Runtime s | ORT / torch | max logit error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['skip']} | {'x'.join(map(str, r['patch']))} | {r['torch_s']:.3f} | "
                     f"{r['onnxruntime_s']:.3f} | **{r['onnxruntime_over_torch']:.2f}x** | {r['max_rel_logit_error']:.1e} |")
    publish("backends", record, "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
