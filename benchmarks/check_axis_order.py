"""Real scans with thick slices along X plan and preprocess exactly as the same scans stored with them along Z.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/check_axis_order.py ../shared/data/Dataset004_Hippocampus \
        /tmp/axis_check --cases 20

Takes the first N cases of a raw dataset and writes two copies: "thick X", the files as they are with their X
spacing set to 4 mm, and "thick Z", the same voxels permuted (SimpleITK.PermuteAxes) so that the 4 mm axis is
the file's Z. Both are planned and preprocessed with `--spacing auto` (3d and 2d). The planner puts X first in
the first copy (axis_order [2, 0, 1]), so the two must agree: the same spacing, patch, batch and network, and
byte-identical preprocessed arrays. Then each thick-X case's preprocessed label, as a one-hot "perfect
prediction", is exported back onto its scan's grid and compared with the label file. Prints one line per check
and exits 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from satnet.cli import main as satnet
from satnet.inference.export import probabilities_to_segmentation
from satnet.io.cases import load_case
from satnet.io.images import read_label
from satnet.planning.plans import load_plans

THICK_MM = 4.0  # over the planner's 3x anisotropy ratio
TRAINED_WITH = ("spacing", "patch_size", "batch_size", "network")


def write_copies(raw: Path, out: Path, cases: int) -> tuple[Path, Path]:
    """(thick X copy, thick Z copy) of the first `cases` cases of `raw`, in nnU-Net's raw layout."""
    dataset = json.loads((raw / "dataset.json").read_text())
    ending = dataset["file_ending"]
    ids = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))[:cases]
    copies = (out / "Dataset951_ThickX", out / "Dataset952_ThickZ")
    for copy in copies:
        for sub in ("imagesTr", "labelsTr"):
            (copy / sub).mkdir(parents=True, exist_ok=True)
        (copy / "dataset.json").write_text(json.dumps({**dataset, "numTraining": len(ids)}, indent=2))
    for case in ids:
        files = [("imagesTr", f"{case}_{c:04d}{ending}") for c in range(len(dataset["channel_names"]))]
        for sub, name in files + [("labelsTr", f"{case}{ending}")]:
            image = sitk.ReadImage(str(raw / sub / name))
            x, y, z = image.GetSpacing()
            image.SetSpacing((THICK_MM, y, z))  # X (the file's first voxel axis) becomes the thick one
            sitk.WriteImage(image, str(copies[0] / sub / name))
            sitk.WriteImage(sitk.PermuteAxes(image, [1, 2, 0]), str(copies[1] / sub / name))  # old X -> new Z
    return copies


def plan(raw: Path, work: Path) -> None:
    code = satnet(["plan-and-preprocess", str(raw), "-o", str(work), "--spacing", "auto", "-j", "1", "-q"])
    if code != 0:
        sys.exit(f"plan-and-preprocess {raw} failed ({code})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    thick_x, thick_z = write_copies(args.raw, args.out, args.cases)
    work_x, work_z = args.out / "work_x", args.out / "work_z"
    plan(thick_x, work_x)
    plan(thick_z, work_z)
    plans_x, plans_z = load_plans(work_x), load_plans(work_z)
    failures = 0
    for name, conf_x in plans_x.configurations.items():
        conf_z = plans_z.configurations[name]
        same = {k: conf_x.to_dict()[k] == conf_z.to_dict()[k] for k in TRAINED_WITH}
        print(f"{name}: axis_order {conf_x.axis_order} (thick X) / {conf_z.axis_order} (thick Z); spacing "
              f"{conf_x.spacing}, patch {conf_x.patch_size}, batch {conf_x.batch_size}; equal: {same}")
        failures += not all(same.values()) or conf_x.axis_order != [2, 0, 1] or conf_z.transposed
    conf_x = next(iter(plans_x.configurations.values()))
    conf_z = plans_z.configurations[conf_x.name]
    ending = plans_x.file_ending
    ids = sorted(p.name[: -len(ending)] for p in (thick_x / "labelsTr").glob(f"*{ending}"))
    arrays_equal, dice_one = 0, 0
    for case in ids:
        data_x, seg_x, props_x = load_case(conf_x.data_dir(work_x), case)
        data_z, seg_z, _ = load_case(conf_z.data_dir(work_z), case)
        arrays_equal += np.array_equal(data_x, data_z) and np.array_equal(seg_x, seg_z)
        probs = (np.arange(plans_x.num_classes)[:, None, None, None] == np.asarray(seg_x)).astype(np.float32)
        back = probabilities_to_segmentation(probs, props_x, conf_x.resampling.anisotropy_threshold)
        dice_one += np.array_equal(back, read_label(thick_x / "labelsTr" / f"{case}{ending}")[0])
    print(f"{arrays_equal} of {len(ids)} cases: preprocessed image and label byte-identical between the copies")
    print(f"{dice_one} of {len(ids)} cases: the exported perfect prediction equals the label file voxel for voxel")
    failures += (arrays_equal != len(ids)) + (dice_one != len(ids))
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return int(bool(failures))


if __name__ == "__main__":
    sys.exit(main())
