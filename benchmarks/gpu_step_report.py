"""The tables of docs/gpu.md from the results files of `benchmarks/gpu_step_check.py run` (CPU only).

    PYTHONPATH=. python benchmarks/gpu_step_check.py report RESULTS...   # earliest first

Split from gpu_step_check.py so that the measuring script carried to the device stays short.
"""
from __future__ import annotations

import json
from pathlib import Path

GIB = 2 ** 30


def job_estimate(job: dict, precision: str) -> dict:
    """The planner's estimate of a job at a precision (fp16 takes what bf16 takes)."""
    return job["estimates"].get(precision) or job["estimates"]["bf16"]


def gib(n) -> str:
    return "" if n is None else f"{n / GIB:.3f}"


def variant_name(r: dict) -> str:
    if r.get("system") == "nnunet":  # its own settings (cudnn.benchmark on) are part of the system
        return ""
    return "cudnn.benchmark" if r["cudnn_benchmark"] else "channels_last_3d" if r["channels_last"] else ""


def merged_rows(records: list[tuple[Path, dict]]) -> dict:
    """Rows keyed by (job, precision, variant); a later results file replaces an earlier one's row."""
    rows = {}
    for _, record in records:
        for r in record["results"]:
            if r.get("system", "satnet") == "satnet":  # nnU-Net's rows have their own table
                rows[(r["job"], r["precision"], variant_name(r))] = r
    return rows


def nnunet_table(records: list[tuple[Path, dict]]) -> list[str]:
    """nnU-Net's step beside satnet's of the same run, job by job (time and peak as ratios to nnU-Net's)."""
    lines = []
    for path, record in records:
        for theirs in (r for r in record["results"] if r.get("system") == "nnunet" and "error" not in r):
            ours = [r for r in record["results"] if r.get("system", "satnet") == "satnet" and r["job"] == theirs["job"]
                    and not variant_name(r) and "error" not in r]
            if not lines:
                lines = ["", "Beside nnU-Net v2's training step at the same network, patch and batch (its "
                         "PlainConvUNet, loss, optimizer, fp16 GradScaler and cudnn.benchmark; no data loader on "
                         "either side), measured in the same run:", "",
                         "| plan | nnU-Net fp16 steps / s | nnU-Net peak GiB | satnet | steps / s | satnet time / "
                         "nnU-Net's | peak GiB | satnet peak / nnU-Net's | file |", "|---|---|---|---|---|---|---|---|---|"]
            for r in ours:
                lines.append(
                    f"| {theirs['job']} | {theirs['steps_per_second']:.2f} | {gib(theirs.get('train_peak'))} | "
                    f"{r['precision']} | {r['steps_per_second']:.2f} | "
                    f"{theirs['steps_per_second'] / r['steps_per_second']:.2f} | {gib(r.get('train_peak'))} | "
                    + (f"{r['train_peak'] / theirs['train_peak']:.2f}" if r.get("train_peak") and theirs.get("train_peak")
                       else "") + f" | {path.name} |")
    return lines


def report(results_paths: list[Path], jobs_path: Path, doc: Path) -> None:
    """The tables of docs/gpu.md from one or more results files (later files replace earlier rows)."""
    records = [(p, json.loads(p.read_text())) for p in results_paths]
    jobs = {j["name"]: j for j in json.loads(jobs_path.read_text())["jobs"]}
    rows = merged_rows(records)
    m = records[-1][1]["machine"]
    files = ", ".join(f"`benchmarks/results/{p.name}` ({r['machine']['date'][:16]})" for p, r in records)
    lines = [
        "<!-- gpu_step_check -->",
        f"{m.get('gpu', m['device'])} ({m.get('gpu_memory_gib', '?')} GiB), torch {m['torch']}, CUDA {m.get('cuda')}, "
        f"cuDNN {m.get('cudnn')} (TF32 convolutions {'on' if m.get('cudnn_allow_tf32') else 'off'}). Results: {files}; "
        "a later file's row replaces an earlier one's. Command: `PYTHONPATH=. python benchmarks/gpu_step_check.py "
        f"report {' '.join('benchmarks/results/' + p.name for p, _ in records)}`.",
        "",
        "Estimate: the planner's `total` at that precision; measured: `torch.cuda.max_memory_allocated` over the "
        "second training step, counted from zero (parameters, optimizer state, batch included). Inference: the "
        "peak of a no-grad forward of one patch above what was allocated before it.",
        "",
        "| plan | patch | batch | precision | estimate GiB | measured GiB | measured / estimate | "
        "inference est. / meas. MiB | steps / s | Mvoxels / s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, precision, variant), r in rows.items():
        if variant:
            continue
        job = jobs[name]
        est = job_estimate(job, precision)
        patch = "x".join(map(str, job["patch"]))
        if "error" in r:
            lines.append(f"| {name} | {patch} | {job['batch']} | {precision} | {gib(est['total'])} | {r['error']} | | | | |")
            continue
        peak, inf = r.get("train_peak"), r.get("inference_peak")
        ratio = f"{peak / est['total']:.3f}" if peak else ""
        lines.append(
            f"| {name} | {patch} | {job['batch']} | {precision} | {gib(est['total'])} | {gib(peak)} | "
            f"{ratio} | "
            f"{est['inference'] / 2**20:.0f} / {'' if inf is None else f'{inf / 2**20:.0f}'} | "
            f"{r['steps_per_second']:.2f} | {r['voxels_per_second'] / 1e6:.1f} |")
    variants = [(k, r) for k, r in rows.items() if k[2] and "error" not in r and (k[0], k[1], "") in rows]
    if variants:
        lines += ["", "Settings the trainer does not use on CUDA, against the default row of the same plan and precision:",
                  "", "| plan | precision | setting | steps / s | vs default | measured GiB |", "|---|---|---|---|---|---|"]
        for (name, precision, variant), r in variants:
            base = rows[(name, precision, "")]
            lines.append(f"| {name} | {precision} | {variant} | {r['steps_per_second']:.2f} | "
                         f"{r['steps_per_second'] / base['steps_per_second']:.2f}x | {gib(r.get('train_peak'))} |")
    lines += ["", "bf16 peak against the fp32 peak of the same plan, per results file:", "",
              "| plan | " + " | ".join(p.name for p, _ in records) + " |", "|---|" + "---|" * len(records)]
    for name in jobs:
        fp32 = rows.get((name, "fp32", ""), {}).get("train_peak")
        cells = []
        for _, record in records:
            bf16 = next((r.get("train_peak") for r in record["results"]
                         if r["job"] == name and r["precision"] == "bf16" and not variant_name(r)), None)
            cells.append(f"{bf16 / fp32:.2f}" if bf16 and fp32 else "")
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += nnunet_table(records)
    profiled = [(k, r) for k, r in rows.items() if r.get("kernels")]
    if profiled:
        lines += ["", "Profiled rows: the three ops or kernels with the most GPU time per step (an op's time "
                  "includes its kernels):", "", "| plan | precision | setting | steps / s | top GPU time per step |",
                  "|---|---|---|---|---|"]
        for (name, precision, variant), r in profiled:
            top = "; ".join(f"{k['name'][:90].replace('|', '/')} {k['ms']:.0f} ms" for k in r["kernels"][:3])
            lines.append(f"| {name} | {precision} | {variant or 'default'} | {r['steps_per_second']:.2f} | {top} |")
    skipped = [s for _, record in records for s in record.get("skipped", [])]
    if skipped:
        lines += ["", "Not measured (a run's time limit): " + "; ".join(skipped) + "."]
    lines.append("<!-- /gpu_step_check -->")
    text = doc.read_text() if doc.exists() else "# GPU measurements\n\n<!-- gpu_step_check -->\n<!-- /gpu_step_check -->\n"
    head, _, rest = text.partition("<!-- gpu_step_check -->")
    _, _, tail = rest.partition("<!-- /gpu_step_check -->")
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(head + "\n".join(lines) + tail)
    tmp.replace(doc)
    print("\n".join(lines))
