"""The planner's memory estimate against a real CUDA training step, and steps per second, ORG vs SAT.

Three stages, so that the GPU time goes to measuring only:

    # here (CPU): plan 3D U-Nets (ORG and SAT) for Hippocampus and the synthetic large CT under
    # several budgets, and estimate each plan's memory in fp32 and bf16 -> a jobs file
    PYTHONPATH=. python benchmarks/gpu_step_check.py prepare
    # on a CUDA machine: one real training step per job and precision, as `satnet train` runs it
    # (satnet.training.loop.train_step: the trainer's optimizer, loss, grad clipping and autocast)
    PYTHONPATH=. python benchmarks/gpu_step_check.py run --out gpu_steps.json
    # here again: the table in docs/gpu.md
    PYTHONPATH=. python benchmarks/gpu_step_check.py report gpu_steps.json

`run` measures, per job and precision: torch.cuda.max_memory_allocated over one training step
(the second: the optimizer's momentum buffers exist by then, as in every later step), counted
from zero, so it includes parameters, optimizer state, inputs and targets, exactly what the
estimate's `total` stands for; the peak of an eval-mode no-grad forward of one patch above what
was allocated before it (the estimate's `inference`); and steps per second over a timed run
after warm-up. The default settings are the trainer's (cuDNN autotuning off, contiguous layout on
CUDA); for the jobs marked `variants` it also times cudnn.benchmark=True and channels_last_3d, the
two settings satnet has not chosen on CUDA yet.

`--device cpu` runs the same code without CUDA (memory columns empty): the check of the
script itself before a GPU is lent.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_step_report import GIB, job_estimate, report  # noqa: E402

JOBS = ROOT / "benchmarks" / "results" / "gpu_jobs.json"
DOC = ROOT / "docs" / "gpu.md"
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "Dataset004_Hippocampus"
PRECISIONS = ("bf16", "fp32")  # bf16 first: the trainer's default on CUDA

# (fingerprint, spacing request, budget GiB, time the variants): the plans measured
PLAN_SET = [
    ("Hippocampus", "default", 8.0, False),
    ("Hippocampus", "auto", 8.0, False),
    ("large CT", "default", 8.0, False),
    ("large CT", "default", 24.0, True),
    ("large CT", "auto", 40.0, False),
]


# ---------------------------------------------------------------------------------------------
# prepare (CPU)


def _fingerprints(names: set[str]) -> dict:
    from satnet.planning.fingerprint import synthetic_fingerprint

    fps = {"large CT": synthetic_fingerprint()}
    if "Hippocampus" in names:
        if not (HIPPOCAMPUS / "dataset.json").is_file():
            raise SystemExit(f"prepare needs the Hippocampus dataset at {HIPPOCAMPUS} (../shared/data)")
        from satnet.io.checks import check_dataset
        from satnet.planning.fingerprint import compute_fingerprint

        fps["Hippocampus"] = compute_fingerprint(check_dataset(HIPPOCAMPUS, workers=2), workers=2)
    return fps


def prepare(out: Path, precision: str) -> None:
    from satnet.planning.memory import estimate_memory
    from satnet.planning.planner import PlannerOptions, plan_experiment

    fps = _fingerprints({name for name, *_ in PLAN_SET})
    jobs = []
    for dataset, spacing, gb, variants in PLAN_SET:
        for skip in ("org", "sat"):
            plans, _ = plan_experiment(fps[dataset], PlannerOptions(gpu_memory_gb=gb, skip=skip, spacing=spacing,
                                                                     configs=["3d"], precision=precision))
            (conf,) = plans.configurations.values()
            spec = conf.network.to_dict()
            estimates = {p: estimate_memory(spec, conf.patch_size, conf.batch_size, precision=p).to_dict()
                         for p in PRECISIONS}
            jobs.append({"name": f"{dataset} {spacing} {gb:g} GiB {skip.upper()}", "dataset": dataset,
                         "spacing": spacing, "budget_gb": gb, "skip": skip, "network": spec,
                         "patch": list(conf.patch_size), "batch": conf.batch_size,
                         "planned_precision": plans.planner.precision, "estimates": estimates,
                         "variants": variants})
            print(f"{jobs[-1]['name']}: patch {conf.patch_size} batch {conf.batch_size} "
                  f"estimate fp32 {estimates['fp32']['total'] / GIB:.2f} GiB, bf16 {estimates['bf16']['total'] / GIB:.2f} GiB")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S %z"), "jobs": jobs}, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------
# run (CUDA)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(spec, patch, batch, shapes: list[tuple[int, ...]], as_list: bool) -> dict:
    """A random CPU batch shaped as the training pipeline yields it: float32 data, int64 targets (B, 1, *S_i)."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(batch, spec.in_channels, *patch, generator=g)
    targets = [torch.randint(0, spec.num_classes, (batch, 1, *shape), generator=g) for shape in shapes]
    return {"data": data, "target": targets if as_list else targets[0]}


def _output_shapes(spec, patch) -> tuple[list[tuple[int, ...]], bool]:
    """The spatial shape of every training-mode output, and whether the network returns a list."""
    from satnet.nets import NETWORKS

    with torch.device("meta"):
        out = NETWORKS[spec.arch](spec).train()(torch.empty(1, spec.in_channels, *patch))
    as_list = isinstance(out, (list, tuple))
    return [tuple(o.shape[2:]) for o in (out if as_list else [out])], as_list


def _satnet_setup(job: dict, precision_name: str, device: torch.device, channels_last: bool) -> dict:
    """satnet's training step as `satnet train` runs it: its network, optimizer, loss and train_step."""
    from satnet.nets import build_network
    from satnet.nets.registry import as_spec
    from satnet.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
    from satnet.training.loop import make_precision, train_step
    from satnet.training.options import TrainOptions, resolve_options
    from satnet.training.trainer import make_optimizer

    spec, patch, batch_size = as_spec(job["network"]), job["patch"], job["batch"]
    o = resolve_options(TrainOptions(precision=precision_name, workers=0, seed=0), batch_size,
                        cuda_available=device.type == "cuda")
    precision = make_precision(precision_name, device, spec.spatial_dims)
    if channels_last:
        precision.memory_format = torch.channels_last_3d
    torch.manual_seed(0)
    network = build_network(spec, init=o.init).to(device, memory_format=precision.memory_format)
    optimizer = make_optimizer(network.parameters(), o)
    shapes, as_list = _output_shapes(spec, patch)  # as the trainer's _loss_functions: a list gets deep supervision
    loss_fn = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(len(shapes))) if as_list else DiceCELoss()
    batch = _batch(spec, patch, batch_size, shapes, as_list)

    def infer():
        with torch.no_grad(), precision.autocast():
            network(precision.to_device(batch["data"][:1]))

    return {"network": network, "optimizer": optimizer, "infer": infer,
            "step": lambda: train_step(network, batch, loss_fn, optimizer, precision, o.grad_clip)}


def _nnunet_setup(job: dict, device: torch.device) -> dict:
    """nnU-Net v2's training step for an ORG U-Net job (benchmarks/nnunet_step.py), on the same batch as satnet's."""
    from nnunet_step import nnunet_training_step
    from satnet.nets.registry import as_spec

    spec, patch = as_spec(job["network"]), job["patch"]
    if spec.arch != "unet" or spec.skip != "org":
        raise ValueError(f"nnU-Net's network is an ORG U-Net; job {job['name']!r} is {spec.arch}/{spec.skip}")
    return nnunet_training_step(spec, patch, device, lambda shapes: _batch(spec, patch, job["batch"], shapes, True))


def measure(job: dict, precision_name: str, device: torch.device, steps: int, warmup: int,
            cudnn_benchmark: bool = False, channels_last: bool = False, profile_kernels: int = 0,
            system: str = "satnet") -> dict:
    """Peak memory of the second training step, steps per second after warm-up, inference peak of one patch."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if system == "nnunet":
        run = _nnunet_setup(job, device)
    else:
        run = _satnet_setup(job, precision_name, device, channels_last)
    run["network"].train()
    cuda = device.type == "cuda"
    result = {"job": job["name"], "system": system, "precision": precision_name,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "channels_last": channels_last}
    step = run["step"]
    step()  # creates the momentum buffers
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    loss = step()
    _sync(device)
    result["loss"] = float(loss)
    if cuda:
        result["train_peak"] = torch.cuda.max_memory_allocated(device)
        result["after_step"] = torch.cuda.memory_allocated(device)
    for _ in range(max(0, warmup - 2)):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start
    patch_voxels = job["batch"] * math.prod(job["patch"])
    result.update(steps=steps, seconds=elapsed, steps_per_second=steps / elapsed,
                  voxels_per_second=steps * patch_voxels / elapsed)
    if profile_kernels:
        result["kernels"] = _top_kernels(step, device, profile_kernels)

    run["optimizer"].zero_grad(set_to_none=True)
    run["network"].eval()
    if cuda:
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    run["infer"]()
    _sync(device)
    if cuda:
        result["inference_peak"] = torch.cuda.max_memory_allocated(device) - before
    del run, loss, step
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def _top_kernels(step, device: torch.device, top: int) -> list[dict]:
    """The `top` GPU kernels (CPU ops on a CPU run) by total time over two profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []), record_shapes=True) as prof:
        for _ in range(2):
            step()
        _sync(device)
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        total = e.device_time_total if cuda else e.self_cpu_time_total  # an op's device time includes its kernels
        if total > 0:
            shapes = [s for s in (e.input_shapes or []) if s][:2]
            rows.append({"name": f"{e.key[:100]} {shapes}"[:200], "calls": e.count, "ms": total / 1000 / 2})
    return sorted(rows, key=lambda r: -r["ms"])[:top]


def _device_record(device: torch.device) -> dict:
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "torch": torch.__version__, "host": platform.node(),
              "cpu_cores": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                      cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                      cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return record


def run(jobs_path: Path, out: Path, device_name: str, steps: int, warmup: int, max_seconds: float,
        only: list[str] | None, precisions: list[str], variant_jobs: list[str] | None, profile_kernels: int = 0,
        nnunet: bool = False) -> None:
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA GPU; use --device cpu to check the script")
    jobs = json.loads(jobs_path.read_text())["jobs"]
    if only:
        jobs = [j for j in jobs if any(word in j["name"] for word in only)]
    record = {"machine": _device_record(device), "jobs_file": str(jobs_path), "steps": steps, "warmup": warmup,
              "results": [], "skipped": []}
    start = time.perf_counter()
    if nnunet:  # side by side per job: nnU-Net's step (fp16, its default on CUDA), then satnet's
        plan = [(job, system, p, False, False) for job in jobs
                for system, p in [("nnunet", "fp16")] + [("satnet", p) for p in precisions]]
    else:
        with_variants = [j for j in jobs if (any(w in j["name"] for w in variant_jobs) if variant_jobs
                                             else j["variants"])]
        plan = [(job, "satnet", p, False, False) for job in jobs for p in precisions]
        plan += [(job, "satnet", p, bench, last) for job in with_variants for p in precisions
                 for bench, last in ((True, False), (False, True))]
    for job, system, precision, bench, last in plan:
        label = (f"{job['name']} {'nnU-Net ' if system == 'nnunet' else ''}{precision}"
                 f"{' cudnn.benchmark' if bench else ''}{' channels_last_3d' if last else ''}")
        if time.perf_counter() - start > max_seconds:
            record["skipped"].append(label)
            print(f"skipped (time): {label}", flush=True)
            continue
        try:
            r = measure(job, precision, device, steps, warmup, cudnn_benchmark=bench, channels_last=last,
                        profile_kernels=profile_kernels, system=system)
        except Exception as e:  # reported, not fatal: the next job may run (out of memory, an unsupported layout)
            r = {"job": job["name"], "system": system, "precision": precision, "cudnn_benchmark": bench,
                 "channels_last": last, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        record["results"].append(r)
        est = job_estimate(job, precision)["total"]
        peak = r.get("train_peak")
        for k in r.get("kernels", []):
            print(f"    {k['ms']:9.2f} ms  {k['calls']:5d} x  {k['name'][:110]}")
        print(f"{label}: " + (r["error"] if "error" in r else
              f"{r['steps_per_second']:.2f} steps/s" + (f", peak {peak / GIB:.3f} GiB vs estimate {est / GIB:.3f} "
                                                         f"({peak / est:.3f})" if peak else "")), flush=True)
        tmp = out.with_suffix(".tmp")  # rewritten after every job: a cut-off run keeps what it measured
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(out)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="plan and estimate on the CPU; writes the jobs file")
    p.add_argument("--jobs", type=Path, default=JOBS)
    p.add_argument("--plan-precision", default="fp32", choices=PRECISIONS,
                   help="precision the plans are sized for (default fp32: the plans measured on 2026-11-28; "
                        "both precisions are measured either way)")
    r = sub.add_parser("run", help="measure every job on the device")
    r.add_argument("--jobs", type=Path, default=JOBS)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--max-seconds", type=float, default=300.0, help="start no job after this many seconds")
    r.add_argument("--only", nargs="+", help="jobs whose name contains one of these words")
    r.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile two steps per row and keep the N kernels that took the most time")
    r.add_argument("--precisions", nargs="+", choices=("bf16", "fp16", "fp32"), default=list(PRECISIONS))
    r.add_argument("--nnunet", action="store_true",
                   help="per job, nnU-Net v2's training step at the same network (ORG U-Net jobs; needs nnunetv2 and "
                        "dynamic_network_architectures importable), then satnet's in each --precisions")
    r.add_argument("--variant-jobs", nargs="+",
                   help="time the variants for the jobs whose name contains one of these (default: those the jobs file marks)")
    w = sub.add_parser("report", help="write the table into docs/gpu.md")
    w.add_argument("results", type=Path, nargs="+", help="results files, earliest first")
    w.add_argument("--jobs", type=Path, default=JOBS)
    w.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.jobs, args.plan_precision)
    elif args.command == "run":
        run(args.jobs, args.out, args.device, args.steps, args.warmup, args.max_seconds, args.only, args.precisions,
            args.variant_jobs, args.profile, args.nnunet)
    else:
        report(args.results, args.jobs, args.doc)


if __name__ == "__main__":
    main()
