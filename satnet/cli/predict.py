"""`satnet predict`, `satnet evaluate` and `satnet find-best`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from satnet.cli.args import (
    Distinct,
    checkpoint_argument,
    choice,
    existing_dir,
    fold_arg,
    fraction,
    nonnegative_int,
    one_of,
    positive_int,
    subcommand,
)
from satnet.errors import command
from satnet.names import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    DEFAULT_EXPORT_FORMAT,
    DEFAULT_MIRRORS,
    DEFAULT_PREDICT_PRECISION,
    DEVICES,
    EXPORT_FORMATS,
    MIRROR_SETS,
    PREDICT_PRECISIONS,
)


def part_arg(text: str) -> tuple[int, int]:
    """--part I/N: predict every N-th case starting at I, 0 <= I < N."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"must be I/N with integers 0 <= I < N (e.g. 0/4), not {text!r}")
    return i, n


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _run_predict(args: argparse.Namespace) -> int:
    import torch

    from satnet.inference.folder import Part, predict_folder
    from satnet.inference.settings import InferenceSettings

    settings = InferenceSettings(step=args.step, mirror=not args.no_tta, mirrors=args.mirrors, precision=args.precision,
                                 device=args.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or available_cores())
    try:
        report = predict_folder(
            args.input_dir, args.output_dir, args.work_dir, configs=args.configs, folds=args.folds,
            checkpoint=args.checkpoint, settings=settings, save_probabilities=args.save_probabilities,
            resume=args.resume, part=Part(*args.part), backend=args.backend, overwrite=args.overwrite,
        )
    finally:
        torch.set_num_threads(previous_threads)
    skipped = f" ({len(report.skipped)} already there, skipped)" if report.skipped else ""
    print(f"predicted {len(report.predicted)} case(s) into {args.output_dir}{skipped}")
    if report.failed:
        print(f"satnet predict: error: {len(report.failed)} case(s) could not be predicted and were skipped:\n"
              f"{report.failure_summary()}\nfix them and rerun with --continue to predict only what is missing",
              file=sys.stderr)
        return 1
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from satnet.inference.exported import export_configuration

    export_configuration(args.work_dir, args.config, args.output_dir, folds=args.folds, checkpoint=args.checkpoint,
                         fmt=args.format)
    print(f"next: {command('satnet', 'predict', '-i', 'INPUT_DIR', '-o', 'OUTPUT_DIR', '-m', args.output_dir)}")
    return 0


@subcommand
def _add_export(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write a self-contained model folder (ONNX) that predicts without the work folder",
                       description="Export the trained folds of one configuration as ONNX networks (dynamic batch and "
                                   "spatial size) with satnet_model.json, which holds everything prediction needs "
                                   "(plan, labels, channels, postprocessing; docs/formats.md). `satnet predict -m "
                                   "OUT_DIR` then runs them with OpenVINO or ONNX Runtime.")
    p.add_argument("-m", "--model", dest="work_dir", type=existing_dir, required=True, metavar="WORK_DIR",
                   help="the work folder the configuration was trained in")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG", help="the configuration to export, e.g. 3d")
    p.add_argument("-f", "--folds", nargs="+", action=Distinct, type=fold_arg, default=None, metavar="FOLD",
                   help="folds to export (default: every fold with the checkpoint)")
    p.add_argument("-o", "--output", dest="output_dir", type=Path, required=True, metavar="OUT_DIR",
                   help="folder for the exported model (outside the work folder)")
    p.add_argument("--format", **one_of(EXPORT_FORMATS), default=DEFAULT_EXPORT_FORMAT,
                   help=f"network format: onnx (default {DEFAULT_EXPORT_FORMAT}; runs on ONNX Runtime and OpenVINO) or "
                        "openvino (OpenVINO IR, fp32; runs on OpenVINO only, without the onnx package)")
    checkpoint_argument(p)
    p.set_defaults(handler=_run_export)
    return p


@subcommand
def _add_predict(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="segment a folder of images with the trained models",
                       description="Predict every case of INPUT_DIR ({case}_0000<ending>, ... as in imagesTs) with the "
                                   "models in WORK_DIR and write {case}<ending> masks with each input's geometry to "
                                   "OUTPUT_DIR.")
    p.add_argument("-i", "--input", dest="input_dir", type=existing_dir, required=True, metavar="INPUT_DIR",
                   help="folder of images named {case}_{channel:04d}<ending>")
    p.add_argument("-o", "--output", dest="output_dir", type=Path, required=True, metavar="OUTPUT_DIR",
                   help="folder for the masks (created if needed; masks there are replaced only if satnet predict "
                        "wrote them, or with --overwrite)")
    p.add_argument("-m", "--model", dest="work_dir", type=existing_dir, required=True, metavar="WORK_DIR",
                   help="the work folder the models were trained in, or a folder made by `satnet export`")
    p.add_argument("--backend", **one_of(BACKENDS), default=DEFAULT_BACKEND,
                   help="torch runs a work folder's checkpoints; openvino or onnxruntime an exported folder (pip "
                        "install -e \".[openvino]\" or \".[onnx]\"); auto: torch, or for an exported folder openvino "
                        f"when installed, else onnxruntime; the log names it (default {DEFAULT_BACKEND})")
    p.add_argument("-c", "--config", dest="configs", nargs="+", action=Distinct, default=None, metavar="CONFIG",
                   help="configuration(s); two are ensembled (default: the one `satnet find-best` recommends, else "
                        "3d if planned, else the first)")
    p.add_argument("-f", "--folds", nargs="+", action=Distinct, type=fold_arg, default=None, metavar="FOLD",
                   help="folds to ensemble (default: every fold with the checkpoint)")
    checkpoint_argument(p, unset=True)
    p.add_argument("--step", type=fraction, default=0.5,
                   help="sliding-window step as a fraction of the patch, in (0, 1] (default 0.5)")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation (about 8x faster in 3D)")
    p.add_argument("--mirrors", **one_of(MIRROR_SETS), default=DEFAULT_MIRRORS,
                   help=f"which mirrored copies test-time augmentation predicts: all (default {DEFAULT_MIRRORS}; 8 in "
                        "3D, 4 in 2D), axes "
                        "(unflipped and each axis alone: 4 in 3D, 2x faster) or opposite (unflipped and all axes at "
                        "once: 2, 4x faster). Dice against all, 40 Hippocampus cases (3D): axes -0.0006 / 0.0000, opposite "
                        "-0.0008 / -0.0022, --no-tta -0.0042 / -0.0053; 40 ISIC images (2D): axes -0.0012, opposite "
                        "+0.0002, --no-tta -0.0039 (docs/predict.md)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write {case}.npz: float16 class probabilities (K, Z, Y, X) on the input's grid")
    p.add_argument("--precision", **one_of(PREDICT_PRECISIONS), default=DEFAULT_PREDICT_PRECISION,
                   help=f"bf16 autocast where the device computes bf16 natively (default {DEFAULT_PREDICT_PRECISION}); "
                        "an exported model runs in fp32 and refuses bf16")
    p.add_argument("--device", **one_of(DEVICES), default=DEFAULT_DEVICE,
                   help=f"auto: CUDA when available, else the CPU (default {DEFAULT_DEVICE}); an exported model runs "
                        "on the CPU and refuses cuda")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="PyTorch CPU threads (default: the cores available; on a busy shared machine fewer can be "
                        "faster)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="skip cases whose outputs already exist")
    p.add_argument("--overwrite", action="store_true",
                   help="replace masks of the cases in OUTPUT_DIR that satnet predict did not write (without it, such "
                        "files are refused: reference labels are not predictions)")
    p.add_argument("--part", type=part_arg, default=(0, 1), metavar="I/N",
                   help="predict every N-th case starting at I (0 <= I < N), to split a folder over processes")
    p.set_defaults(handler=_run_predict)
    return p


def _run_evaluate(args: argparse.Namespace) -> int:
    from satnet.evaluation.evaluate import SUMMARY_FILE, evaluate_folders, format_table
    from satnet.io.pool import default_workers

    output = args.output or args.prediction_dir / SUMMARY_FILE
    summary = evaluate_folders(args.reference_dir, args.prediction_dir, labels=args.labels, output=output,
                               workers=args.workers or default_workers(), dataset_json=args.dataset_json)
    print(format_table(summary))
    print(f"summary written to {output}")
    return 0


@subcommand
def _add_evaluate(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="Dice, FPR and FNR of predicted masks against references",
                       description="Pair GT_DIR/{case}<ending> with PRED_DIR/{case}<ending> and report Dice, FPR and "
                                   "FNR per case and label, with mean +- std per label.")
    p.add_argument("reference_dir", type=existing_dir, metavar="GT_DIR", help="reference segmentations")
    p.add_argument("prediction_dir", type=existing_dir, metavar="PRED_DIR", help="predicted segmentations")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="SUMMARY_JSON",
                   help="where to write the summary (default PRED_DIR/summary.json)")
    p.add_argument("-l", "--labels", nargs="+", action=Distinct, type=nonnegative_int, default=None, metavar="LABEL",
                   help="label values to score (default: the foreground labels of --dataset-json, or of the "
                        "dataset.json or plans.json beside GT_DIR, else every non-zero value found); voxels under that "
                        "file's \"ignore\" label are left out either way")
    p.add_argument("--dataset-json", type=Path, default=None, metavar="FILE",
                   help="the dataset.json (or a work folder's plans.json) whose labels, ignore label and file ending "
                        "the references use (default: the one beside GT_DIR, e.g. RAW/dataset.json for "
                        "RAW/labelsTs); nnU-Net's -djfile")
    p.add_argument("-j", "--workers", type=positive_int, default=None,
                   help="worker processes (default: half the cores)")
    p.set_defaults(handler=_run_evaluate)
    return p


def _run_find_best(args: argparse.Namespace) -> int:
    from satnet.inference.find_best import find_best, missing_folds_fix
    from satnet.io.pool import default_workers

    result = find_best(args.work_dir, workers=args.workers or default_workers())
    print("cross-validation mean Dice:")
    for rank, cand in enumerate(result["ranking"], 1):
        dice = "n/a" if cand["mean_dice"] is None else f"{cand['mean_dice']:.4f}"
        print(f"  {rank}. {cand['name']}: {dice}")
    for config, folds in result["incomplete"].items():
        print(f"  (not ranked: {config}, folds {', '.join(map(str, folds))} missing: "
              f"{missing_folds_fix(args.work_dir, config, folds)})")
    best, post = result["best"], result["postprocessing"]
    after = best["mean_dice_postprocessed"]
    print(f"best: {best['name']}; postprocessing {post['decision']} -> mean Dice "
          f"{'n/a' if after is None else f'{after:.4f}'} (saved to {post['file']})")
    print(f"predict with:\n  {result['predict_command']}")
    return 0


@subcommand
def _add_find_best(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("find-best", help="rank the trained configurations by cross-validation Dice",
                       description="Rank every configuration with all folds trained, try the ensemble of the two best, "
                                   "decide postprocessing for the winner and print the `satnet predict` command.")
    p.add_argument("work_dir", type=existing_dir, metavar="WORK_DIR", help="the work folder")
    p.add_argument("-j", "--workers", type=positive_int, default=None,
                   help="worker processes for reading the validation outputs (default: half the cores)")
    p.set_defaults(handler=_run_find_best)
    return p
