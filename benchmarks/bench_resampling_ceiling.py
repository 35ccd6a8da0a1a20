"""The resampling ceiling of a raw dataset at a spacing, by two definitions (docs/preprocessing.md).

- hard (what `satnet plan` reports): the training target (each label resampled to the spacing as
  preprocessing does, one-hot linear + argmax) taken as a perfect prediction, resampled back as export does.
- soft: a prediction of the exact partial-volume fractions (the one-hot maps linearly interpolated
  to the spacing), resampled back the same way; an upper bound no hard target reaches.

    PYTHONPATH=. python benchmarks/bench_resampling_ceiling.py ../shared/data/Dataset004_Hippocampus --spacing 2 --cases 50
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satnet.io.checks import check_dataset  # noqa: E402
from satnet.io.images import read_image, read_label  # noqa: E402
from satnet.planning.plans import ResamplingPlan  # noqa: E402
from satnet.preprocessing.ceiling import SAMPLE_SEED, dice_per_label, round_trip  # noqa: E402
from satnet.preprocessing.resample import compute_new_shape, resample_image, resample_probabilities  # noqa: E402


def soft_round_trip(seg: np.ndarray, spacing, target, num_classes: int) -> np.ndarray:
    onehot = (seg[None] == np.arange(num_classes).reshape(-1, 1, 1, 1)).astype(np.float32)
    soft = resample_image(onehot, spacing, new_shape=compute_new_shape(seg.shape, spacing, target), order=1)
    return np.argmax(resample_probabilities(soft, seg.shape, target), axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--cases", type=int, default=50)
    args = parser.parse_args()
    dataset = check_dataset(args.raw_dir, workers=1)
    cases = sorted((c for c in dataset.cases if c.label_file is not None), key=lambda c: c.case_id)
    if len(cases) > args.cases:
        cases = sorted(random.Random(SAMPLE_SEED).sample(cases, args.cases), key=lambda c: c.case_id)
    labels = {v: name for name, v in dataset.dataset_json.labels.items() if v != 0}
    target = [args.spacing] * 3
    plan = SimpleNamespace(name="3d", spacing=target, resampling=ResamplingPlan())
    hard, soft = [], []
    for case in cases:
        image, geometry = read_image(case.image_files)
        seg = read_label(case.label_file)[0]
        k = max(labels) + 1
        hard.append(dice_per_label(seg, round_trip(image, geometry, seg, plan, k), list(labels)))
        soft.append(dice_per_label(seg, soft_round_trip(seg, [float(s) for s in geometry.spacing], target, k),
                                   list(labels)))
    for name, rows in (("hard", hard), ("soft", soft)):
        means = {labels[v]: np.mean([r[v] for r in rows if r[v] is not None]) for v in labels}
        print(f"{name}: " + ", ".join(f"{n} {d:.3f}" for n, d in means.items()) + f" ({len(rows)} cases, {args.spacing:g} mm)")


if __name__ == "__main__":
    main()
