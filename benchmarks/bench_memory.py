"""Benchmark the memory model against real CPU training steps; writes its table into docs/memory.md.

    python benchmarks/bench_memory.py            # 3D U-Net [32..320] at 96^3, batch 2, org and sat (long)
    python benchmarks/bench_memory.py --small    # U-Nets [16..128] at 64^3 and 256^2: under 2 minutes
    python benchmarks/bench_memory.py --estimate-only   # the estimates alone, beside nnU-Net's proxy: seconds

For each network it reports the estimator's runtime (wall and CPU seconds, median of 3 after
a first call) and compares its numbers with measurements of real CPU steps:
- activations vs the heap growth over forward + loss (glibc mallinfo2),
- the step's peak vs the heap read after every op (op-boundary peak) and vs the profiler's
  allocation events (exact peak, which includes the kernels' workspaces inside one op),
- total vs the process's peak RSS growth over one real training step (forward, loss,
  backward, optimizer step) in a fresh process, counted from before the model was built,
- nnU-Net's planning proxy (its feature-map voxel count x batch x 4 bytes), for the U-Net.

The networks are satnet's own (satnet.nets.build_network).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "planning"))  # memory_measure: the tests' yardstick, measured here too

from satnet.nets import build_network  # noqa: E402
from satnet.nets.spec import NetworkSpec  # noqa: E402
from satnet.planning.memory import autocast_context, dice_ce_loss, estimate_memory, trace_training_step  # noqa: E402
from memory_measure import measure_training_step, trim_heap  # noqa: E402

MIB = 2 ** 20


def unet_spec(dims: int, features: list[int], skip: str) -> NetworkSpec:
    n = len(features)
    return NetworkSpec(arch="unet", spatial_dims=dims, in_channels=1, num_classes=3, features=features,
                       kernel_sizes=[[3] * dims] * n, strides=[[1] * dims] + [[2] * dims] * (n - 1), skip=skip)


def build(spec: NetworkSpec) -> tuple[torch.nn.Module, str]:
    """satnet's network for the spec, and the name the table gives it."""
    torch.manual_seed(0)
    return build_network(spec), spec.arch


def make_optimizer(name: str, params) -> torch.optim.Optimizer:
    if name == "sgd":  # nnU-Net's
        return torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, weight_decay=3e-5)
    return torch.optim.Adadelta(params)


def nnunet_proxy_bytes(spec: NetworkSpec, patch: list[int], batch: int) -> int:
    """nnU-Net's planning proxy for a plain U-Net: one feature map per conv, transposed conv and head.

    Per resolution stage s with C_s channels and V_s voxels: encoder convs n_s * C_s * V_s;
    decoder convs n_s * C_s * V_s, transposed-conv output C_s * V_s, head K * V_s. Norm and
    nonlinearity outputs, the concatenated skips and the loss are not in it.
    """
    convs = spec.convs_per_stage or [2] * spec.num_stages
    voxels, size = [], list(patch)
    for stride in spec.strides:
        size = [p // s for p, s in zip(size, stride)]
        voxels.append(math.prod(size))
    total = sum(n * c * v for n, c, v in zip(convs, spec.features, voxels))  # encoder
    for s in range(spec.num_stages - 1):  # decoder stages, one per skip
        total += (convs[s] + 1) * spec.features[s] * voxels[s] + spec.num_classes * voxels[s]
    return total * batch * 4


def concat_bytes(spec: NetworkSpec, patch: list[int], batch: int, itemsize: int = 4) -> int:
    """The decoder's concatenated inputs of a U-Net: upsampled C_s plus the skip's C_s (org, st) or 1 (at, sat)."""
    total, size = 0, list(patch)
    for s, stride in enumerate(spec.strides[:-1]):
        size = [p // st for p, st in zip(size, stride)]
        skip_channels = spec.features[s] if spec.skip in ("org", "st") else 1
        total += (spec.features[s] + skip_channels) * math.prod(size)
    return total * batch * itemsize


# ---------------------------------------------------------------------------------------------
# The process-level measurement, in a fresh process
# ---------------------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss() -> int:
    """VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork and exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def _train_step(net, optimizer, patch, batch, precision) -> None:
    x = torch.randn(batch, 1, *patch)  # (B, 1, *S)
    with torch.no_grad():
        shapes = [o.shape for o in _as_list(net(torch.zeros(1, 1, *patch)))]
    targets = [torch.randint(0, s[1], (batch, *s[2:])) for s in shapes]
    with autocast_context(precision):
        outputs = _as_list(net(x))
        loss = dice_ce_loss(outputs, targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _as_list(outputs):
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def child(args: dict) -> dict:
    """Peak RSS growth of one real training step, from before the model was built."""
    spec = NetworkSpec.from_dict(args["spec"])
    tiny = [2 * s for s in spec.total_stride()]  # the smallest patch instance norm accepts in training
    net, _ = build(spec)  # a first, throwaway round: thread pools, oneDNN, autograd settle
    _train_step(net, make_optimizer(args["optimizer"], net.parameters()), tiny, 1, args["precision"])
    del net
    trim_heap()
    base = _rss()
    net, _ = build(spec)
    net.train()
    optimizer = make_optimizer(args["optimizer"], net.parameters())
    _train_step(net, optimizer, tiny, 1, args["precision"])  # creates the optimizer state
    trim_heap()
    _reset_peak_rss()
    before = _peak_rss()
    _train_step(net, optimizer, args["patch"], args["batch"], args["precision"])
    after = _peak_rss()
    return {"peak_growth": after - base, "set_by_step": after > before, "rss_before_step": before - base}


def measure_process_peak(spec: NetworkSpec, patch, batch, optimizer, precision) -> dict:
    payload = json.dumps({"spec": spec.to_dict(), "patch": list(patch), "batch": batch, "optimizer": optimizer,
                          "precision": precision})
    # A fixed mmap threshold stops glibc from serving large tensors out of its heap, whose freed
    # chunks it keeps, so that RSS follows what is allocated (docs/memory.md).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, __file__, "--child", payload], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------------------------

def time_estimator(net: torch.nn.Module, patch, batch, optimizer, precision) -> tuple[float, float]:
    """Median wall and CPU seconds of estimate_memory on a module (no cache: training and inference traces)."""
    estimate_memory(net, patch, batch, optimizer=optimizer, precision=precision)
    walls, cpus = [], []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        estimate_memory(net, patch, batch, optimizer=optimizer, precision=precision)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def runtime_line(precision: str) -> str:
    """Estimator runtime on the largest default network: 3D U-Net [32..320] at 128^3, batch 2."""
    with torch.device("meta"):  # the timing needs no real parameters
        net, source = build(unet_spec(3, [32, 64, 128, 256, 320, 320], "sat"))
    wall, cpu = time_estimator(net, [128] * 3, 2, "sgd", precision)
    return (f"Estimator runtime, {source} 3D [32, 64, 128, 256, 320, 320] sat at 128^3 x 2, {precision}: "
            f"{wall:.2f} s wall / {cpu:.2f} s CPU per call (median of 3; training and inference traces).")


def bench_row(spec: NetworkSpec, patch, batch, optimizer, precision) -> dict:
    net, source = build(spec)
    est = estimate_memory(net, patch, batch, optimizer=optimizer, precision=precision)
    step = trace_training_step(net, patch, batch, precision)
    wall, cpu = time_estimator(net, patch, batch, optimizer, precision)
    real = measure_training_step(net, patch, batch, precision, in_channels=spec.in_channels, saved=False,
                                 exact_peak=True)
    del net
    trim_heap()
    process = measure_process_peak(spec, patch, batch, optimizer, precision)
    return dict(source=source, spec=spec, patch=list(patch), batch=batch, precision=precision, optimizer=optimizer,
                est=est, step=step, real=real, process=process, wall=wall, cpu=cpu,
                proxy=nnunet_proxy_bytes(spec, patch, batch) if spec.arch == "unet" else None)



# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def _mib(n: int) -> str:
    return f"{n / MIB:,.1f}"


def _err(est: int, real: int) -> str:
    return f"{100 * (est - real) / real:+.1f}%"


def render(rows: list[dict], command: str) -> str:
    lines = [
        f"Measured with `{command}` on CPU ({torch.get_num_threads()} thread{'' if torch.get_num_threads() == 1 else 's'}, torch {torch.__version__}). "
        "MiB; error = (estimate - measured) / measured.",
        "",
        "| network | patch x batch | activations est / measured | step peak est / op-boundary | "
        "step peak + workspace est / exact | "
        "total est / process peak growth | estimator wall / CPU s | nnU-Net proxy (measured activations / proxy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        est, step, real, spec = r["est"], r["step"], r["real"], r["spec"]
        proxy = f"{_mib(r['proxy'])} ({real.activations / r['proxy']:.2f}x)" if r["proxy"] else "-"
        growth = r["process"]["peak_growth"] if r["process"]["set_by_step"] else 0
        lines.append(
            f"| {r['source']} {spec.spatial_dims}D {spec.features} {spec.skip} {r['precision']} {r['optimizer']} "
            f"| {'x'.join(map(str, r['patch']))} x {r['batch']} "
            f"| {_mib(est.activations)} / {_mib(real.activations)} ({_err(est.activations, real.activations)}) "
            f"| {_mib(step.peak)} / {_mib(real.peak)} ({_err(step.peak, real.peak)}) "
            f"| {_mib(step.peak + step.workspace)} / {_mib(real.exact_peak)} "
            f"({_err(step.peak + step.workspace, real.exact_peak)}) "
            f"| {_mib(est.total)} / {_mib(growth) if growth else 'n/a'} ({_err(est.total, growth) if growth else '-'}) "
            f"| {r['wall']:.2f} / {r['cpu']:.2f} | {proxy} |"
        )
    return "\n".join(lines)


def estimate_only(configs, skips, optimizer: str, precision: str) -> str:
    """The estimate of each configuration (no real run: networks on the meta device) beside nnU-Net's proxy."""
    lines = [
        "| network | patch x batch | activations (saved) | step peak + workspace | total | inference "
        "| nnU-Net proxy (fp32) | activations / proxy | concatenated skips / proxy (fp32) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dims, features, patch, batch in configs:
        for skip in skips:
            spec = unet_spec(dims, features, skip)
            with torch.device("meta"):
                net, source = build(spec)
            est = estimate_memory(net, patch, batch, optimizer=optimizer, precision=precision)
            step = trace_training_step(net, patch, batch, precision)
            proxy = nnunet_proxy_bytes(spec, patch, batch)
            lines.append(
                f"| {source} {dims}D {features} {skip} {precision} {optimizer} | {'x'.join(map(str, patch))} x {batch} "
                f"| {_mib(est.activations)} ({_mib(step.saved)}) | {_mib(step.peak)} + {_mib(step.workspace)} "
                f"| {_mib(est.total)} | {_mib(est.inference)} | {_mib(proxy)} | {est.activations / proxy:.2f}x "
                f"| {concat_bytes(spec, patch, batch) / proxy:.0%} |"
            )
    return "MiB; estimates only (no real run).\n\n" + "\n".join(lines)


def write_table(table: str, doc: Path, name: str) -> None:
    """Replace the block between <!-- bench_memory:NAME:start/end --> markers in doc (append it when absent)."""
    start, end = f"<!-- bench_memory:{name}:start -->", f"<!-- bench_memory:{name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{start}\n{table}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    doc.write_text(pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block + "\n",
                   encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small networks and patches: under 2 minutes")
    parser.add_argument("--skips", nargs="+", default=["org", "sat"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adadelta"])
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "memory.md")
    parser.add_argument("--estimate-only", action="store_true", help="only the estimates (seconds, no real run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.small:
        configs = [(3, [16, 32, 64, 128], [64, 64, 64], 1), (2, [16, 32, 64, 128], [256, 256], 2)]
    else:
        configs = [(3, [32, 64, 128, 256, 320, 320], [96, 96, 96], 2)]
    mode = f"{'small' if args.small else 'full'}-{args.precision}"
    if args.estimate_only:
        table = estimate_only(configs, args.skips, args.optimizer, args.precision)
        print(table)
        write_table(table, args.doc, f"estimate-{mode}")
        return
    rows = []
    for dims, features, patch, batch in configs:
        for skip in args.skips:
            row = bench_row(unet_spec(dims, features, skip), patch, batch, args.optimizer, args.precision)
            print(render([row], "").splitlines()[-1], row["process"], flush=True)
            rows.append(row)
    command = "python benchmarks/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = render(rows, command.strip()) + "\n\n" + runtime_line(args.precision)
    print(table)
    write_table(table, args.doc, mode)


if __name__ == "__main__":
    main()
