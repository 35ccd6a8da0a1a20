"""Whole-case `satnet predict` on each backend (torch, ONNX Runtime, OpenVINO) and TTA mode, one process per
run: wall seconds, seconds per case, peak memory of the process tree, whether the masks equal torch's, and (with
--raw) the Dice against the raw labels.

    PYTHONPATH=. python benchmarks/bench_predict_backends.py WORK_DIR -c 2d_org --raw ../shared/data/Dataset017_ISIC2017 \\
        --val-cases 40 --label isic_2d
    PYTHONPATH=. python benchmarks/bench_predict_backends.py WORK_DIR -c 3d_org --raw ../shared/data/Dataset004_Hippocampus \
        --backends torch --tta all axes opposite off --label hip_tta      # the Dice and time of each --mirrors
    PYTHONPATH=. python benchmarks/bench_predict_backends.py WORK_DIR -c 3d_org --synthetic-ct 256 --label ct_256

The torch runs predict from the work folder's checkpoint; the other backends from a `satnet export` of the same
checkpoint (made first, in a scratch folder). `--val-cases K` links the fold's first K validation cases (sorted)
from the raw dataset's imagesTr; `--synthetic-ct N` writes one N x N x N CT-like volume at 1 mm (HU-like
intensities: air, soft tissue, bone; benchmarks only its time, there is no label), where the per-window cost
dominates start-up. Backends and TTA modes run interleaved in one invocation, so their ratios share the
machine's state. The table goes into docs/performance.md (section `bench_predict_backends_<label>`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from measure import run_measured  # noqa: E402
from perf_common import REPO, fmt, load_average, machine, machine_line, publish  # noqa: E402

from satnet.io.images import read_label  # noqa: E402
from satnet.planning.splits import fold_cases, load_splits  # noqa: E402

BACKENDS = ("torch", "onnxruntime", "openvino")


def link_val_cases(work: Path, fold: int, raw: Path, count: int, folder: Path) -> list[str]:
    cases = sorted(fold_cases(load_splits(work), fold).val)[:count]
    folder.mkdir(parents=True)
    for case in cases:
        files = sorted((raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9].*"))
        if not files:
            raise SystemExit(f"{raw / 'imagesTr'} has no channel files for case {case}; is --raw the dataset "
                             f"{work} was planned from?")
        for f in files:
            (folder / f.name).symlink_to(f.resolve())
    return cases


def synthetic_ct(size: int, folder: Path, seed: int = 0) -> list[str]:
    """One CT-like volume (HU: air -1000 around a soft-tissue body ~40 with bone ~700 and noise), 1 mm, .nii.gz."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:size, :size, :size]
    c = (size - 1) / 2
    body = ((y - c) / (0.42 * size)) ** 2 + ((x - c) / (0.36 * size)) ** 2 <= 1
    spine = ((y - 1.45 * c) / (0.06 * size)) ** 2 + ((x - c) / (0.06 * size)) ** 2 <= 1
    volume = np.full((size, size, size), -1000.0, np.float32)
    volume[np.broadcast_to(body, volume.shape)] = 40.0
    volume[np.broadcast_to(spine & body, volume.shape)] = 700.0
    volume += rng.normal(0, 20, volume.shape).astype(np.float32)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((1.0, 1.0, 1.0))
    folder.mkdir(parents=True)
    sitk.WriteImage(image, str(folder / "ct_0000.nii.gz"))
    return ["ct"]


TTA_MODES = ("all", "axes", "opposite", "off")  # `satnet predict --mirrors all|axes|opposite`, or --no-tta


def predict(work: Path, args, exported: Path, backend: str, tta: str, inputs: Path, out: Path, logs: Path) -> dict:
    command = [sys.executable, "-m", "satnet.cli", "predict", "-i", inputs, "-o", out, "--backend", backend]
    if backend == "torch":
        command += ["-m", work, "-c", args.config, "-f", str(args.fold), "--checkpoint", args.checkpoint]
    else:
        command += ["-m", exported]
    command += (["--no-tta"] if tta == "off" else ["--mirrors", tta])
    command += ["--threads", str(args.threads)] if args.threads else []
    log = logs / f"{backend}_{tta}.log"
    result = run_measured(command, env=dict(os.environ, PYTHONPATH=str(REPO)), log_path=log)
    if result.returncode != 0:
        raise SystemExit(f"satnet predict ({backend}) failed with {result.returncode}; see {log}:\n"
                         + log.read_text()[-2000:])
    summary = json.loads((out / "predict_summary.json").read_text())
    seconds = [c["seconds"] for c in summary["cases"] if c.get("seconds") is not None]
    return {"backend": backend, "tta": tta, "wall_s": round(result.wall_s, 2),
            "median_case_s": round(float(np.median(seconds)), 3) if seconds else None,
            "peak_tree_pss_mib": result.peak_tree_pss_mib, "prediction_dir": str(out)}


def agreement(a_dir: str, b_dir: str) -> tuple[float, int, int]:
    """(fraction of voxels equal, cases identical, cases) between two folders of masks."""
    same = total = identical = 0
    files = sorted(p.name for p in Path(a_dir).iterdir() if p.name.endswith((".nii.gz", ".png", ".nrrd", ".mha")))
    for name in files:
        a, _ = read_label(Path(a_dir) / name)
        b, _ = read_label(Path(b_dir) / name)
        equal = int(np.count_nonzero(a == b))
        same, total, identical = same + equal, total + a.size, identical + (equal == a.size)
    return (same / total if total else float("nan")), identical, len(files)


def dice(raw: Path, prediction_dir: str, cases: list[str]) -> dict[str, float]:
    from satnet.evaluation.evaluate import evaluate_folders

    summary = evaluate_folders(raw / "labelsTr", prediction_dir, case_ids=cases)
    return {summary.get("label_names", {}).get(k, k): v["dice"]["mean"] for k, v in summary["per_class"].items()}


def table(record: dict) -> str:
    with_dice = any(r.get("dice") for r in record["runs"])
    lines = ["| TTA | backend | wall s (all cases) | median s / case | speed-up over torch, all mirrors (wall) | "
             "peak memory MiB | masks equal to torch's (voxels; cases) |" + (" Dice |" if with_dice else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if with_dice else "")]
    base = next((r for r in record["runs"] if r["backend"] == "torch" and r["tta"] == "all"), None)
    for tta in TTA_MODES:
        runs = [r for r in record["runs"] if r["tta"] == tta]
        for r in runs:
            speed = f"{base['wall_s'] / r['wall_s']:.2f}x" if base else "n/a"
            agree = "" if r["backend"] == "torch" else f"{r['agreement'][0]:.6f}; {r['agreement'][1]} of {r['agreement'][2]}"
            cells = [tta, r["backend"], fmt(r["wall_s"], 1), fmt(r["median_case_s"], 2), speed,
                     fmt(r["peak_tree_pss_mib"], 0), agree]
            if with_dice:
                cells.append(", ".join(f"{k} {v:.4f}" for k, v in r.get("dice", {}).items()))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("work_dir", type=Path, help="satnet work folder with a trained fold of --config")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--checkpoint", default="final", choices=("final", "best"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--raw", type=Path, help="the raw dataset folder (with --val-cases)")
    source.add_argument("--synthetic-ct", type=int, metavar="N", help="one N^3 CT-like volume at 1 mm")
    parser.add_argument("--val-cases", type=int, default=40)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--tta", nargs="+", choices=TTA_MODES, default=["all", "off"],
                        help="TTA modes: a `--mirrors` set or off (--no-tta); default all off")
    parser.add_argument("--threads", type=int, help="satnet predict --threads (default: satnet's)")
    parser.add_argument("--label", required=True, help="names the docs section and the results file")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    record = {"machine": machine(), "config": args.config, "fold": args.fold, "checkpoint": args.checkpoint,
              "work_dir": args.work_dir.name, "runs": []}
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="satnet-bench-") as tmp:
        tmp = Path(tmp)
        if args.raw:
            record["cases"] = link_val_cases(args.work_dir, args.fold, args.raw, args.val_cases, tmp / "input")
            record["input"] = f"{len(record['cases'])} fold-{args.fold} validation cases of {args.raw.name}"
        else:
            record["cases"] = synthetic_ct(args.synthetic_ct, tmp / "input")
            record["input"] = f"one synthetic CT-like volume of {args.synthetic_ct}^3 voxels at 1 mm"
        exported = tmp / "export"
        if any(b != "torch" for b in args.backends):
            done = subprocess.run([sys.executable, "-m", "satnet.cli", "export", "-m", str(args.work_dir), "-c",
                                   args.config, "-f", str(args.fold), "--checkpoint", args.checkpoint, "-o", str(exported),
                                   "-q"], env=dict(os.environ, PYTHONPATH=str(REPO)))
            if done.returncode:
                raise SystemExit(f"satnet export failed ({done.returncode}); its message is above")
        logs = REPO / "bench_out" / f"predict_backends_{args.label}_{time.strftime('%Y%m%d-%H%M%S')}"
        logs.mkdir(parents=True, exist_ok=True)
        for tta in args.tta:
            runs = []
            for backend in args.backends:
                print(f"TTA {tta}: {backend}", flush=True)
                runs.append(predict(args.work_dir, args, exported, backend, tta, tmp / "input",
                                    tmp / f"out_{backend}_{tta}", logs))
                loads.append(load_average())
            reference = next((r for r in runs if r["backend"] == "torch"), runs[0])
            for r in runs:
                r["agreement"] = agreement(reference["prediction_dir"], r["prediction_dir"])
                if args.raw:
                    r["dice"] = dice(args.raw, r["prediction_dir"], record["cases"])
            for r in runs:
                del r["prediction_dir"]
            record["runs"] += runs
        record["logs"] = str(logs.relative_to(REPO))
    record["load_avg_range"] = [min(loads), max(loads)]
    text = (machine_line(record) + "\n\n" + f"satnet `{args.config}` (fold {args.fold}, {args.work_dir.name}) on "
            f"{record['input']}; one `satnet predict` process per row:\n\n" + table(record) + "\n")
    publish(f"predict_backends_{args.label}", record, text, write=not args.no_write)


if __name__ == "__main__":
    main()
