"""`satnet visualize` and `satnet demo`."""
from __future__ import annotations

import argparse
from pathlib import Path

from satnet.cli.args import checkpoint_argument, existing_dir, fold_arg, nonnegative_int, subcommand


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
    p.add_argument("-m", "--model", dest="work_dir", type=existing_dir, required=True, metavar="WORK_DIR",
                   help="the work folder the configuration was trained in")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG", help="configuration, e.g. 3d")
    p.add_argument("-f", "--fold", type=fold_arg, required=True, metavar="FOLD",
                   help="the trained fold whose network to show (0-4, or all)")
    p.add_argument("-i", "--input", dest="scan", type=Path, required=True, metavar="SCAN",
                   help="the scan's first channel file, {case}_0000<ending>")
    p.add_argument("-o", "--output", dest="output_dir", type=Path, required=True, metavar="OUT_DIR",
                   help="folder for the pictures (attention_<gate>.png, select_weights.png) and gates.json")
    checkpoint_argument(p)
    p.set_defaults(handler=_run_visualize)
    return p


def _run_demo(args: argparse.Namespace) -> int:
    from satnet.cli import main  # the demo runs the real commands; handed over, so demo.py imports no CLI
    from satnet.demo import run_demo

    return run_demo(args.output_dir, main, workers=args.workers)


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
