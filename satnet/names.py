"""The names satnet accepts and their defaults: one owner for every list the CLI, the contracts and the docs share.

Each list of names (architectures, skip modes, gate initialisations, precisions, devices,
optimizers, ...) and each default that more than one place states is defined here once; the
CLI's choices and help texts, the dataclasses that check their fields (NetworkSpec,
PlannerOptions, TrainOptions, InferenceSettings) and docs/formats.md read them from this module,
so they cannot drift apart. tests/test_single_owner.py fails when one is typed again elsewhere.

This module sits on the lowest floor beside `errors.py` and imports nothing (no torch), so the
CLI builds its parser and `--help` without importing a network.
"""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Networks (satnet.nets; NetworkSpec checks its fields against these)

ARCH_NAMES = ("unet", "vnet", "tiramisu", "di2in")
DEFAULT_ARCH = "unet"
SKIP_MODES = ("org", "st", "at", "sat")
ATTEND_MODES = ("at", "sat")  # modes that transfer attention maps: the only ones with a channel count k
SELECT_MODES = ("st", "sat")  # modes with a learned select weight W
DEFAULT_SKIP = "sat"
DEFAULT_SKIP_CHANNELS = 1  # the SAT paper's single attention map
# The planner's default skip per resolution level, in --skip-levels syntax ("MODE[:K]" from full resolution down, the
# last repeating; e.g. ("sat", "org")), or None for DEFAULT_SKIP with DEFAULT_SKIP_CHANNELS at every level. The skip
# study (docs/results.md, section 9) chose SAT at full resolution and plain skips below;
# satnet.planning.plans.PlannerOptions applies it.
DEFAULT_SKIP_LEVELS: tuple[str, ...] | None = ("sat", "org")
GATE_INITS = ("glorot", "ones")
DEFAULT_GATE_INIT = "ones"  # chosen by experiment: docs/results.md
NORMS = ("instance", "batch", "group", "none")
INIT_SCHEMES = ("he", "glorot")  # weight initialisations (satnet.nets.init_weights)

# ---------------------------------------------------------------------------------------------
# Planning (PlannerOptions)

CONFIG_NAMES = ("2d", "3d")
DEFAULT_GPU_MEMORY_GB = 8.0

# ---------------------------------------------------------------------------------------------
# Training (TrainOptions)

OPTIMIZERS = ("sgd", "adadelta")
DEFAULT_OPTIMIZER = "sgd"
LR_SCHEDULES = ("poly", "constant")
MAX_SEED = 2**64 - 1  # --seed: torch.manual_seed takes 64 bits
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"  # CUDA when present, else the CPU
PRECISIONS = ("fp32", "bf16", "fp16")  # training autocast; fp16 only on CUDA (with a gradient scaler)
# fp16 (with a GradScaler), as nnU-Net trains. On an H200 (cuDNN 9.19) bf16 was as fast on isotropic 3D U-Nets
# but 4.2x slower than fp16 on a plan with 1x3x3 kernels, where cuDNN chose a slow data-gradient kernel for bf16
# only (docs/gpu.md); both take the same memory.
CUDA_DEFAULT_PRECISION = "fp16"
# On the CPU fp32 is the default: bf16 autocast was measured slower (benchmarks/bench_train.py).
CPU_DEFAULT_PRECISION = "fp32"
# What the planner sizes a patch for by default: what `satnet train` uses on CUDA.
DEFAULT_PLAN_PRECISION = CUDA_DEFAULT_PRECISION
# Plans written before the planner recorded a precision were sized for fp32.
LEGACY_PLAN_PRECISION = "fp32"

# ---------------------------------------------------------------------------------------------
# Checkpoints and prediction

CHECKPOINT_NAMES = ("latest", "best", "final")  # checkpoint_<name>.pt in a fold folder
PREDICT_CHECKPOINTS = ("final", "best")  # those a finished fold has, which predict, export and visualize take
DEFAULT_CHECKPOINT = "final"
# Prediction autocasts to bf16 where the device computes it natively (else fp32); fp32 is the default until the
# Dice difference is measured.
PREDICT_PRECISIONS = ("fp32", "bf16")
DEFAULT_PREDICT_PRECISION = "fp32"
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
DEFAULT_BACKEND = "auto"
# Which flips test-time augmentation predicts (satnet.inference.sliding_window.mirror_subsets): every subset of the
# axes, none and each axis alone, or none and all axes at once.
MIRROR_SETS = ("all", "axes", "opposite")
DEFAULT_MIRRORS = "all"
EXPORT_FORMATS = ("onnx", "openvino")  # satnet export --format: ONNX, or OpenVINO IR converted from it
DEFAULT_EXPORT_FORMAT = "onnx"

