"""The planner: from a fingerprint and a GPU memory budget to plans.json.

For each configuration ("2d" always, "3d" for volumetric data):
1. target spacing: 2 mm isotropic by default (native pixels for 2D natural images), nnU-Net's
   data-driven rule with `spacing="auto"`, or explicit values; and the axis order, a coarse Y or X
   axis first (`plan_axis_order`);
2. normalisation per channel from `channel_names`;
3. patch, topology and batch: start from the median case shape at the target spacing, derive
   the topology, and while the exact memory estimate of one training step
   (satnet.planning.memory) exceeds the budget, shrink the axis that is largest relative to the
   median shape by one stride unit and re-derive the topology; then grow the batch within the
   budget up to 5% of the dataset's voxels (at least 2).
Because the estimate counts the decoder's skip tensors exactly, a `sat` plan gets at least the
patch of an `org` plan at the same budget, and more where the budget binds.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from satnet import __version__
from satnet.errors import ConfigError
from satnet.names import CONFIG_NAMES, DEFAULT_ARCH, DEFAULT_GATE_INIT, DEFAULT_SKIP, SELECT_MODES  # noqa: F401 (DEFAULT_SKIP re-exported)
from satnet.io.geometry import IDENTITY_AXES, to_network_axes
from satnet.nets.spec import NetworkSpec, parse_level_skip
from satnet.planning.fingerprint import Fingerprint
from satnet.planning.memory import estimate_memory
from satnet.planning.plans import (  # noqa: F401 (PlannerOptions re-exported: callers import it from the planner)
    ChannelNormalization,
    ConfigurationPlan,
    MemoryEstimate,
    PlannerOptions,
    Plans,
    ResamplingPlan,
    default_skip_label,
)
from satnet.planning.search import largest_fitting_patch, smallest_legal_patch
from satnet.planning.topology import MIN_FEATURE_MAP, Topology, fit_patch_to_topology

log = logging.getLogger(__name__)

DEFAULT_SPACING_MM = 2.0
GIB = 1024**3
MIN_BATCH = 2
MAX_BATCH_FRACTION = 0.05  # of the dataset's voxels in one batch (nnU-Net's cap)
SMALL_OBJECT_VOXELS = 8
ANISOTROPY_RATIO = 3.0
# Why the default skip (names.DEFAULT_SKIP_LEVELS), in one line for plan-and-preprocess; docs/results.md ("The skip
# study") has the evidence.
DEFAULT_SKIP_WHY = ("chosen by the skip study (docs/results.md, section 9; 3 seeds on Hippocampus, 2 of 3 on ISIC): "
                    "within 0.005 Dice of plain skips on both datasets for 5-7% less training memory, where SAT "
                    "at every level cost 0.008-0.012; add --skip org for the plain U-Net")


def skip_choice_line(options: "PlannerOptions", explicit: bool) -> str:
    """plan-and-preprocess's one line on which skip it planned and why."""
    if options.skip_levels:
        chosen = f"per level {','.join(options.skip_levels)}"
        if explicit:
            return f"skip: {chosen} (--skip-levels)"
    else:
        chosen = options.skip + (f" with {options.skip_channels} maps" if options.skip_channels > 1 else "")
        if explicit:
            return f"skip: {chosen} (as asked)"
    return f"skip: {chosen}, {DEFAULT_SKIP_WHY}"


# ---------------------------------------------------------------------------------------------
# Spacing and normalisation


def auto_spacing(fp: Fingerprint) -> list[float]:
    """nnU-Net's target spacing: the median spacing, except that for strongly anisotropic data
    (the coarse axis's median spacing > 3x each other axis's, and its median voxel count after
    cropping < 1/3 of each other axis's) the coarse axis takes the 10th percentile of its spacings
    (never finer than the other axes)."""
    spacings = fp.spacings()
    target = np.median(spacings, axis=0)
    median_shape = np.median(fp.shapes_after_crop(), axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY_RATIO * max(target[others])
    aniso_voxels = median_shape[worst] * ANISOTROPY_RATIO < min(median_shape[others])
    if aniso_spacing and aniso_voxels:
        coarse = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(coarse, float(max(target[others])) + 1e-5)
    return [float(s) for s in target]


def target_spacing(fp: Fingerprint, request: str | Sequence[float]) -> list[float]:
    """Target spacing (Z, Y, X) in mm for the 3D configuration (and the 2D one's in-plane)."""
    if not isinstance(request, str):
        spacing = [float(s) for s in request]
    elif request == "auto":
        spacing = auto_spacing(fp)
    else:
        spacing = [DEFAULT_SPACING_MM] * 3
    if fp.natural_image_2d:
        # a 2D natural image has pixels, not millimetres, and no Z axis: keep Z as read (999)
        median = fp.median_spacing()
        in_plane = median[1:] if request == "default" else spacing[1:]
        spacing = [median[0]] + [float(s) for s in in_plane]
    return spacing


_NNUNET_SCHEMES = {"ct": "ct", "nonorm": "none", "rescale_to_0_1": "rescale", "rgb_to_0_1": "rgb", "zscore": "zscore"}
_RGB_NAMES = {"r", "g", "b", "red", "green", "blue", "rgb"}


def channel_normalization(fp: Fingerprint) -> list[ChannelNormalization]:
    """Per channel, from its name: CT -> "ct" (dataset percentiles and foreground mean/std);
    RGB channels of natural images (or nnU-Net's rgb_to_0_1) -> "rgb"; rescale_to_0_1 -> "rescale";
    noNorm -> "none";
    anything else -> "zscore" per case, over the non-zero region when cropping to it removed
    over a quarter of the median case (nnU-Net's rule)."""
    use_mask = fp.median_relative_size_after_crop() < 0.75
    norms = []
    for i, stats in enumerate(fp.channels):
        name = fp.channel_names[str(i)]
        key = name.strip().lower()
        scheme = _NNUNET_SCHEMES.get(key) or ("rgb" if fp.natural_image_2d and key in _RGB_NAMES else "zscore")
        if scheme == "ct":
            norms.append(ChannelNormalization(
                name, "ct", clip_low=stats.percentile_00_5, clip_high=stats.percentile_99_5,
                mean=stats.mean, std=max(stats.std, 1e-8),
            ))
        else:
            norms.append(ChannelNormalization(name, scheme, use_nonzero_mask=use_mask and scheme == "zscore"))
    return norms


def small_object_warnings(fp: Fingerprint, spacing: Sequence[float], axes: Sequence[int]) -> list[str]:
    """Warnings for labels whose median object spans fewer than 8 voxels along an axis at `spacing`."""
    warnings = []
    for label in fp.label_stats:
        if label.num_objects == 0:
            continue
        voxels = [label.median_object_extent_mm[a] / spacing[a] for a in axes]
        if min(voxels) < SMALL_OBJECT_VOXELS:
            spans = " x ".join(f"{v:.1f}" for v in voxels)
            warnings.append(
                f'label "{label.name}": its median object spans only {spans} voxels at spacing '
                f"{_fmt(spacing)} mm (fewer than {SMALL_OBJECT_VOXELS}); consider `--spacing auto`"
            )
    return warnings


def plan_axis_order(spacing: Sequence[float]) -> list[int]:
    """The order in which the network sees the raw (Z, Y, X) axes of data planned at `spacing` (raw order).

    A coarse axis comes first when the spacing is anisotropic along Y or X (over ANISOTROPY_RATIO times the
    finest axis), the other two keeping their order: 2d configurations cut their slices across the first axis,
    and in-plane-only augmentation looks at it (nnU-Net's transpose_forward). Otherwise the scans' own order:
    nnU-Net moves the coarsest axis first even when it is barely coarser; satnet leaves near-isotropic data, and
    the 2 mm default, as they are stored."""
    coarse = int(max(range(3), key=lambda a: spacing[a]))
    if coarse == 0 or spacing[coarse] <= ANISOTROPY_RATIO * min(spacing):
        return list(IDENTITY_AXES)
    return [coarse] + [a for a in range(3) if a != coarse]


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


# ---------------------------------------------------------------------------------------------
# Patch, topology and batch under the memory budget

INITIAL_PATCH_VOXELS = {2: 2048**2, 3: 256**3}  # nnU-Net's cap on the starting patch


def _spec(fp: Fingerprint, options: PlannerOptions, dims: int, topo) -> NetworkSpec:
    first = parse_level_skip(options.skip_levels[0]) if options.skip_levels else None
    return NetworkSpec(
        arch=options.arch, spatial_dims=dims, in_channels=len(fp.channel_names), num_classes=len(fp.labels),
        features=topo.features, kernel_sizes=topo.kernel_sizes, strides=topo.strides,
        skip=first.mode if first else options.skip, skip_channels=first.channels if first else options.skip_channels,
        skip_levels=list(options.skip_levels) if options.skip_levels else None,
        gate_init=options.gate_init, deep_supervision=True, norm="instance",
    )


def _initial_patch(median: Sequence[int], spacing: Sequence[float]) -> list[int]:
    """The median shape, capped at nnU-Net's starting volume with the aspect ratio of 1/spacing."""
    dims = len(median)
    inv = 1.0 / np.asarray(spacing, dtype=float)
    cap = inv * (INITIAL_PATCH_VOXELS[dims] / np.prod(inv)) ** (1.0 / dims)
    return [max(1, int(min(m, round(c)))) for m, c in zip(median, cap)]


class _Estimator:
    """estimate_memory with a cache: the search revisits the same (spec, patch, batch)."""

    def __init__(self, options: PlannerOptions):
        self.options = options
        self.cache: dict[str, MemoryEstimate] = {}

    def __call__(self, spec: NetworkSpec, patch: Sequence[int], batch: int) -> MemoryEstimate:
        key = f"{spec.to_dict()}|{list(patch)}|{batch}"
        if key not in self.cache:
            self.cache[key] = estimate_memory(spec, patch, batch, optimizer=self.options.optimizer,
                                              precision=self.options.precision)
        return self.cache[key]


def _require_downsampling(topo: Topology, dims: int, median: Sequence[int], spacing: Sequence[float]) -> None:
    """A clear error when even the median-sized patch cannot be pooled once (no smaller patch can either)."""
    if len(topo.strides) >= 2:
        return
    what = "slice" if dims == 2 else "case"
    raise ConfigError(
        f"the {dims}D configuration cannot be planned: the median {what} is only {_fmt(median)} voxels at "
        f"{_fmt(spacing)} mm, too small to downsample even once (an axis needs {2 * MIN_FEATURE_MAP} voxels); plan "
        f"at a finer --spacing (e.g. --spacing auto, the data's own), or leave the configuration out with --configs"
    )


def search_patch_and_batch(
    fp: Fingerprint, options: PlannerOptions, dims: int, spacing: Sequence[float], median: Sequence[int],
    data_spacing: Sequence[float],
) -> tuple[list[int], int, NetworkSpec, MemoryEstimate]:
    """Largest balanced patch (then batch) whose exact training-step estimate fits the budget.

    `spacing` and `median` are per network axis ((Z, Y, X) in 3D, (Y, X) in 2D); `data_spacing`
    is the configuration's full (Z, Y, X) spacing, which the batch cap counts the dataset's
    voxels at (a 2d configuration's slices are resampled along Z too). The starting patch is the
    median shape (capped at nnU-Net's starting volume), rounded up to its topology's stride; see
    satnet.planning.search for how smaller patches are tried.
    """
    budget = int(options.gpu_memory_gb * GIB)
    kernel = 5 if options.arch == "vnet" else 3
    estimator = _Estimator(options)
    cap, topo = fit_patch_to_topology(_initial_patch(median, spacing), spacing, kernel)
    _require_downsampling(topo, dims, median, spacing)

    def estimate(topo, patch):
        return estimator(_spec(fp, options, dims, topo), patch, MIN_BATCH)

    found = largest_fitting_patch(cap, median, spacing, kernel, budget, estimate)
    if found is None:
        smallest, small_topo = smallest_legal_patch(cap, median, spacing, kernel)  # the search tried at least one
        need = estimate(small_topo, smallest).total
        raise ConfigError(
            f"no {dims}D patch fits --gpu-memory-gb {options.gpu_memory_gb:g}: even the smallest balanced patch, "
            f"{_fmt(smallest)} at batch {MIN_BATCH}, needs {need / GIB:.3g} GiB; raise --gpu-memory-gb or choose a "
            f"lighter --arch/--skip"
        )
    patch, topo, est = found
    spec = _spec(fp, options, dims, topo)
    batch = _grow_batch(fp, spec, patch, est, budget, estimator, data_spacing)
    return patch, batch, spec, estimator(spec, patch, batch)


def _grow_batch(fp, spec, patch, est2: MemoryEstimate, budget: int, estimate, data_spacing) -> int:
    """Largest batch within the budget and the 5%-of-the-dataset cap (at least MIN_BATCH).

    The cap counts the dataset's voxels at `data_spacing`, the (Z, Y, X) spacing the data are
    resampled to (for 2d as well: until 2026-12-07 a 2d configuration counted them at the cases'
    median Z spacing, so at 2 mm on 1 mm slices its batch cap was twice 5%).
    Memory is convex and piecewise linear in the batch, so a secant search between a batch that
    fits and one that does not converges in a few exact estimates.
    """
    voxels = fp.total_voxels_at(data_spacing)
    cap = max(MIN_BATCH, int(round(MAX_BATCH_FRACTION * voxels / math.prod(patch))))
    fixed = est2.parameters + est2.gradients + est2.optimizer
    per_sample = max(1.0, (est2.total - fixed) / MIN_BATCH)
    lo, lo_total = MIN_BATCH, float(est2.total)
    hi = max(MIN_BATCH, min(cap, int((budget - fixed) // per_sample)))
    while True:  # bracket: lo fits, hi does not (or hi is the cap and fits)
        if hi == lo:
            return lo
        hi_total = float(estimate(spec, patch, hi).total)
        if hi_total > budget:
            break
        if hi >= cap:
            return hi
        lo, lo_total, hi = hi, hi_total, min(cap, 2 * hi)
    while hi - lo > 1:
        slope = (hi_total - lo_total) / (hi - lo)
        guess = min(hi - 1, max(lo + 1, lo + int((budget - lo_total) // slope)))
        total = float(estimate(spec, patch, guess).total)
        if total <= budget:
            lo, lo_total = guess, total
        else:
            hi, hi_total = guess, total
    return lo


def configuration_name(dims_name: str, arch: str, skip: str, gate_init: str = DEFAULT_GATE_INIT,
                       selects: bool | None = None) -> str:
    """"3d" for the default network with the default skip (DEFAULT_ARCH, plans.default_skip_label: a
    U-Net with a SAT skip at full resolution and plain skips below), else e.g. "3d_org", "2d_vnet",
    "3d_tiramisu_at"; `skip` is the network's skip label
    (NetworkSpec.skip_label: "sat4", "sat4-org"), so k maps and per-level modes name their own
    configurations ("3d_sat4", "2d_sat4-org"). Plans store their configurations' names: a work
    folder keeps its names when a later satnet changes a default. A non-default select-weight initialisation
    adds itself when some skip selects (st/sat; `selects`, by default read off `skip`): "2d_glorot"."""
    name = (dims_name + ("" if arch == DEFAULT_ARCH else f"_{arch}")
            + ("" if skip == default_skip_label() else f"_{skip}"))
    if selects is None:
        selects = skip in SELECT_MODES
    return name + (f"_{gate_init}" if selects and gate_init != DEFAULT_GATE_INIT else "")


def data_identifier(spacing: Sequence[float], axis_order: Sequence[int] = IDENTITY_AXES) -> str:
    """Preprocessed-data folder name: configurations with the same spacing (and axis order) share one folder."""
    order = "" if list(axis_order) == list(IDENTITY_AXES) else "_axes" + "".join(map(str, axis_order))
    return "spacing_" + "x".join(f"{s:g}" for s in spacing) + order


def plan_configuration(
    fp: Fingerprint, dims_name: str, spacing: Sequence[float], options: PlannerOptions,
    norms: list[ChannelNormalization], axis_order: Sequence[int] = IDENTITY_AXES,
) -> ConfigurationPlan:
    """One configuration at `spacing` (the raw scans' (Z, Y, X) order), planned in `axis_order`."""
    dims = 3 if dims_name == "3d" else 2
    axes = [0, 1, 2] if dims == 3 else [1, 2]  # of the network's order
    net_spacing = to_network_axes([float(s) for s in spacing], axis_order)
    median3 = to_network_axes(fp.median_shape_at(spacing), axis_order)
    patch, batch, spec, est = search_patch_and_batch(
        fp, options, dims, [net_spacing[a] for a in axes], [median3[a] for a in axes], data_spacing=spacing
    )
    # the default skips name the bare configuration even where a network has too few levels to show all of them
    # (sat,org on a network with one skip level is all sat)
    skip = default_skip_label() if options.skip_request_label() == default_skip_label() else spec.skip_label()
    return ConfigurationPlan(
        name=configuration_name(dims_name, options.arch, skip, options.gate_init,
                                selects=any(level.mode in SELECT_MODES for level in spec.level_skips())),
        spacing=net_spacing,
        patch_size=patch, batch_size=batch,
        normalization=norms, network=spec, estimated_memory=est,
        memory_budget_bytes=int(options.gpu_memory_gb * GIB), resampling=ResamplingPlan(),
        median_shape=median3, data_identifier=data_identifier(net_spacing, axis_order), axis_order=list(axis_order),
    )


def plan_experiment(fp: Fingerprint, options: PlannerOptions) -> tuple[Plans, list[str]]:
    """Plans for every requested configuration, and the warnings to show the user.

    Configuration names carry the arch and skip mode when they differ from the default U-Net
    with SAT skips (see configuration_name), so plans for several variants can live side by
    side in one plans.json (see merge_plans) and find-best can rank them.
    """
    configs = list(options.configs)
    if fp.natural_image_2d and "3d" in configs:
        if configs == ["3d"]:
            raise ConfigError("the dataset holds 2D images: the 3d configuration needs volumes; use --configs 2d")
        configs.remove("3d")
    spacing = target_spacing(fp, options.spacing)
    norms = channel_normalization(fp)
    order = list(IDENTITY_AXES) if fp.natural_image_2d else plan_axis_order(spacing)
    warnings: list[str] = []
    planned: dict[str, ConfigurationPlan] = {}
    for dims_name in sorted(configs, key=CONFIG_NAMES.index):
        conf = plan_configuration(fp, dims_name, spacing, options, norms, order)
        planned[conf.name] = conf
        for w in small_object_warnings(fp, spacing, order if dims_name == "3d" else order[1:]):
            if w not in warnings:
                warnings.append(w)
    plans = Plans(
        dataset_name=fp.dataset_name, channel_names=dict(fp.channel_names), labels=dict(fp.labels),
        file_ending=fp.file_ending, configurations=planned, planner=options, satnet_version=__version__,
    )
    return plans, warnings


def merge_plans(existing: Plans | None, new: Plans) -> Plans:
    """`new` plus the configurations of `existing` that `new` does not replace.

    Only plans of the same dataset (same labels and channels) are merged; otherwise `new` wins
    whole and the caller should warn.
    """
    if existing is None or existing.labels != new.labels or existing.channel_names != new.channel_names:
        return new
    configurations = {k: v for k, v in existing.configurations.items() if k not in new.configurations}
    configurations.update(new.configurations)
    ordered = dict(sorted(configurations.items()))
    return Plans(
        dataset_name=new.dataset_name, channel_names=new.channel_names, labels=new.labels,
        file_ending=new.file_ending, configurations=ordered, planner=new.planner, satnet_version=new.satnet_version,
    )
