"""`satnet plan-and-preprocess`, `satnet plan` and `satnet preprocess`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from satnet.cli.args import (
    Distinct,
    default_work_dir,
    existing_dir,
    one_of,
    positive_float,
    positive_int,
    subcommand,
)
from satnet.errors import command
from satnet.io.workdir import WorkDir
from satnet.names import (
    ARCH_NAMES,
    ATTEND_MODES,
    CONFIG_NAMES,
    DEFAULT_ARCH,
    DEFAULT_GATE_INIT,
    DEFAULT_GPU_MEMORY_GB,
    DEFAULT_PLAN_PRECISION,
    DEFAULT_SKIP,
    DEFAULT_SKIP_CHANNELS,
    DEFAULT_SKIP_LEVELS,
    GATE_INITS,
    PRECISIONS,
    SKIP_MODES,
)

if TYPE_CHECKING:
    from satnet.planning.planner import PlannerOptions


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


def skip_levels_arg(text: str) -> list[str]:
    """--skip-levels: "sat:4,org" -> ["sat:4", "org"]; otherwise argparse's error with parse_skip_levels' reason
    (an org count, a zero count, a malformed entry with the syntax)."""
    from satnet.errors import ConfigError
    from satnet.nets.spec import parse_skip_levels

    try:
        return parse_skip_levels(text)
    except ConfigError as exc:
        reason = str(exc).removeprefix("--skip-levels: ")
        raise argparse.ArgumentTypeError(reason if repr(text) in reason else f"{reason} (given {text!r})") from None


def _planning_arguments(p: argparse.ArgumentParser, with_options: bool) -> None:
    p.add_argument("raw_dir", type=existing_dir, metavar="RAW_DATASET_DIR",
                   help="dataset in nnU-Net's raw layout (dataset.json, imagesTr/, labelsTr/)")
    p.add_argument("-o", "--output", dest="work_dir", type=Path, default=None, metavar="WORK_DIR",
                   help="work folder (default: $SATNET_WORK/<dataset folder> or ./satnet_work/<dataset folder>)")
    p.add_argument("--configs", nargs="+", action=Distinct, **one_of(CONFIG_NAMES), default=None,
                   help="configurations to plan/preprocess (default: 2d, and 3d for volumetric data)")
    p.add_argument("-j", "--workers", type=positive_int, default=None,
                   help="worker processes for reading and preprocessing cases (default: half the cores)")
    if with_options:
        p.add_argument("--gpu-memory-gb", type=positive_float, default=DEFAULT_GPU_MEMORY_GB,
                       help=f"GPU memory PyTorch may allocate during training, GiB (default {DEFAULT_GPU_MEMORY_GB:g})")
        p.add_argument("--arch", **one_of(ARCH_NAMES), default=DEFAULT_ARCH,
                       help=f"network family (default {DEFAULT_ARCH})")
        p.add_argument("--skip", **one_of(SKIP_MODES), default=None,
                       help=f"skip connection mode of every level (default "
                            f"{'per level ' + ','.join(DEFAULT_SKIP_LEVELS) if DEFAULT_SKIP_LEVELS else DEFAULT_SKIP}; "
                            "plan-and-preprocess prints why, docs/results.md has the evidence)")
        p.add_argument("--skip-channels", type=positive_int, default=None, metavar="K",
                       help=f"attention maps each at/sat skip transfers (default {DEFAULT_SKIP_CHANNELS}, the SAT "
                            f"paper's single map; K <= the channels of the shallowest level); without --skip, "
                            f"{DEFAULT_SKIP} skips at every level")
        p.add_argument("--skip-levels", type=skip_levels_arg, default=None, metavar="MODE[:K],...",
                       help="one skip per resolution level, full resolution first; the last entry repeats for the "
                            "coarser levels, e.g. 'sat:4,org' (SAT with 4 maps at full resolution, where the memory "
                            "is, plain skips below); replaces --skip and --skip-channels")
        p.add_argument("--gate-init", **one_of(GATE_INITS), default=DEFAULT_GATE_INIT,
                       help=f"initial select weights W of st/sat gates (default {DEFAULT_GATE_INIT}: every channel "
                            "on; glorot: the SAT paper's Keras default, about half the channels start off)")
        p.add_argument("--precision", **one_of(PRECISIONS), default=DEFAULT_PLAN_PRECISION,
                       help=f"precision training will run in, which sets the memory a patch needs (default "
                            f"{DEFAULT_PLAN_PRECISION}, what `satnet train` uses on CUDA; bf16 takes the same, fp32 "
                            "about twice the activations)")
        p.add_argument("--spacing", nargs="+", default=["default"], metavar="MM",
                       help="target spacing: 2 mm isotropic by default (native pixels for 2D images), "
                            "'auto' (nnU-Net's median rule), one number, or Z Y X")


def _resolve_common(args: argparse.Namespace):
    from satnet.io.pool import default_workers

    work_dir = args.work_dir or default_work_dir(args.raw_dir)
    return work_dir, args.workers or default_workers()


def _planner_options(args: argparse.Namespace, parser_error) -> "PlannerOptions":
    from satnet.planning.planner import PlannerOptions

    try:
        spacing = spacing_arg(args.spacing)
    except argparse.ArgumentTypeError as exc:
        parser_error(f"argument --spacing: {exc}")  # worded as argparse words its own checks
    if args.skip_levels and (args.skip or args.skip_channels):
        parser_error("argument --skip-levels: gives every level's skip; drop --skip and --skip-channels, or write "
                     "them into it (e.g. --skip-levels sat:4)")
    skip, channels = args.skip or DEFAULT_SKIP, args.skip_channels or DEFAULT_SKIP_CHANNELS
    if channels > 1 and skip not in ATTEND_MODES:
        parser_error(f"argument --skip-channels: {channels} maps apply to at and sat skips; --skip {skip} transfers "
                     f"every channel: use --skip sat (or at), or drop --skip-channels")
    # skip, skip_channels and skip_levels left None mean the planner's default (PlannerOptions resolves it)
    return PlannerOptions(gpu_memory_gb=args.gpu_memory_gb, arch=args.arch,
                          skip=args.skip, skip_channels=args.skip_channels, skip_levels=args.skip_levels,
                          spacing=spacing, configs=args.configs or list(CONFIG_NAMES), gate_init=args.gate_init,
                          precision=args.precision)


def _run_plan_and_preprocess(args: argparse.Namespace, preprocess: bool = True) -> int:
    from satnet.preprocessing import stage

    work_dir, workers = _resolve_common(args)
    options = _planner_options(args, args.parser_error)
    dataset, plans = stage.plan(args.raw_dir, work_dir, options, workers)
    print(stage.summary(plans))
    from satnet.planning.planner import skip_choice_line

    print(skip_choice_line(options, explicit=bool(args.skip or args.skip_channels or args.skip_levels)))
    if preprocess:
        stage.preprocess(dataset, plans, work_dir, list(plans.configurations), workers)
        print(f"preprocessed {len(dataset.cases)} cases into {WorkDir(work_dir).preprocessed}")
    print(f"next: {command('satnet', 'train', work_dir, next(iter(reversed(plans.configurations))), 0)}")
    return 0


def _run_preprocess(args: argparse.Namespace) -> int:
    from satnet.preprocessing import stage

    work_dir, workers = _resolve_common(args)
    plans = stage.preprocess_from_plans(args.raw_dir, work_dir, args.configs, workers)
    print(f"preprocessed {', '.join(args.configs or plans.configurations)} into {WorkDir(work_dir).preprocessed}")
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
    p = sub.add_parser("plan", help="check, fingerprint and plan only (no preprocessing)",
                       description="Check RAW_DATASET_DIR and write fingerprint.json, plans.json and splits.json into "
                                   "WORK_DIR without preprocessing. Run it again with another --arch or --skip to add "
                                   "that variant to the same plans.json; then `satnet preprocess`.")
    _planning_arguments(p, with_options=True)
    p.set_defaults(handler=lambda a: _run_plan_and_preprocess(a, preprocess=False), parser_error=p.error)
    return p


@subcommand
def _add_preprocess(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("preprocess", help="preprocess with an existing WORK_DIR/plans.json (resumable)",
                       description="Preprocess every case of RAW_DATASET_DIR for the configurations of "
                                   "WORK_DIR/plans.json (crop, normalise, resample). Cases already done are kept, so "
                                   "an interrupted run continues where it stopped; a case whose image or label "
                                   "files changed since is made again.")
    _planning_arguments(p, with_options=False)
    p.set_defaults(handler=_run_preprocess)
    return p
