"""CPU prediction speed per precision and memory format, measured side by side.

    python benchmarks/bench_predict.py                 # about a minute on 2 CPU cores
    python benchmarks/bench_predict.py --threads 1

Runs `sliding_window_predict` with mirroring TTA (8 flips) over one case of 40x56x40 voxels
(Hippocampus at its native 1 mm spacing, nnU-Net's patch for it) with a randomly initialised
4-stage 3D U-Net (32-64-128-256, SAT skips, instance norm), in four variants: fp32 or bf16
autocast, contiguous or channels_last_3d. Variants run interleaved, `--repeats` times each,
after one warm-up call each; the table gives the median seconds and the ratio to fp32
contiguous, and how far bf16's softmax probabilities are from fp32's. `--write` also puts the
table into the `bench_predict` section of docs/performance.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import machine, machine_line, write_doc_section  # noqa: E402

from satnet.inference.predictor import NetworkPredictor, cpu_supports_bf16  # noqa: E402
from satnet.inference.sliding_window import sliding_window_predict  # noqa: E402
from satnet.nets import build_network, reference_spec  # noqa: E402

VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patch", type=int, nargs=3, default=[40, 56, 40])
    parser.add_argument("--write", action="store_true", help="also write the table into docs/performance.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = 4
    spec = reference_spec("unet", 3, "sat", features=[32, 64, 128, 256], kernel_sizes=[[3, 3, 3]] * n,
                          strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1))
    torch.manual_seed(0)
    image = torch.randn(1, *args.patch)
    predictors, times, probs = {}, {}, {}
    for precision, channels_last in VARIANTS:
        network = build_network(spec).eval()
        dtype = torch.bfloat16 if precision == "bf16" else None
        predictors[(precision, channels_last)] = NetworkPredictor(network, dtype, channels_last, 3)
    state = next(iter(predictors.values())).network.state_dict()
    for p in predictors.values():
        p.network.load_state_dict(state)

    def run(key):
        start = time.perf_counter()
        logits = sliding_window_predict(predictors[key], image, args.patch, 3, mirror_axes=(0, 1, 2))
        return time.perf_counter() - start, torch.softmax(logits, 0)

    for key in predictors:  # warm-up: oneDNN builds its kernels on the first call
        probs[key] = run(key)[1]
        times[key] = []
    for _ in range(args.repeats):
        for key in predictors:
            times[key].append(run(key)[0])
    base = statistics.median(times[VARIANTS[0]])
    lines = [f"Sliding window over one {'x'.join(map(str, args.patch))} case (one patch), 8 mirrored predictions, "
             f"random 4-stage SAT U-Net 32-256; native bf16: {cpu_supports_bf16()}; medians of {args.repeats} "
             "interleaved runs.", "",
             "| precision | memory format | median s | ratio to fp32 contiguous | max abs prob. diff to fp32 |",
             "|---|---|---|---|---|"]
    for key in predictors:
        diff = (probs[key] - probs[VARIANTS[0]]).abs().max().item()
        med = statistics.median(times[key])
        lines.append(f"| {key[0]} | {'channels_last_3d' if key[1] else 'contiguous'} | {med:.3f} | {med / base:.2f} | "
                     f"{diff:.4f} |")
    text = machine_line({"machine": machine()}) + "\n\n" + "\n".join(lines)
    print(text)
    if args.write:
        write_doc_section("bench_predict", text)

if __name__ == "__main__":
    main()
