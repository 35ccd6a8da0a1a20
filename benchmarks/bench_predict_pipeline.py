"""Does overlapping reading/preprocessing and export with the network pay off? Side by side.

    python benchmarks/bench_predict_pipeline.py WORK_DIR IMAGES_DIR [--cases 20] [--threads 2]

WORK_DIR must hold plans.json with a "3d" configuration (e.g. from `satnet plan-and-preprocess`
on Dataset004_Hippocampus); a randomly initialised checkpoint is written to a temporary copy of
it (timing does not depend on the weights). The first `--cases` cases of IMAGES_DIR (e.g. the
dataset's imagesTr) are predicted twice per mode, alternating, with mirroring TTA: once with
`run_pipelined`'s background threads, once with the same steps one after another. Prints the
median wall time per mode and the ratio.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.inference import pipeline  # noqa: E402
from satnet.inference.folder import Part, predict_folder  # noqa: E402
from satnet.inference.models import checkpoint_path  # noqa: E402
from satnet.io.checkpoints import save_checkpoint  # noqa: E402
from satnet.nets import build_network  # noqa: E402
from satnet.planning.plans import load_plans  # noqa: E402


class InlineExecutor:
    """A ThreadPoolExecutor stand-in that runs each job at submit time: no overlap."""

    def __init__(self, *args, **kwargs):
        pass

    def submit(self, fn, *args):
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future, as a pool does
            future.set_exception(exc)
        return future

    def shutdown(self, **kwargs):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    work = tmp / "work"
    work.mkdir()
    shutil.copy(args.work_dir / "plans.json", work / "plans.json")
    plans = load_plans(work)
    spec = plans.configuration("3d").network
    save_checkpoint(checkpoint_path(work, "3d", "0"), {
        "format_version": 1, "config": "3d", "fold": "0", "network": spec.to_dict(),
        "plans_json": (work / "plans.json").read_text(), "state_dict": build_network(spec).state_dict(), "epoch": 0})
    images = tmp / "images"
    images.mkdir()
    files = sorted(args.images_dir.glob(f"*_0000{plans.file_ending}"))[: args.cases]
    for f in files:
        (images / f.name).symlink_to(f.resolve())
    times: dict[str, list[float]] = {"pipelined": [], "sequential": []}
    predict_folder(images, tmp / "warmup", work, part=Part(0, len(files)))
    for i in range(args.repeats):
        for mode in times:
            out = tmp / f"{mode}{i}"
            start = time.perf_counter()
            if mode == "sequential":
                with mock.patch.object(pipeline, "ThreadPoolExecutor", InlineExecutor):
                    predict_folder(images, out, work)
            else:
                predict_folder(images, out, work)
            times[mode].append(time.perf_counter() - start)
    seq, pipe = statistics.median(times["sequential"]), statistics.median(times["pipelined"])
    print(f"{len(files)} cases, {args.threads} torch thread(s), network {spec.features}, patch "
          f"{plans.configuration('3d').patch_size}, TTA on")
    print(f"sequential {seq:.2f} s, pipelined {pipe:.2f} s, ratio {seq / pipe:.2f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
