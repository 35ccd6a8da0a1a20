"""Where the bad-input corpus runs: prepared base inputs, a copy per case, snapshots, one CLI run.

`build_bases(root)` writes, once per test session (or report run):
- raw3d: a synthetic 3D dataset (3 training cases of 16x20x24 voxels at (3, 1, 1) mm, labels 0..2,
  2 test cases in imagesTs);
- raw2d: a synthetic RGB PNG dataset (3 cases of 32x40 pixels, labels 0..1);
- work: raw3d planned and preprocessed (2d and 3d), the networks shrunk to 2 stages of 4 and 8
  features, and fold 0 of each configuration trained for 1 epoch of 1 iteration, so it holds
  checkpoint_{latest,best,final}.pt.

Each corpus case gets a `Sandbox`: a fresh folder holding copies of the bases it asks for, in
which its builder breaks one thing. `run_cli` runs `satnet.cli.main` in-process and records the
exit code, stdout, stderr and a snapshot of the sandbox before and after, so a test can check
that a failed command left no new, changed or half-written file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from satnet.cli import main
from satnet.planning.plans import load_plans, save_plans
from satnet.synthetic import make_dataset_2d_rgb, make_dataset_3d
from satnet_testing import torch_threads

RAW3D = "Dataset910_Bad3D"
RAW2D = "Dataset911_Bad2D"
TINY_TRAIN = ["--epochs", "1", "--iterations-per-epoch", "1", "--val-iterations", "1", "--workers", "0",
              "--seed", "0", "--device", "cpu", "--no-validation", "-q"]


def build_bases(root: Path) -> dict[str, Path]:
    """Write the base inputs under `root` (see the module docstring); returns name -> folder."""
    root = Path(root)
    raw3d = make_dataset_3d(root / "raw3d" / RAW3D, num_cases=3, num_test=2, seed=1)
    raw2d = make_dataset_2d_rgb(root / "raw2d" / RAW2D, num_cases=3, seed=1)
    work = root / "work"
    _cli(["plan-and-preprocess", str(raw3d), "-o", str(work), "--configs", "2d", "3d", "-j", "1", "-q"])
    shrink_networks(work)
    with torch_threads(1):
        for config in ("2d", "3d"):
            _cli(["train", str(work), config, "0", *TINY_TRAIN])
    return {"raw3d": raw3d, "raw2d": raw2d, "work": work}


def shrink_networks(work_dir: Path) -> None:
    """Make every configuration of WORK_DIR/plans.json a 2-stage network of 4 and 8 features, batch 2."""
    plans = load_plans(work_dir)
    for plan in plans.configurations.values():
        dims = plan.network.spatial_dims
        stride = [2 if p >= 8 else 1 for p in plan.patch_size]
        plan.network = plan.network.replace(features=[4, 8], kernel_sizes=plan.network.kernel_sizes[:2],
                                            strides=[[1] * dims, stride], convs_per_stage=None)
        plan.patch_size = [min(p, 16) // s * s for p, s in zip(plan.patch_size, stride)]
        plan.batch_size = 2
    save_plans(plans, work_dir)


def _cli(argv: list[str]) -> None:
    result = run_cli(argv)
    if result.code != 0:
        raise RuntimeError(f"building the corpus bases failed: satnet {' '.join(argv)}\n{result.stderr}")


# ---------------------------------------------------------------------------------------------
# One case's folder


@dataclass
class Sandbox:
    """A case's folder: `root`, with copies of the bases it asked for.

    raw: the 3D dataset copy (or the 2D one when the case uses raw2d); work: the WORK_DIR the
    command writes to (the trained work folder's copy when the case uses it, else root/work,
    absent); out: root/out, an OUTPUT_DIR (absent); test_images: raw/imagesTs.
    """

    root: Path
    raw: Path
    work: Path
    out: Path

    @property
    def test_images(self) -> Path:
        return self.raw / "imagesTs"

    def fold_dir(self, config: str = "3d", fold: str = "0") -> Path:
        return self.work / "results" / config / f"fold_{fold}"


def make_sandbox(root: Path, bases: dict[str, Path], uses: Sequence[str]) -> Sandbox:
    """Copy the bases named in `uses` ("raw3d", "raw2d", "work") into `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    raw_name = "raw2d" if "raw2d" in uses else "raw3d"
    raw = root / "raw" / bases[raw_name].name
    if raw_name in uses or "work" in uses:  # predict cases read raw3d's imagesTs
        shutil.copytree(bases[raw_name], raw)
    work = root / "work"
    if "work" in uses:
        shutil.copytree(bases["work"], work)
    return Sandbox(root, raw, work, root / "out")


# ---------------------------------------------------------------------------------------------
# Running a command and what it left behind


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> "dir", "link -> target" or the file's SHA-1, for everything under `folder`."""
    entries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                entries[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                entries[rel] = "dir"
            else:
                entries[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return entries


def snapshot_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """'new: x', 'changed: x', 'removed: x' lines, sorted."""
    lines = [f"new: {k}" for k in after.keys() - before.keys()]
    lines += [f"removed: {k}" for k in before.keys() - after.keys()]
    lines += [f"changed: {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    return sorted(lines)


@dataclass
class CliResult:
    """Exit code, output, and what changed under the watched folder."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    changes: list[str] = field(default_factory=list)


def run_cli(argv: Sequence[str], watch: Path | None = None) -> CliResult:
    """`satnet.cli.main(argv)` in-process, with stdout/stderr captured and `watch` snapshotted."""
    argv = [str(a) for a in argv]
    before = snapshot(watch) if watch is not None else {}
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), torch_threads(1):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
    changes = snapshot_diff(before, snapshot(watch)) if watch is not None else []
    return CliResult(argv, code, out.getvalue(), err.getvalue(), changes)


NUM_TEST = 4  # images to predict in the fixture `setup` (tests/reliability/conftest.py)


def predict(images: Path, out: Path, work: Path, *extra: str) -> list[str]:
    """`satnet predict` arguments for the fixture `setup`'s work folder (3d, fold 0, no TTA, one thread)."""
    return ["predict", "-i", str(images), "-o", str(out), "-m", str(work), "-c", "3d", "-f", "0", "--no-tta",
            "--threads", "1", "-q", *extra]

