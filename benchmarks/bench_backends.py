"""The network call of prediction on each backend: torch (satnet's CPU layers, channels_last) against ONNX Runtime
and OpenVINO (fp32) on the same exported weights, interleaved, medians of `--repeats` calls after warm-up
(docs/performance.md).

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

from satnet.inference.exported import OnnxRuntimePredictor, OpenVinoPredictor, export_onnx  # noqa: E402
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
                predictors = {"torch": torch_predictor, "onnxruntime": OnnxRuntimePredictor(path, args.threads),
                              "openvino": OpenVinoPredictor(path, args.threads)}
                tiles = torch.randn(args.batch, 1, *patch)
                times = {key: [] for key in predictors}
                with torch.no_grad():
                    outputs = {key: p(tiles) for key, p in predictors.items()}
                    for _ in range(2):  # warm-up
                        for p in predictors.values():
                            p(tiles)
                    for _ in range(args.repeats):
                        for key, predictor in predictors.items():
                            start = time.perf_counter()
                            predictor(tiles)
                            times[key].append(time.perf_counter() - start)
                expected = outputs["torch"]
                span = float(expected.max() - expected.min())
                row = {"network": name, "skip": skip, "patch": patch, "batch": args.batch}
                for key in predictors:
                    row[f"{key}_s"] = statistics.median(times[key])
                    row[f"{key}_error"] = float((outputs[key] - expected).abs().max()) / span
                rows.append(row)
    record = {"machine": machine(), "repeats": args.repeats, "rows": rows}
    lines = [machine_line(record), "",
             f"Network call on a batch of {args.batch} tiles, medians of {args.repeats} interleaved calls; random weights.",
             "", "| network | skip | tiles | torch s | ONNX Runtime s (/ torch) | OpenVINO s (/ torch) | max logit error "
             "ORT / OV |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["torch_s"]
        lines.append(f"| {r['network']} | {r['skip']} | {'x'.join(map(str, r['patch']))} | {t:.3f} | "
                     f"{r['onnxruntime_s']:.3f} (**{r['onnxruntime_s'] / t:.2f}x**) | "
                     f"{r['openvino_s']:.3f} (**{r['openvino_s'] / t:.2f}x**) | "
                     f"{r['onnxruntime_error']:.1e} / {r['openvino_error']:.1e} |")
    publish("backends", record, "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
