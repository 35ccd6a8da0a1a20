"""The resampling ceiling: the Dice a perfect prediction keeps after the trip to the planned spacing and back.

satnet trains and predicts at the configuration's spacing (2 mm isotropic by default) and exports
each mask back onto the scan's own grid (satnet.inference.export). Structures a few voxels thick
lose Dice on that round trip even when the network is perfect. Per configuration and label, the
ceiling is the mean over training cases of

    Dice(label, back(onehot(forward(label))))

where forward is preprocessing's crop and label resampling (the plan's label mode) and back is
export's linear resampling of class probabilities (here the one-hot of the resampled label, a
perfect prediction), argmax and uncrop. It is the best Dice any model can reach at that spacing,
so a low ceiling means the spacing, not the network, limits accuracy: `--spacing auto` (the
data's own median spacing) lifts it.

plan-and-preprocess computes it on up to MAX_CASES training cases (a seeded sample of larger
datasets), prints it, stores it in plans.json (`resampling_ceiling`) and warns below WARN_BELOW.
"""
from __future__ import annotations

import functools
import random
from typing import Sequence

import numpy as np

from satnet.io.images import read_image, read_label
from satnet.io.pool import map_cases
from satnet.io.raw_cases import RawCase
from satnet.planning.plans import ConfigurationPlan
from satnet.preprocessing.case import target_spacing
from satnet.preprocessing.crop import bbox_slices, bounding_box, nonzero_mask, uncrop
from satnet.preprocessing.resample import compute_new_shape, resample_label, resample_probabilities

MAX_CASES = 50
WARN_BELOW = 0.95
SAMPLE_SEED = 0


def round_trip(image: np.ndarray, geometry, seg: np.ndarray, plan: ConfigurationPlan, num_classes: int) -> np.ndarray:
    """A label map (Z, Y, X) -> the same on its own grid after resampling to the plan's spacing and back."""
    bbox = bounding_box(nonzero_mask(image))
    cropped = seg[bbox_slices(bbox)].astype(np.int8)
    spacing = [float(s) for s in geometry.spacing]
    target = target_spacing(geometry, plan)
    new_shape = compute_new_shape(cropped.shape, spacing, target)
    threshold = plan.resampling.anisotropy_threshold
    forward = resample_label(cropped, new_shape, spacing, mode=plan.resampling.label_mode, anisotropy_threshold=threshold)
    onehot = (forward[None] == np.arange(num_classes, dtype=forward.dtype).reshape(-1, 1, 1, 1)).astype(np.float32)
    back = resample_probabilities(onehot, cropped.shape, target, anisotropy_threshold=threshold)
    return uncrop(np.argmax(back, axis=0).astype(np.uint8), bbox, seg.shape, fill=0)


def dice_per_label(reference: np.ndarray, result: np.ndarray, values: Sequence[int]) -> dict[int, float | None]:
    """Dice of each label value; None where the reference lacks it (nothing to keep)."""
    out: dict[int, float | None] = {}
    for v in values:
        ref, res = reference == v, result == v
        total = int(ref.sum()) + int(res.sum())
        out[v] = None if not ref.any() else 2.0 * float(np.logical_and(ref, res).sum()) / total
    return out


def case_ceiling(case: RawCase, plan: ConfigurationPlan, values: Sequence[int]) -> dict[int, float | None]:
    image, geometry = read_image(case.image_files)
    seg = read_label(case.label_file)[0]
    return dice_per_label(seg, round_trip(image, geometry, seg, plan, max(values) + 1), values)


def resampling_ceiling(cases: Sequence[RawCase], plan: ConfigurationPlan, labels: dict[str, int],
                       workers: int = 1) -> tuple[dict[str, float | None], int]:
    """label name -> mean round-trip Dice over (a sample of) `cases` with that label; and the cases used."""
    labelled = sorted((c for c in cases if c.label_file is not None), key=lambda c: c.case_id)
    if len(labelled) > MAX_CASES:
        labelled = sorted(random.Random(SAMPLE_SEED).sample(labelled, MAX_CASES), key=lambda c: c.case_id)
    foreground = {name: v for name, v in labels.items() if v != 0}
    per_case = map_cases(functools.partial(case_ceiling, plan=plan, values=sorted(foreground.values())), labelled,
                         workers, f"resampling ceiling {plan.name}")
    means: dict[str, float | None] = {}
    for name, v in foreground.items():
        kept = [d[v] for d in per_case if d[v] is not None]
        means[name] = round(float(np.mean(kept)), 4) if kept else None
    return means, len(labelled)


def ceiling_line(plan: ConfigurationPlan, ceiling: dict[str, float | None], cases: int) -> str:
    """'3d: resampling ceiling (Dice of a perfect 2x2x2 mm prediction on the scans' grid, 50 cases): A 0.931, ...'."""
    values = ", ".join(f"{name} {'n/a' if d is None else f'{d:.3f}'}" for name, d in ceiling.items())
    spacing = "x".join(f"{s:g}" for s in plan.spacing)
    return f"{plan.name}: resampling ceiling (Dice of a perfect {spacing} mm prediction on the scans' grid, {cases} cases): {values}"


def ceiling_warning(plan: ConfigurationPlan, ceiling: dict[str, float | None]) -> str | None:
    low = {name: d for name, d in ceiling.items() if d is not None and d < WARN_BELOW}
    if not low:
        return None
    names = ", ".join(f'"{name}" {d:.3f}' for name, d in low.items())
    return (f"{plan.name}: even a perfect prediction at {'x'.join(f'{s:g}' for s in plan.spacing)} mm keeps only Dice "
            f"{names} once resampled back onto the scans' grid (below {WARN_BELOW}); the spacing limits accuracy: plan "
            f"with `--spacing auto` (the data's own spacing) for a higher ceiling")
