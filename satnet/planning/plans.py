"""plans.json: the single source of truth for preprocessing, training and prediction.

Written by `satnet plan-and-preprocess` (or `satnet plan`) into WORK_DIR/plans.json and read
by every later stage. Field by field in docs/formats.md. Per-axis lists are (Z, Y, X), those of a
configuration in its axis_order (ConfigurationPlan).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satnet.contracts import Contract, atomic_write_json, read_json
from satnet.errors import ConfigError, command, unknown_name_error
from satnet.io.cases import is_safe_name
from satnet.io.dataset import DATASET_JSON, raw_dataset_of
from satnet.io.geometry import IDENTITY_AXES, check_axis_order, to_raw_axes
from satnet.io.workdir import EXPORT_FILE, PLANS_FILE, WorkDir, is_exported_folder  # noqa: F401 (PLANS_FILE re-exported)
from satnet.names import (
    ARCH_NAMES,
    CONFIG_NAMES,
    DEFAULT_ARCH,
    DEFAULT_GATE_INIT,
    DEFAULT_GPU_MEMORY_GB,
    DEFAULT_OPTIMIZER,
    DEFAULT_PLAN_PRECISION,
    DEFAULT_SKIP,
    DEFAULT_SKIP_CHANNELS,
    DEFAULT_SKIP_LEVELS,
    GATE_INITS,
    LEGACY_PLAN_PRECISION,
    SKIP_MODES,
)
from satnet.nets.spec import LevelSkip, NetworkSpec, check_skip_channels, parse_skip_levels, skip_levels_label

NORMALIZATION_SCHEMES = ("ct", "zscore", "rescale", "rgb", "none")


@dataclass
class ChannelNormalization(Contract):
    """How one input channel is normalised.

    - scheme "ct": clip to [clip_low, clip_high] (dataset foreground 0.5 / 99.5 percentiles),
      then (x - mean) / std with the dataset foreground mean and std.
    - scheme "zscore": (x - mean) / std per case, over the case's non-zero region when
      use_nonzero_mask is true (zero outside stays zero), else over the whole case.
    - scheme "rescale": (x - min) / (max - min) per case, over the whole case, to [0, 1].
    - scheme "rgb": x / 255, to [0, 1].
    - scheme "none": unchanged.
    """

    channel: str
    scheme: str
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    use_nonzero_mask: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in NORMALIZATION_SCHEMES:
            raise unknown_name_error("normalization scheme", self.scheme, NORMALIZATION_SCHEMES)
        if self.scheme == "ct" and None in (self.clip_low, self.clip_high, self.mean, self.std):
            raise ConfigError(f"channel {self.channel!r}: scheme 'ct' needs clip_low, clip_high, mean and std")
        if self.std is not None and not self.std > 0:
            raise ConfigError(f"channel {self.channel!r}: std must be > 0, not {self.std}")


@dataclass
class MemoryEstimate(Contract):
    """Estimated GPU memory of one training step at the planned patch and batch, in bytes."""

    activations: int
    parameters: int
    gradients: int
    optimizer: int
    total: int
    inference: int = 0  # peak of live tensors in a no-grad forward of one patch (batch 1)


@dataclass
class ResamplingPlan(Contract):
    """How cases are resampled to `spacing`.

    image_order: spline order for images (3 = cubic). label_mode: "onehot_linear" (each label
    as a one-hot channel, linear interpolation, argmax) or "nearest". separate_z: when the
    spacing is anisotropic (max/min > anisotropy_threshold), resample in-plane with
    image_order and along the coarse axis with order 0 (nnU-Net's rule).
    """

    image_order: int = 3
    label_mode: str = "onehot_linear"
    anisotropy_threshold: float = 3.0

    def __post_init__(self) -> None:
        if self.label_mode not in ("onehot_linear", "nearest"):
            raise unknown_name_error("label_mode", self.label_mode, ("onehot_linear", "nearest"))
        if self.image_order not in (0, 1, 2, 3, 4, 5):
            raise ConfigError(f"image_order must be a spline order 0..5, not {self.image_order}")


@dataclass
class ConfigurationPlan(Contract):
    """One configuration ("2d" or "3d"): target spacing, patch, batch, network, normalisation.

    spacing has 3 entries for both configurations: a 2d configuration trains on slices across the
    first axis of data resampled to this spacing. patch_size has spatial_dims entries. spacing,
    patch_size and median_shape are in the network's axis order, `axis_order`: the raw scans' (Z, Y, X)
    axes reordered so that a coarse (thick-slice) axis comes first, as nnU-Net's transpose_forward;
    [0, 1, 2] (the scans' own order) unless the planned spacing is anisotropic along Y or X, and in
    plans written before the field existed.
    """

    name: str
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    normalization: list[ChannelNormalization]
    network: NetworkSpec
    estimated_memory: MemoryEstimate
    memory_budget_bytes: int
    resampling: ResamplingPlan = field(default_factory=ResamplingPlan)
    median_shape: list[int] = field(default_factory=list)  # median case shape after resampling (in axis_order)
    data_identifier: str = ""  # folder under WORK_DIR/preprocessed/; configurations with equal spacing share one
    # label name -> mean Dice a perfect prediction keeps after resampling to `spacing` and back
    # (satnet.preprocessing.ceiling); None in plans made before 2026-12-07 or without labels
    resampling_ceiling: dict[str, float | None] | None = None
    axis_order: list[int] = field(default_factory=lambda: list(IDENTITY_AXES))

    def data_dir(self, work_dir: str | Path) -> Path:
        """WORK_DIR/preprocessed/<data_identifier> (the configuration's name when unset)."""
        return WorkDir(work_dir).preprocessed_data(self.data_identifier or self.name)

    def raw_spacing(self) -> list[float]:
        """`spacing` in the raw scans' (Z, Y, X) order."""
        return to_raw_axes(self.spacing, self.axis_order)

    @property
    def transposed(self) -> bool:
        """Whether the network sees the scans' axes in another order than (Z, Y, X)."""
        return list(self.axis_order) != list(IDENTITY_AXES)

    def __post_init__(self) -> None:
        for key, value in (("name", self.name), ("data_identifier", self.data_identifier or "x")):
            if not is_safe_name(value):  # both name folders under WORK_DIR
                raise ConfigError(
                    f"configuration {self.name!r}: {key} {value!r} must be a plain folder name (letters, digits, '.', "
                    f"'_', '-'; no path separators or '..'), as it names a folder under WORK_DIR"
                )
        self.axis_order = check_axis_order(self.axis_order, f"configuration {self.name!r}: axis_order")
        dims = self.network.spatial_dims
        if len(self.patch_size) != dims:
            raise ConfigError(
                f"configuration {self.name!r}: patch_size has {len(self.patch_size)} entries but the network "
                f"is {dims}D"
            )
        if len(self.spacing) != 3 or any(not s > 0 for s in self.spacing):
            raise ConfigError(f"configuration {self.name!r}: spacing must be 3 positive numbers (Z, Y, X), not {self.spacing}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"configuration {self.name!r}: batch_size must be a positive integer, not {self.batch_size!r}")
        stride = self.network.total_stride()
        bad = [p for p, s in zip(self.patch_size, stride) if p < 1 or p % s]
        if bad:
            raise ConfigError(
                f"configuration {self.name!r}: patch_size {self.patch_size} must be positive multiples of the "
                f"network's total stride {stride}"
            )
        if len(self.normalization) != self.network.in_channels:
            raise ConfigError(
                f"configuration {self.name!r}: {len(self.normalization)} normalization entries for "
                f"{self.network.in_channels} input channels"
            )


def default_skip_levels() -> list[str] | None:
    """The planner's default per-level skips (names.DEFAULT_SKIP_LEVELS), or None: DEFAULT_SKIP with
    DEFAULT_SKIP_CHANNELS at every level."""
    return list(DEFAULT_SKIP_LEVELS) if DEFAULT_SKIP_LEVELS else None


def default_skip_label() -> str:
    """The skip label (NetworkSpec.skip_label) of the planner's default: its plans carry the bare names "3d", "2d"."""
    return skip_levels_label(default_skip_levels() or [LevelSkip(DEFAULT_SKIP, DEFAULT_SKIP_CHANNELS).entry])


@dataclass
class PlannerOptions(Contract):
    """What the user asked for: `satnet plan`'s options, stored in plans.json under `planner`.

    spacing: "default" (2 mm isotropic; native pixels for 2D natural images), "auto"
    (nnU-Net's median-spacing rule) or three numbers (Z, Y, X) in mm. gpu_memory_gb is the
    memory PyTorch may allocate during training (GiB), i.e. what
    torch.cuda.max_memory_allocated would report: leave the CUDA context's share of the card out.
    precision: what training will autocast to, "fp16" by default because `satnet train` on CUDA
    defaults to it (bf16 takes the same memory; fp32 about twice the activations: docs/gpu.md).
    Plans written before the planner recorded it were sized for fp32, which loading fills in.
    skip_channels: the k maps of at/sat skips (--skip-channels); skip_levels: one "MODE[:K]" per
    skip level from full resolution down (--skip-levels; NetworkSpec.skip_levels), overriding skip
    and skip_channels. The planner's default skip is what none of the three given means
    (`default_skip_levels`); skip_channels alone goes with DEFAULT_SKIP at every level. After
    construction all three hold what was planned (plans.json stores them so).
    """

    gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB
    arch: str = DEFAULT_ARCH
    skip: str | None = None  # None: the default (see the docstring); a str once constructed
    skip_channels: int | None = None
    skip_levels: list[str] | None = None
    spacing: str | list[float] = "default"
    configs: list[str] = field(default_factory=lambda: list(CONFIG_NAMES))
    optimizer: str = DEFAULT_OPTIMIZER
    precision: str = DEFAULT_PLAN_PRECISION
    gate_init: str = DEFAULT_GATE_INIT

    def __post_init__(self) -> None:
        if self.arch not in ARCH_NAMES:
            raise unknown_name_error("arch", self.arch, ARCH_NAMES)
        if self.skip is None and self.skip_channels is None and self.skip_levels is None:
            self.skip_levels = default_skip_levels()
        self.skip = DEFAULT_SKIP if self.skip is None else self.skip
        self.skip_channels = DEFAULT_SKIP_CHANNELS if self.skip_channels is None else self.skip_channels
        if self.skip not in SKIP_MODES:
            raise unknown_name_error("skip", self.skip, SKIP_MODES)
        check_skip_channels(self.skip, self.skip_channels, "--skip-channels")
        if self.skip_levels is not None:
            self.skip_levels = parse_skip_levels(",".join(self.skip_levels))
        if self.gate_init not in GATE_INITS:
            raise unknown_name_error("gate_init", self.gate_init, GATE_INITS)
        for c in self.configs:
            if c not in CONFIG_NAMES:
                raise unknown_name_error("configuration", c, CONFIG_NAMES)
        if not self.gpu_memory_gb > 0:
            raise ConfigError(f"gpu_memory_gb must be positive, not {self.gpu_memory_gb}")
        if isinstance(self.spacing, str):
            if self.spacing not in ("default", "auto"):
                raise ConfigError(f'spacing must be "default", "auto" or three numbers (Z Y X), not {self.spacing!r}')
        elif len(self.spacing) != 3 or any(not float(s) > 0 for s in self.spacing):
            raise ConfigError(f"spacing must be three positive numbers (Z Y X) in mm, not {self.spacing!r}")
        else:
            self.spacing = [float(s) for s in self.spacing]  # stored as floats in plans.json
        self.configs = list(self.configs)

    def skip_request_label(self) -> str:
        """The label of the skips asked for (per level, or one mode and k at every level), before a network's
        levels apply it: a network with fewer skip levels than the request names has a shorter label of its own."""
        return skip_levels_label(self.skip_levels or [LevelSkip(self.skip, self.skip_channels).entry])

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> "PlannerOptions":
        """From plans.json's `planner`; keys an older satnet did not write take their defaults, and a
        missing precision the one those plans were sized for (LEGACY_PLAN_PRECISION)."""
        if isinstance(data, dict) and "precision" not in data:
            data = {**data, "precision": LEGACY_PLAN_PRECISION}
        return super().from_dict(data, source)

    def as_dict(self) -> dict[str, Any]:
        """plans.json's `planner` object (the fields in order)."""
        return self.to_dict()


@dataclass
class Plans(Contract):
    """Everything later stages need to know about the dataset and how it is processed."""

    FORMAT_VERSION = 1

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    configurations: dict[str, ConfigurationPlan]
    planner: PlannerOptions  # the options the planner ran with (a dict is read as PlannerOptions.from_dict)
    satnet_version: str = ""
    format_version: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.planner, dict):
            self.planner = PlannerOptions.from_dict(self.planner, "plans.planner")
        if not self.configurations:
            raise ConfigError("plans have no configurations; rerun `satnet plan-and-preprocess`")
        for key, conf in self.configurations.items():
            if key != conf.name:
                raise ConfigError(f"configurations.{key}: its name field says {conf.name!r}")
            if conf.network.num_classes != len(self.labels):
                raise ConfigError(
                    f"configurations.{key}.network.num_classes is {conf.network.num_classes} but there are "
                    f"{len(self.labels)} labels"
                )

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise unknown_name_error("configuration", name, self.configurations)
        return self.configurations[name]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def save_plans(plans: Plans, work_dir: str | Path) -> Path:
    return atomic_write_json(WorkDir(work_dir).plans, plans)


def _enclosing_work_dir(folder: Path) -> Path | None:
    """The nearest folder above `folder` (up to three levels: results/<config>/fold_<k>) holding plans.json."""
    for parent in list(folder.resolve().parents)[:3]:
        if (parent / PLANS_FILE).is_file():
            return parent
    return None


def _not_a_work_folder(folder: Path, given_as: str) -> str | None:
    """The fix when `folder` (without plans.json) is a raw dataset, an exported model or inside a work folder."""
    expects = "-m expects" if given_as == "-m" else f"{given_as} must be"
    raw = raw_dataset_of(folder)
    if raw is not None:
        what = (f"a raw dataset (it holds {DATASET_JSON})" if raw == folder.resolve()
                else f"the {folder.name} folder of the raw dataset {raw}")
        return (f"{folder} is {what}: {expects} a work folder made by plan-and-preprocess, not the raw dataset; make "
                f"one with `{command('satnet', 'plan-and-preprocess', raw, '-o', 'WORK_DIR')}`, train it, and give "
                f"WORK_DIR")
    if is_exported_folder(folder):
        return (f"{folder} is a model exported by `satnet export` (it holds {EXPORT_FILE}), not a work folder: only "
                f"`{command('satnet', 'predict', '-m', folder)}` takes it; {expects} the work folder the "
                f"model was trained in")
    inside = _enclosing_work_dir(folder)
    if inside is not None:
        return (f"{folder} is inside the work folder {inside}: give that folder (the one holding plans.json), and "
                f"choose a configuration and fold with -c and -f")
    return None


def load_plans(work_dir: str | Path, given_as: str = "WORK_DIR") -> Plans:
    """Read WORK_DIR/plans.json; a missing or invalid file gives an error naming it and the fix.

    given_as: how the command took the folder ("-m" for predict, export and visualize), for the hint
    when the folder is not a work folder at all (a raw dataset, an exported model).
    """
    path = WorkDir(work_dir).plans
    fix = f"run `satnet plan-and-preprocess RAW_DATASET_DIR -o {work_dir}` first"
    if not path.is_file():
        fix = _not_a_work_folder(Path(work_dir), given_as) or fix
    data = read_json(path, "plans file", fix)
    try:
        return Plans.from_dict(data, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n(fix {path} by hand, or rerun `satnet plan` to write a valid one)") from None
