"""Seconds per case, `satnet predict` beside `nnUNetv2_predict`, with the same weights, TTA on and off.

    python benchmarks/bench_predict_vs_nnunet.py WORK_DIR                    # 10 cases x 2 rounds, ~20 min
    python benchmarks/bench_predict_vs_nnunet.py WORK_DIR --cases 40 --rounds 1
    python benchmarks/bench_predict_vs_nnunet.py WORK_DIR --cases 40 --rounds 1 --backends torch openvino onnxruntime
    python benchmarks/bench_predict_vs_nnunet.py WORK_DIR --stages-only      # in-process breakdown, ~3 min

WORK_DIR is satnet's Hippocampus work folder with a trained `3d_org` fold (nnU-Net's 3d_fullres
network exactly: plan it with `--spacing auto --skip org`, train it with `satnet train`). Its
weights are ported to nnU-Net (benchmarks/nnunet_port.py; the logits of the two networks are
compared first), so both tools predict with one network and the Dice difference measures only
their preprocessing, sliding window and export. The fold's first `--cases` validation cases
(sorted) are linked into one input folder.

Each round runs, for each TTA mode, `satnet predict` (a fresh process per `--backends` entry: torch on the
checkpoint, ONNX Runtime / OpenVINO on a `satnet export` of it) and `nnUNetv2_predict`
(benchmarks/peers: -npp 3 -nps 3, nnU-Net's defaults) on those cases. Reported per run: wall
seconds per case (start-up included), steady seconds per case (between the first and the last
case finished: throughput without start-up), the Dice of each tool (satnet's evaluator for both,
against the raw labels) and the voxels on which the two masks agree. Ratios are nnU-Net's time
over satnet's of the same round (throughput ratio).

The stages section (in this process, satnet only) times reading + preprocessing, the sliding
window with and without TTA, export to the raw grid, writing the mask and writing the npz per
case, and the GFLOP/s the network achieves inside the sliding window against a plain
32->32 3x3x3 convolution at the patch size (the network's largest layer) on the same machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.perf_common import (  # noqa: E402
    REPO, fmt, import_peers, load_average, machine, machine_line, median, results_line, save_results,
    write_doc_section,
)
from predict_stages import time_stages  # noqa: E402
from satnet.evaluation.evaluate import evaluate_folders  # noqa: E402
from satnet.io.images import read_label  # noqa: E402
from satnet.planning.splits import fold_cases, load_splits  # noqa: E402


def link_inputs(site, dataset_id: int, cases: list[str], folder: Path) -> Path:
    """A fresh folder of symlinks to the cases' channel files (both tools read a folder)."""
    if folder.exists():
        for f in folder.iterdir():
            f.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for f in site.image_files(dataset_id, case):
            (folder / f.name).symlink_to(f)
    return folder


def steady_s_per_case(times: list[float]) -> float | None:
    """Seconds per case between the first and the last case finished (throughput without start-up)."""
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None


def run_satnet(site, args, inputs: Path, out: Path, tta: bool, num_cases: int, backend: str = "torch",
               exported: Path | None = None, mirrors: str = "all") -> dict:
    """One `satnet predict` process over the input folder: the work folder's checkpoint on torch, or the exported
    folder on ONNX Runtime / OpenVINO."""
    from measure import run_measured

    command = [sys.executable, "-m", "satnet.cli", "predict", "-i", inputs, "-o", out]
    if backend == "torch":
        command += ["-m", args.work_dir, "-c", args.config, "-f", str(args.fold), "--checkpoint", args.checkpoint]
    else:
        command += ["-m", exported]
    command += ["--backend", backend] + (["--mirrors", mirrors] if tta else ["--no-tta"])
    command += ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    stamp = time.strftime('%Y%m%d-%H%M%S')
    log = site.runs / "logs" / f"satnet_predict_{backend}_{'tta-' + mirrors if tta else 'notta'}_{stamp}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = run_measured(command, env=env, log_path=log)
    if result.returncode != 0:
        raise RuntimeError(f"satnet predict failed ({result.returncode}); see {log}")
    done = result.times(": done in ")
    return {"backend": backend, "wall_s": result.wall_s, "s_per_case": result.wall_s / num_cases,
            "steady_s_per_case": steady_s_per_case(done), "first_case_done_s": done[0] if done else None,
            "peak_tree_pss_mib": result.peak_tree_pss_mib, "log": str(log), "prediction_dir": str(out)}


def export_model(args, folder: Path) -> Path:
    """`satnet export` of the fold's checkpoint into `folder` (replaced), for the ONNX backends."""
    command = [sys.executable, "-m", "satnet.cli", "export", "-m", str(args.work_dir), "-c", args.config,
               "-f", str(args.fold), "--checkpoint", args.checkpoint, "-o", str(folder), "-q"]
    subprocess.run(command, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return folder


def run_nnunet(site, args, tta: bool, checkpoint_name: str) -> dict:
    runs = import_peers()
    record = runs.time_prediction(site, args.dataset, args.nnunet_config, args.fold, trainer="nnUNetTrainer",
                                  num_cases=args.cases, tta_modes=(tta,), checkpoint=checkpoint_name)
    r = record["runs"][0]
    return {"wall_s": r["wall_s"], "s_per_case": r["s_per_case"], "steady_s_per_case": nnunet_steady(r["log_path"]),
            "first_case_done_s": r["startup_s"] + r["network_s_per_case"][0],
            "median_network_s_per_case": r["median_network_s_per_case"], "peak_tree_pss_mib": r["peak_tree_pss_mib"],
            "log": r["log_path"], "prediction_dir": r["prediction_dir"],
            "nnunet_dice_foreground_mean": r["dice_foreground_mean"]}


def nnunet_steady(log_path: str) -> float | None:
    """Steady seconds per case from nnU-Net's log: times of its 'done with' lines."""
    times = []
    for line in Path(log_path).read_text().splitlines():
        if "done with " in line and line.startswith("["):
            times.append(float(line[1:line.index("]")]))
    return steady_s_per_case(times)


def dice(site, dataset_id: int, prediction_dir: str, cases: list[str]) -> dict:
    labels_dir = site.raw / site.dataset_name(dataset_id) / "labelsTr"
    summary = evaluate_folders(labels_dir, prediction_dir, case_ids=cases)
    per_label = {str(k): v["dice"]["mean"] for k, v in summary["per_class"].items()}
    return {"mean_dice": summary["mean"]["dice"], "dice_per_label": per_label}


def agreement(a_dir: str, b_dir: str, cases: list[str], ending: str) -> float:
    """Fraction of voxels on which two folders of masks agree, over the cases."""
    same = total = 0
    for case in cases:
        a, _ = read_label(Path(a_dir) / f"{case}{ending}")
        b, _ = read_label(Path(b_dir) / f"{case}{ending}")
        same += int(np.count_nonzero(a == b))
        total += a.size
    return same / total


# ---------------------------------------------------------------------------------------------
# The run


def prepare(args, site) -> tuple[list[str], str, Path]:
    """The cases, nnU-Net's checkpoint name of the ported weights (checked against satnet's logits), the inputs."""
    import nnunet_port

    cases = sorted(fold_cases(load_splits(args.work_dir), args.fold).val)[: args.cases]
    checkpoint = args.work_dir / "results" / args.config / f"fold_{args.fold}" / f"checkpoint_{args.checkpoint}.pt"
    name = nnunet_port.port_name(checkpoint)
    model_dir = nnunet_port.port_checkpoint(checkpoint, site, args.dataset, args.nnunet_config, args.fold, name)
    args.port_max_logit_difference = nnunet_port.verify_port(checkpoint, site, model_dir, args.fold, name)
    print(f"ported {checkpoint} to {model_dir}; largest logit difference {args.port_max_logit_difference:.2e}",
          flush=True)
    inputs = link_inputs(site, args.dataset, cases, site.runs / site.dataset_name(args.dataset) / "satnet_vs_nnunet"
                         / "input")
    return cases, name, inputs


def run(args) -> dict:
    import_peers()
    from nnunet_env import NnunetSite

    site = NnunetSite()
    record = {"machine": machine(), "config": args.config, "fold": args.fold, "rounds": []}
    loads = [load_average()]
    if not args.stages_only:
        cases, name, inputs = prepare(args, site)
        record.update(cases=cases, port_max_logit_difference=args.port_max_logit_difference)
        ending = site.dataset_json(args.dataset)["file_ending"]
        exported = None
        if any(b != "torch" for b in args.backends):
            exported = export_model(args, inputs.parent / "satnet_export")
        for r in range(args.rounds):
            for tta in args.tta:
                mode = 'tta' if tta else 'notta'
                ours = {}
                for backend in args.backends:
                    print(f"round {r + 1}, TTA {'on' if tta else 'off'}: satnet ({backend})", flush=True)
                    ours[backend] = run_satnet(site, args, inputs, inputs.parent / f"satnet_{backend}_{mode}", tta,
                                               len(cases), backend, exported)
                    loads.append(load_average())
                for mirrors in args.mirrors if tta else ():
                    print(f"round {r + 1}, TTA {mirrors}: satnet (torch)", flush=True)
                    ours[f"torch, --mirrors {mirrors}"] = run_satnet(site, args, inputs, inputs.parent / f"satnet_{mirrors}",
                                                                     tta, len(cases), "torch", None, mirrors)
                    loads.append(load_average())
                print(f"round {r + 1}, TTA {'on' if tta else 'off'}: nnU-Net", flush=True)
                theirs = run_nnunet(site, args, tta, name)
                loads.append(load_average())
                theirs.update(dice(site, args.dataset, theirs["prediction_dir"], cases))
                reference = ours[args.backends[0]]["prediction_dir"]
                for result in ours.values():
                    result.update(dice(site, args.dataset, result["prediction_dir"], cases))
                    result["agreement_with_first_backend"] = agreement(reference, result["prediction_dir"], cases, ending)
                first = ours[args.backends[0]]
                record["rounds"].append({"round": r, "tta": tta, "satnet": first, "backends": ours, "nnunet": theirs,
                                         "voxel_agreement": agreement(first["prediction_dir"], theirs["prediction_dir"],
                                                                      cases, ending)})
                print(predict_table(record), flush=True)
    if args.stages or args.stages_only:
        record["stages"] = time_stages(args.work_dir, args.config, args.fold, args.stage_cases, args.checkpoint)
        loads.append(load_average())
    record["load_avg_range"] = [min(loads), max(loads)]
    return record


def predict_table(record: dict) -> str:
    lines = ["| TTA | tool | wall s / case | steady s / case | peak memory MiB | mean Dice | Dice per label | "
             "speed-up over nnU-Net (wall, steady) | masks = first backend's |", "|---|---|---|---|---|---|---|---|---|"]
    for tta in (True, False):
        rounds = [r for r in record["rounds"] if r["tta"] == tta]
        if not rounds:
            continue
        backends = list(rounds[0].get("backends") or {"torch": rounds[0]["satnet"]})
        tools = [("satnet", b) for b in backends] + [("nnunet", None)]
        for tool, backend in tools:
            runs = [(r.get("backends") or {"torch": r["satnet"]})[backend] if backend else r["nnunet"] for r in rounds]
            labels = runs[0]["dice_per_label"]
            per_label = ", ".join(f"{k}: {labels[k]:.4f}" for k in sorted(labels))
            speed = same = ""
            if backend:
                wall = median([r["nnunet"]["wall_s"] / x["wall_s"] for r, x in zip(rounds, runs)])
                steady = [r["nnunet"]["steady_s_per_case"] / x["steady_s_per_case"] for r, x in zip(rounds, runs)
                          if r["nnunet"]["steady_s_per_case"] and x["steady_s_per_case"]]
                speed = f"**{fmt(wall)}x**, {fmt(median(steady))}x"
                agree = [x.get("agreement_with_first_backend") for x in runs]
                same = "" if None in agree else f"{min(agree):.6f}"
            name = f"satnet, {backend}" if backend else "nnU-Net v2"
            lines.append(f"| {'on' if tta else 'off'} | {name} | {fmt(median([x['s_per_case'] for x in runs]))} | "
                         f"{fmt(median([x['steady_s_per_case'] for x in runs if x['steady_s_per_case']]))} | "
                         f"{fmt(median([x['peak_tree_pss_mib'] for x in runs if x.get('peak_tree_pss_mib')]), 0)} | "
                         f"{runs[0]['mean_dice']:.4f} | {per_label} | {speed} | {same} |")
        agree = statistics.median(r["voxel_agreement"] for r in rounds)
        lines.append(f"| {'on' if tta else 'off'} | masks of satnet ({backends[0]}) and nnU-Net agree on | "
                     f"{agree:.5f} of the voxels | | | | | | |")
    return "\n".join(lines)


def stages_table(stages: dict) -> str:
    rows = ["| stage | median s per case |", "|---|---|"]
    rows += [f"| {name} | {fmt(value, 3)} |" for name, value in stages["median_s"].items()]
    g = stages["gflops"]
    rows += ["", f"Network inside the sliding window: {g['network_gflop_per_forward']:.1f} GFLOP per forward of one "
             f"patch; TTA on: **{g['tta_gflops']:.0f} GFLOP/s**, TTA off: **{g['no_tta_gflops']:.0f} GFLOP/s**; "
             f"plain conv microbenchmark ({g['microbenchmark']}): **{g['conv_gflops']:.0f} GFLOP/s** "
             f"(the network reaches {g['tta_gflops'] / g['conv_gflops']:.2f} of it with TTA, "
             f"{g['no_tta_gflops'] / g['conv_gflops']:.2f} without)."]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("work_dir", type=Path, help="satnet work folder with a trained ORG configuration")
    parser.add_argument("--config", default="3d_org", help="satnet configuration (default 3d_org)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--checkpoint", default="final", choices=("final", "best", "latest"))
    parser.add_argument("--cases", type=int, default=10, help="first N validation cases of the fold (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--tta", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--threads", type=int, help="satnet predict --threads (default: satnet's)")
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime", "openvino"), default=["torch"],
                        help="satnet predict --backend values, each a run (default torch); the others predict from "
                             "a `satnet export` of the same checkpoint, and their masks are compared with the first's")
    parser.add_argument("--mirrors", nargs="*", choices=("axes", "opposite"), default=[],
                        help="with TTA on, also satnet (torch) with these cheaper `--mirrors` sets (their masks differ)")
    parser.add_argument("--dataset", type=int, default=4, help="nnU-Net dataset id (default 4)")
    parser.add_argument("--nnunet-config", default="3d_fullres")
    parser.add_argument("--stages", action="store_true", help="also time satnet's stages and GFLOP/s in-process")
    parser.add_argument("--stages-only", action="store_true", help="only the stages (no nnU-Net, no subprocesses)")
    parser.add_argument("--stage-cases", type=int, default=5, help="cases for the stages (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only; no results file, no docs table")
    args = parser.parse_args()
    args.tta = [t == "on" for t in args.tta]
    record = run(args)
    text = machine_line(record) + "\n"
    if record["rounds"]:
        text += (f"\n{len(record['cases'])} Hippocampus fold-{args.fold} validation cases, satnet `{args.config}` "
                 f"weights ported to nnU-Net (largest logit difference {record['port_max_logit_difference']:.1e}); "
                 f"medians over {args.rounds} round(s); speed-up = nnU-Net's time / satnet's in the same round.\n\n"
                 + predict_table(record) + "\n")
    if "stages" in record:
        text += "\nsatnet's stages (in-process, " + record["stages"]["description"] + "):\n\n"
        text += stages_table(record["stages"]) + "\n"
    print(text)
    if not args.no_write:
        path = save_results("predict_vs_nnunet", record)
        print("results:", path)
        section = "bench_predict_vs_nnunet" if record["rounds"] else "bench_predict_stages"
        write_doc_section(section, text.rstrip() + "\n\n" + results_line(path))


if __name__ == "__main__":
    main()
