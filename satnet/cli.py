"""The `satnet` command: one argparse parser with a subcommand per stage.

Heavy modules (torch, SimpleITK) are imported inside each handler, so `satnet --help` is fast.
Errors a user can fix (`SatnetError`, and OS errors such as a full disk or a folder without
write permission) are printed as one clear message without a traceback and give exit code 1;
`--debug` shows the traceback. Bad flag values are rejected by argparse (exit code 2) with a
message that names the flag, the valid range and the value given.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from satnet import __version__
from satnet.errors import SatnetError, did_you_mean

log = logging.getLogger("satnet")


# ---------------------------------------------------------------------------------------------
# Argument types: each says what was expected and what was given.


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {text!r}")
    return value


def _number(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """float(text) when ok(value), else an ArgumentTypeError 'must be <expected>, not <text>'."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, not {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    return _number(text, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    return _number(text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def choice(*options: str) -> Callable[[str], str]:
    """An argparse type accepting one of `options`, with a 'did you mean' for near misses."""

    def parse(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(options)}, not {text!r}{did_you_mean(text, options)}"
            )
        return text

    parse.__name__ = "choice"
    return parse


def fold_arg(text: str) -> str:
    """A fold: an integer >= 0 or "all"."""
    if text == "all" or (text.isdigit() and str(int(text)) == text):
        return text
    raise argparse.ArgumentTypeError(f"must be a fold number (0, 1, ...) or 'all', not {text!r}")


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be an existing folder, not {text!r} (no such folder)")
    return path


def default_work_dir(raw_dir: Path) -> Path:
    """`$SATNET_WORK/<dataset folder>` when SATNET_WORK is set, else `./satnet_work/<dataset folder>`."""
    root = os.environ.get("SATNET_WORK") or "satnet_work"
    return Path(root) / Path(raw_dir).resolve().name


# ---------------------------------------------------------------------------------------------
# The parser.


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose unknown-subcommand error suggests the closest name."""

    def error(self, message: str):  # type: ignore[override]
        import re

        m = re.search(r"argument COMMAND: invalid choice: '([^']*)'", message)
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if m and sub is not None:
            message += did_you_mean(m.group(1), sub.choices)
        super().error(message)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="satnet",
        description="Self-configuring medical image segmentation with SAT skip connections.",
    )
    parser.add_argument("--version", action="version", version=f"satnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser)
    sub.required = True
    for add in _SUBCOMMANDS:
        p = add(sub)
        _common(p)
    return parser


# Each entry adds one subparser and sets `handler`; see the sections below.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], argparse.ArgumentParser]] = []


def subcommand(add: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]):
    _SUBCOMMANDS.append(add)
    return add


# ---------------------------------------------------------------------------------------------
# plan-and-preprocess, plan, preprocess


def spacing_arg(values: list[str]) -> str | list[float]:
    """--spacing: "2" (or any one number: isotropic), "auto", "default", or three numbers Z Y X."""
    if len(values) == 1 and values[0] in ("auto", "default"):
        return values[0]
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 3) or any(not (n > 0 and n < float("inf")) for n in numbers):
        raise argparse.ArgumentTypeError(
            f"must be 'auto', one positive number (isotropic mm) or three (Z Y X mm), not {' '.join(values)!r}"
        )
    return numbers * 3 if len(numbers) == 1 else numbers


def _planning_arguments(p: argparse.ArgumentParser, with_options: bool) -> None:
    p.add_argument("raw_dir", type=existing_dir, metavar="RAW_DATASET_DIR",
                   help="dataset in nnU-Net's raw layout (dataset.json, imagesTr/, labelsTr/)")
    p.add_argument("-o", "--output", dest="work_dir", type=Path, default=None, metavar="WORK_DIR",
                   help="work folder (default: $SATNET_WORK/<dataset folder> or ./satnet_work/<dataset folder>)")
    p.add_argument("--configs", nargs="+", type=choice("2d", "3d"), default=None, metavar="{2d,3d}",
                   help="configurations to plan/preprocess (default: 2d, and 3d for volumetric data)")
    p.add_argument("-j", "--workers", type=positive_int, default=None,
                   help="worker processes for reading and preprocessing cases (default: half the cores)")
    if with_options:
        p.add_argument("--gpu-memory-gb", type=positive_float, default=8.0,
                       help="GPU memory PyTorch may allocate during training, GiB (default 8)")
        p.add_argument("--arch", type=choice("unet", "vnet", "tiramisu"), default="unet", metavar="{unet,vnet,tiramisu}",
                       help="network family (default unet)")
        p.add_argument("--skip", type=choice("sat", "st", "at", "org"), default="sat", metavar="{sat,st,at,org}",
                       help="skip connection mode (default sat)")
        p.add_argument("--gate-init", type=choice("ones", "glorot"), default="ones", metavar="{ones,glorot}",
                       help="initial select weights W of st/sat gates (default ones: every channel on; glorot: the "
                            "SAT paper's Keras default, about half the channels start off)")
        p.add_argument("--spacing", nargs="+", default=["default"], metavar="MM",
                       help="target spacing: 2 mm isotropic by default (native pixels for 2D images), "
                            "'auto' (nnU-Net's median rule), one number, or Z Y X")


def _resolve_common(args: argparse.Namespace):
    from satnet.io.pool import default_workers

    work_dir = args.work_dir or default_work_dir(args.raw_dir)
    return work_dir, args.workers or default_workers()


def _planner_options(args: argparse.Namespace, parser_error) -> "PlannerOptions":
    from satnet.planning.planner import CONFIG_NAMES, PlannerOptions

    try:
        spacing = spacing_arg(args.spacing)
    except argparse.ArgumentTypeError as exc:
        parser_error(f"argument --spacing: {exc}")  # worded as argparse words its own checks
    return PlannerOptions(gpu_memory_gb=args.gpu_memory_gb, arch=args.arch, skip=args.skip, spacing=spacing,
                          configs=args.configs or list(CONFIG_NAMES), gate_init=args.gate_init)


def _run_plan_and_preprocess(args: argparse.Namespace, preprocess: bool = True) -> int:
    from satnet.preprocessing import stage

    work_dir, workers = _resolve_common(args)
    options = _planner_options(args, args.parser_error)
    dataset, plans = stage.plan(args.raw_dir, work_dir, options, workers)
    print(stage.summary(plans))
    if preprocess:
        stage.preprocess(dataset, plans, work_dir, list(plans.configurations), workers)
        print(f"preprocessed {len(dataset.cases)} cases into {work_dir / 'preprocessed'}")
    print(f"next: satnet train {work_dir} {next(iter(reversed(plans.configurations)))} 0")
    return 0


def _run_preprocess(args: argparse.Namespace) -> int:
    from satnet.preprocessing import stage

    work_dir, workers = _resolve_common(args)
    plans = stage.preprocess_from_plans(args.raw_dir, work_dir, args.configs, workers)
    print(f"preprocessed {', '.join(args.configs or plans.configurations)} into {work_dir / 'preprocessed'}")
    return 0


@subcommand
def _add_plan_and_preprocess(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plan-and-preprocess", help="check a raw dataset, plan the configurations, preprocess",
                       description="Check RAW_DATASET_DIR, write fingerprint.json, plans.json and splits.json into "
                                   "WORK_DIR, and preprocess every case.")
    _planning_arguments(p, with_options=True)
    p.set_defaults(handler=_run_plan_and_preprocess, parser_error=p.error)
    return p


@subcommand
def _add_plan(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plan", help="check, fingerprint and plan only (no preprocessing)")
    _planning_arguments(p, with_options=True)
    p.set_defaults(handler=lambda a: _run_plan_and_preprocess(a, preprocess=False), parser_error=p.error)
    return p


@subcommand
def _add_preprocess(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("preprocess", help="preprocess with an existing WORK_DIR/plans.json (resumable)")
    _planning_arguments(p, with_options=False)
    p.set_defaults(handler=_run_preprocess)
    return p


# ---------------------------------------------------------------------------------------------
# train


def _train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainOptions field; None (not given) leaves the field's default (satnet/training/options.py)."""
    from satnet.training.options import DEVICES, INIT_SCHEMES, LR_SCHEDULES, OPTIMIZERS, PRECISIONS

    def flag(name: str, kind: Callable[[str], object] | tuple[str, ...], help: str, metavar: str | None = None) -> None:
        if isinstance(kind, tuple):
            kind, metavar = choice(*kind), "{" + ",".join(kind) + "}"
        p.add_argument(name, type=kind, default=None, help=help, metavar=metavar)

    flag("--epochs", positive_int, "epochs to train (default 1000)", "E")
    flag("--iterations-per-epoch", positive_int, "training batches per epoch (default 250)", "I")
    flag("--val-iterations", positive_int, "validation batches per epoch for the pseudo-Dice (default 50)", "V")
    flag("--optimizer", OPTIMIZERS, "sgd (nnU-Net: Nesterov, momentum 0.99, poly decay) or adadelta (the SAT "
         "paper: lr 1, rho 0.95, Glorot init, constant lr); default sgd")
    flag("--lr", positive_float, "initial learning rate (default: sgd 0.01, adadelta 1.0)", "X")
    flag("--momentum", unit_interval, "SGD momentum, Nesterov (default 0.99)", "M")
    flag("--weight-decay", nonnegative_float, "weight decay (default: sgd 3e-5, adadelta 0)", "W")
    flag("--rho", unit_interval, "Adadelta rho (default 0.95)", "R")
    flag("--eps", positive_float, "Adadelta epsilon (default 1e-8)", "EPS")
    flag("--lr-schedule", LR_SCHEDULES, "poly: lr * (1 - epoch/epochs)^exponent per epoch; constant "
         "(default: sgd poly, adadelta constant)")
    flag("--poly-exponent", positive_float, "exponent of the poly schedule (default 0.9)", "P")
    flag("--grad-clip", positive_float, "maximum gradient norm (default 12)", "N")
    flag("--batch-size", positive_int, "global batch size, split over DDP ranks (default: the plan's)", "B")
    flag("--precision", PRECISIONS, "autocast: bf16, fp16 (CUDA only) or fp32 (default: CUDA bf16, or fp16 where "
         "bf16 is unsupported; CPU fp32)")
    flag("--device", DEVICES, "auto: CUDA when present, else the CPU (default auto)")
    flag("--workers", nonnegative_int, "augmentation processes per rank; 0: in the training process, exactly "
         "reproducible on resume (default: cores - 2, 1..12)", "N")
    flag("--seed", nonnegative_int, "random seed of weights and data (default: drawn, stored in the checkpoint)", "S")
    flag("--init", INIT_SCHEMES, "weight initialisation (default: sgd he, adadelta glorot)")


# Flag destinations that are TrainOptions fields.
TRAIN_OPTION_FLAGS = (
    "epochs", "iterations_per_epoch", "val_iterations", "optimizer", "lr", "momentum", "weight_decay", "rho", "eps",
    "lr_schedule", "poly_exponent", "grad_clip", "batch_size", "precision", "device", "workers", "seed", "init",
)


def _run_train(args: argparse.Namespace) -> int:
    from satnet.training.options import TrainOptions
    from satnet.training.trainer import train
    from satnet.training.validation import final_validation, validate_trained_fold

    if args.validation_only:
        summary = validate_trained_fold(args.work_dir, args.config, args.fold)
        _print_validation(summary)
        return 0
    given = {name: getattr(args, name) for name in TRAIN_OPTION_FLAGS if getattr(args, name) is not None}
    result = train(args.work_dir, args.config, args.fold, TrainOptions(**given), resume=args.resume,
                   given=list(given), progress_bar=not args.quiet)
    if result.is_main:
        print(f"trained {args.config} fold {args.fold} for {result.epochs_completed} epochs: {result.fold_dir}")
        if not args.no_validation:
            summary = final_validation(args.work_dir, result.fold_dir, result.network, result.plans, result.plan,
                                       result.data_dir, result.val_cases)
            _print_validation(summary)
    return 0


def _print_validation(summary: dict | None) -> None:
    if summary is None:
        return
    per = ", ".join(f"{summary['label_names'].get(k, k)} {v['dice']['mean']:.4f}"
                    for k, v in summary["per_class"].items() if v["dice"]["mean"] is not None)
    print(f"validation Dice ({summary['num_cases']} cases): {per}")


@subcommand
def _add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train one configuration on one cross-validation fold",
        description="Train configuration CONFIG of WORK_DIR/plans.json on fold FOLD of WORK_DIR/splits.json, writing "
                    "checkpoints, training_log.json and progress.png into WORK_DIR/results/CONFIG/fold_FOLD. "
                    "Defaults follow nnU-Net (docs/training.md). Multi-GPU: torchrun --nproc_per_node=N -m satnet.cli "
                    "train ...",
    )
    p.add_argument("work_dir", type=Path, metavar="WORK_DIR", help="the work folder of `satnet plan-and-preprocess`")
    p.add_argument("config", metavar="CONFIG", help="a configuration of plans.json, e.g. 3d or 2d")
    p.add_argument("fold", type=fold_arg, metavar="FOLD", help="fold of splits.json (0-4 by default) or 'all'")
    _train_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from checkpoint_latest.pt (optimiser, schedule, epoch and random states)")
    p.add_argument("--no-validation", action="store_true",
                   help="skip the final validation (predicting the fold's validation cases into fold_<k>/validation)")
    p.add_argument("--validation-only", action="store_true",
                   help="only (re)run the final validation with checkpoint_final.pt")
    p.set_defaults(handler=_run_train)
    return p


# ---------------------------------------------------------------------------------------------
# predict, evaluate, find-best


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
    from satnet.inference.predictor import InferenceSettings

    settings = InferenceSettings(step=args.step, mirror=not args.no_tta, precision=args.precision, device=args.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or available_cores())
    try:
        report = predict_folder(
            args.input_dir, args.output_dir, args.work_dir, configs=args.configs, folds=args.folds,
            checkpoint=args.checkpoint, settings=settings, save_probabilities=args.save_probabilities,
            resume=args.resume, part=Part(*args.part),
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


@subcommand
def _add_predict(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="segment a folder of images with the trained models",
                       description="Predict every case of INPUT_DIR ({case}_0000<ending>, ... as in imagesTs) with the "
                                   "models in WORK_DIR and write {case}<ending> masks with each input's geometry to "
                                   "OUTPUT_DIR.")
    p.add_argument("-i", "--input", dest="input_dir", type=existing_dir, required=True, metavar="INPUT_DIR",
                   help="folder of images named {case}_{channel:04d}<ending>")
    p.add_argument("-o", "--output", dest="output_dir", type=Path, required=True, metavar="OUTPUT_DIR",
                   help="folder for the masks (created if needed)")
    p.add_argument("-m", "--model", dest="work_dir", type=existing_dir, required=True, metavar="WORK_DIR",
                   help="the work folder the models were trained in")
    p.add_argument("-c", "--config", dest="configs", nargs="+", default=None, metavar="CONFIG",
                   help="configuration(s); two are ensembled (default: the one `satnet find-best` recommends, else "
                        "3d if planned, else the first)")
    p.add_argument("-f", "--folds", nargs="+", type=fold_arg, default=None, metavar="FOLD",
                   help="folds to ensemble (default: every fold with the checkpoint)")
    p.add_argument("--checkpoint", type=choice("final", "best"), default="final", metavar="{final,best}",
                   help="which checkpoint of each fold (default final)")
    p.add_argument("--step", type=fraction, default=0.5,
                   help="sliding-window step as a fraction of the patch, in (0, 1] (default 0.5)")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation (about 8x faster in 3D)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write {case}.npz: float16 class probabilities (K, Z, Y, X) on the input's grid")
    p.add_argument("--precision", type=choice("fp32", "bf16"), default="fp32", metavar="{fp32,bf16}",
                   help="bf16 autocast where the device computes bf16 natively (default fp32)")
    p.add_argument("--device", type=choice("auto", "cpu", "cuda"), default="auto", metavar="{auto,cpu,cuda}",
                   help="auto: CUDA when available, else the CPU")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="PyTorch CPU threads (default: the cores available; on a busy shared machine fewer can be "
                        "faster)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="skip cases whose outputs already exist")
    p.add_argument("--part", type=part_arg, default=(0, 1), metavar="I/N",
                   help="predict every N-th case starting at I (0 <= I < N), to split a folder over processes")
    p.set_defaults(handler=_run_predict)
    return p


def _run_evaluate(args: argparse.Namespace) -> int:
    from satnet.evaluation.evaluate import SUMMARY_FILE, evaluate_folders, format_table
    from satnet.io.pool import default_workers

    output = args.output or args.prediction_dir / SUMMARY_FILE
    summary = evaluate_folders(args.reference_dir, args.prediction_dir, labels=args.labels, output=output,
                               workers=args.workers or default_workers())
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
    p.add_argument("-l", "--labels", nargs="+", type=nonnegative_int, default=None, metavar="LABEL",
                   help="label values to score (default: the foreground labels of the dataset.json or plans.json "
                        "beside GT_DIR, else every non-zero value found)")
    p.add_argument("-j", "--workers", type=positive_int, default=None,
                   help="worker processes (default: half the cores)")
    p.set_defaults(handler=_run_evaluate)
    return p


def _run_find_best(args: argparse.Namespace) -> int:
    from satnet.inference.find_best import find_best
    from satnet.io.pool import default_workers

    result = find_best(args.work_dir, workers=args.workers or default_workers())
    print("cross-validation mean Dice:")
    for rank, cand in enumerate(result["ranking"], 1):
        dice = "n/a" if cand["mean_dice"] is None else f"{cand['mean_dice']:.4f}"
        print(f"  {rank}. {cand['name']}: {dice}")
    for config, folds in result["incomplete"].items():
        print(f"  (not ranked: {config}, folds {', '.join(map(str, folds))} missing: "
              f"`satnet train {args.work_dir} {config} {folds[0]}`)")
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


# ---------------------------------------------------------------------------------------------
# visualize


def _run_visualize(args: argparse.Namespace) -> int:
    from satnet.inference.visualize import visualize_scan

    report = visualize_scan(args.work_dir, args.config, args.fold, args.scan, args.output_dir, args.checkpoint)
    for gate in report["gates"]:
        off = f", {100 * gate['fraction_off']:.1f}% of channels off" if "fraction_off" in gate else ""
        att = f", attention mean {gate['attention']['mean']:.3f}" if "attention" in gate else ""
        print(f"  {gate['name']} ({gate['mode']}, {gate['channels']} channels){off}{att}")
    print(f"pictures and gates.json written to {args.output_dir}")
    return 0


@subcommand
def _add_visualize(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("visualize", help="pictures of the SAT gates' attention maps and select weights on one scan",
                       description="Run one trained fold on one scan with gate recording on and write each gate's "
                                   "attention map over the image, bar charts of trelu(W) per gate and gates.json.")
    p.add_argument("-m", "--model", dest="work_dir", type=existing_dir, required=True, metavar="WORK_DIR")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG", help="configuration, e.g. 3d")
    p.add_argument("-f", "--fold", type=fold_arg, required=True, metavar="FOLD")
    p.add_argument("-i", "--input", dest="scan", type=Path, required=True, metavar="SCAN",
                   help="the scan's first channel file, {case}_0000<ending>")
    p.add_argument("-o", "--output", dest="output_dir", type=Path, required=True, metavar="OUT_DIR")
    p.add_argument("--checkpoint", type=choice("final", "best"), default="final", metavar="{final,best}")
    p.set_defaults(handler=_run_visualize)
    return p


# ---------------------------------------------------------------------------------------------
# demo


def _run_demo(args: argparse.Namespace) -> int:
    from satnet.demo import run_demo

    return run_demo(args.output_dir, workers=args.workers)


@subcommand
def _add_demo(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the whole pipeline on a synthetic dataset (a few minutes on a CPU)",
                       description="Write a small synthetic 3D dataset, then plan-and-preprocess, train fold 0 briefly, "
                                   "predict the held-out cases and evaluate them, with the real commands.")
    p.add_argument("-o", "--output", dest="output_dir", type=Path, default=Path("satnet_demo"), metavar="DIR",
                   help="folder for the dataset, the work folder and the predictions (default ./satnet_demo)")
    p.add_argument("--workers", type=nonnegative_int, default=0,
                   help="augmentation worker processes for training (default 0: in the training process)")
    p.set_defaults(handler=_run_demo)
    return p


# ---------------------------------------------------------------------------------------------
# main


def _configure_logging(args: argparse.Namespace) -> Callable[[], None]:
    """Send satnet's log records to stderr as plain lines; returns a function restoring the previous set-up
    (so calling main() from Python, as the tests do, leaves logging as it found it)."""
    saved = (list(log.handlers), log.level, log.propagate)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False

    def restore() -> None:
        log.handlers[:] = saved[0]
        log.setLevel(saved[1])
        log.propagate = saved[2]

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_logging = _configure_logging(args)
    try:
        return int(args.handler(args) or 0)
    except SatnetError as exc:
        if args.debug:
            raise
        print(f"satnet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"satnet {args.command}: error: {exc.strerror or exc}{where}; check that the path exists, "
              f"is writable and the disk has space, then rerun (finished outputs are kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"satnet {args.command}: interrupted; finished outputs are kept, rerun to continue", file=sys.stderr)
        return 130
    finally:
        restore_logging()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
