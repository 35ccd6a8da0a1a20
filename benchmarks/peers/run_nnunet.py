"""nnU-Net v2 peer runs for satnet's side-by-side benchmarks; each subcommand prints one JSON object.

    python benchmarks/peers/run_nnunet.py plan 4 --configs 3d_fullres 2d --np 2 --npfp 2
    python benchmarks/peers/run_nnunet.py splits 4 [--satnet-splits WORK_DIR/splits.json]
    python benchmarks/peers/run_nnunet.py iter-time 4 3d_fullres --iters 10 --warmup 3
    python benchmarks/peers/run_nnunet.py train 4 3d_fullres --budget-min 30 --epochs 40 --iters 50
    python benchmarks/peers/run_nnunet.py predict 4 3d_fullres --cases 3

Run with any Python 3.10+ that can import satnet's dependencies (the system one here); nnU-Net
itself runs from its venv (benchmarks/peers/setup_nnunet.sh). --json-out also writes the JSON
to a file. docs/peers.md gives the protocol, the exact commands and what each field means.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnunet_runs as runs  # noqa: E402
from nnunet_env import DEFAULT_DATA, DEFAULT_SCRATCH, DEFAULT_VENV, NnunetSite, PeerSetupError  # noqa: E402


def _plan(site: NnunetSite, a: argparse.Namespace) -> dict:
    return runs.time_plan_and_preprocess(site, a.dataset, a.configs, a.np, a.npfp)


def _splits(site: NnunetSite, a: argparse.Namespace) -> dict:
    path = a.satnet_splits
    if path is not None and path.is_dir():
        path = path / "splits.json"
    return runs.write_splits(site, a.dataset, path)


def _iter_time(site: NnunetSite, a: argparse.Namespace) -> dict:
    return runs.time_iterations(site, a.dataset, a.config, a.iters, a.warmup, a.fold, a.da_workers, a.threads)


def _train(site: NnunetSite, a: argparse.Namespace) -> dict:
    return runs.train_with_budget(site, a.dataset, a.config, a.fold, a.budget_min, a.epochs, a.iters,
                                  a.val_iters, a.da_workers, a.threads)


def _predict(site: NnunetSite, a: argparse.Namespace) -> dict:
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[a.tta]
    return runs.time_prediction(site, a.dataset, a.config, a.fold, a.trainer, a.cases, modes, a.npp, a.nps,
                                a.checkpoint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="nnU-Net venv (default %(default)s; "
                        "env NNUNET_VENV)")
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH, help="nnU-Net's working folders "
                        "(default %(default)s; env NNUNET_SCRATCH)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the raw DatasetXXX_* "
                        "folders (default %(default)s)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("dataset", type=int, help="dataset id (4: Hippocampus, 17: ISIC2017)")
        p.set_defaults(handler=handler)
        return p

    p = add("plan", _plan, "time nnUNetv2_plan_and_preprocess from scratch (wall s, peak memory)")
    p.add_argument("--configs", nargs="+", default=["3d_fullres", "2d"], help="-c (default: 3d_fullres 2d)")
    p.add_argument("--np", type=int, default=2, help="-np, preprocessing processes (default 2)")
    p.add_argument("--npfp", type=int, default=2, help="-npfp, fingerprint processes (default 2)")

    p = add("splits", _splits, "write splits_final.json from satnet's splits and check them")
    p.add_argument("--satnet-splits", type=Path, help="satnet's splits.json (or its WORK_DIR); default: "
                   "satnet's default KFold(5, shuffle, 12345) over the sorted case ids")

    for name, handler, help_ in (
            ("iter-time", _iter_time, "median seconds per training iteration at nnU-Net's plan"),
            ("train", _train, "train one fold with nnU-Net's recipe, epochs x iterations, wall-clock budget")):
        p = add(name, handler, help_)
        p.add_argument("config", help="nnU-Net configuration: 3d_fullres, 2d, ...")
        p.add_argument("--fold", type=int, default=0)
        p.add_argument("--da-workers", type=int, help="nnUNet_n_proc_DA (default: nnU-Net's, min(12, cores))")
        p.add_argument("--threads", type=int, help="torch threads (default: nnUNetv2_train's, one per core)")
        if name == "iter-time":
            p.add_argument("--iters", type=int, default=10, help="timed iterations (default 10)")
            p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
        else:
            p.add_argument("--budget-min", type=float, help="wall-clock minutes of training (default: none)")
            p.add_argument("--epochs", type=int, help="epochs; the poly lr anneals over them (default 1000)")
            p.add_argument("--iters", type=int, help="training iterations per epoch (default 250)")
            p.add_argument("--val-iters", type=int, help="validation iterations per epoch (default 50)")

    p = add("predict", _predict, "predict fold validation cases with and without TTA; time and score")
    p.add_argument("config")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--cases", type=int, help="only the first N validation cases, sorted (default: all)")
    p.add_argument("--tta", choices=("both", "on", "off"), default="both", help="mirroring TTA (default both)")
    p.add_argument("--trainer", default=runs.BUDGET_TRAINER, help="-tr (default %(default)s)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="-chk (default %(default)s)")
    p.add_argument("--npp", type=int, default=3, help="nnU-Net's -npp (its default 3)")
    p.add_argument("--nps", type=int, default=3, help="nnU-Net's -nps (its default 3)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    site = NnunetSite(venv=args.venv, scratch=args.scratch, data=args.data.resolve())
    try:
        result = args.handler(site, args)
    except PeerSetupError as exc:
        print(f"run_nnunet.py {args.command}: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
