"""Predicting cases with trained networks: settings, fold ensembling, export, and writing.

For one preprocessed case (C, z, y, x) and the networks of a configuration's folds:
1. each network predicts the case with `sliding_window_predict` (Gaussian-weighted tiles,
   mirroring TTA over every axis of the patch, so the two in-plane axes for a 2d
   configuration), under bf16 autocast when asked and supported;
2. the softmax of each network's logits is averaged over the folds;
3. the probabilities go back onto the raw image's grid (satnet.inference.export), the argmax
   is the segmentation, postprocessing is applied when decided, and the mask is written with
   exactly the raw image's geometry (uint8). `{case}.npz` beside it holds the probabilities on
   the raw grid as float16 (K, Z, Y, X) under the key "probabilities".

`predict_preprocessed_cases` is the entry point for the end-of-fold validation of training;
`satnet.inference.folder.predict_folder` is the one for `satnet predict`.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from satnet.contracts import atomic_write, remove_temporaries
from satnet.errors import ConfigError, InputError
from satnet.inference.export import probabilities_to_segmentation, revert_to_original
from satnet.inference.pipeline import PredictionReport, run_pipelined
from satnet.inference.postprocessing import PostprocessingDecision, apply_postprocessing
from satnet.inference.sliding_window import sliding_window_predict
from satnet.io.cases import CaseProperties, check_case_id, load_case
from satnet.io.geometry import ImageGeometry
from satnet.io.images import write_segmentation
from satnet.names import DEFAULT_DEVICE, DEFAULT_PREDICT_PRECISION, PREDICT_PRECISIONS
from satnet.nets.layers import preferred_memory_format
from satnet.planning.plans import ConfigurationPlan

logger = logging.getLogger(__name__)

PROBABILITIES_KEY = "probabilities"


@dataclass(frozen=True)
class InferenceSettings:
    """How cases are predicted.

    - step: tile distance as a fraction of the patch, in (0, 1]; 0.5 as nnU-Net.
    - mirror: mirroring TTA over every axis of the patch (8 predictions per tile in 3D, 4 in 2D).
    - precision: "fp32", or "bf16" autocast where the device computes bf16 natively (else fp32
      with a warning). fp32 is the default until the Dice difference is measured.
    - device: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:<n>".
    - tile_batch_size: images per network call (tiles, and mirrored copies of them).
    - channels_last: channels_last(_3d) memory format for the network and its tiles (True) or
      contiguous (False); None: the device's layout, `satnet.nets.layers.preferred_memory_format`
      (channels_last on the CPU, the layout the network also trains in; docs/performance.md,
      `bench_predict`, compares the two layouts for prediction).
    """

    step: float = 0.5
    mirror: bool = True
    precision: str = DEFAULT_PREDICT_PRECISION
    device: str = DEFAULT_DEVICE
    tile_batch_size: int = 4
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if not 0 < self.step <= 1:
            raise ConfigError(f"step must be a fraction of the patch in (0, 1], not {self.step!r}")
        if self.precision not in PREDICT_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PREDICT_PRECISIONS)}, not {self.precision!r}")


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a visible GPU is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<n>, not {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
                          "use --device cpu or auto")
    return resolved


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """torch.bfloat16 when bf16 is asked and `device` computes it natively, else None (fp32)."""
    if precision == "fp32":
        return None
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
    if not supported:
        logger.warning("warning: --precision bf16, but this %s has no native bf16 convolutions; using fp32",
                       device.type.upper())
        return None
    return torch.bfloat16


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 or AMX), checked once
    by a tiny bf16 convolution under autocast (emulated bf16 would be slower than fp32)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = nn.functional.conv3d(torch.ones(1, 2, 4, 4, 4), torch.ones(3, 2, 3, 3, 3), padding=1)
        return out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    except RuntimeError:
        return False


class NetworkPredictor:
    """The sliding window's predictor for one network: tiles (B, C, *patch) -> logits (B, K, *patch).

    Applies autocast to `dtype` (None: fp32) and the memory format (see InferenceSettings.channels_last;
    the network is converted in place). The network must already be in eval mode on the tiles' device.
    """

    def __init__(self, network: nn.Module, dtype: torch.dtype | None, channels_last: bool | None, spatial_dims: int):
        self.network = network
        self.dtype = dtype
        if channels_last is None:
            self.memory_format = preferred_memory_format(_device_of(network), spatial_dims)
        elif channels_last:
            self.memory_format = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
        else:
            self.memory_format = torch.contiguous_format
        network.to(memory_format=self.memory_format)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        tiles = tiles.contiguous(memory_format=self.memory_format)
        with torch.autocast(tiles.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            return self.network(tiles)


def _device_of(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def memory_format_of(network: nn.Module) -> torch.memory_format:
    """channels_last(_3d) when the network's convolution weights are in it, else contiguous."""
    for p in network.parameters():
        if p.dim() in (4, 5) and not p.is_contiguous():
            return torch.channels_last if p.dim() == 4 else torch.channels_last_3d
    return torch.contiguous_format


def predict_probabilities(
    predictors: Sequence[NetworkPredictor],
    data: np.ndarray | torch.Tensor,
    plan: ConfigurationPlan,
    settings: InferenceSettings,
    device: torch.device,
) -> torch.Tensor:
    """Mean over `predictors` (one per fold) of the softmax of their sliding-window logits.

    data: preprocessed (C, z, y, x) float32. Returns float32 (K, z, y, x) on the CPU.
    """
    mirror = tuple(range(len(plan.patch_size))) if settings.mirror else ()
    num_classes = plan.network.num_classes
    total = None
    for predictor in predictors:
        kwargs = dict(step=settings.step, mirror_axes=mirror, tile_batch_size=settings.tile_batch_size, device=device)
        try:
            logits = sliding_window_predict(predictor, data, plan.patch_size, num_classes, **kwargs)
        except torch.cuda.OutOfMemoryError:  # the case's logits do not fit beside the network: keep them on the CPU
            torch.cuda.empty_cache()
            kwargs["output_device"] = "cpu"
            logits = sliding_window_predict(predictor, data, plan.patch_size, num_classes, **kwargs)
        probs = torch.softmax(logits, dim=0).cpu()  # (K, z, y, x)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(predictors))


# ---------------------------------------------------------------------------------------------
# Export and writing


@dataclass
class CasePrediction:
    """One case on its raw grid: the segmentation before postprocessing, uint8 (Z, Y, X), and the
    class probabilities float32 (K, Z, Y, X) when they are to be saved (else None)."""

    case_id: str
    geometry: ImageGeometry
    segmentation: np.ndarray
    probabilities: np.ndarray | None = None


def export_case(probs: np.ndarray | torch.Tensor, props: CaseProperties, plan: ConfigurationPlan,
                keep_probabilities: bool) -> CasePrediction:
    """Probabilities (K, z, y, x) on the preprocessed grid -> CasePrediction on the raw grid."""
    threshold = plan.resampling.anisotropy_threshold
    if not keep_probabilities:
        return CasePrediction(props.case_id, props.geometry, probabilities_to_segmentation(probs, props, threshold))
    full = revert_to_original(probs, props, threshold)  # (K, Z, Y, X)
    return CasePrediction(props.case_id, props.geometry, np.argmax(full, axis=0).astype(np.uint8), full)


def probabilities_file(out_dir: str | Path, case_id: str) -> Path:
    return Path(out_dir) / f"{check_case_id(case_id)}.npz"


def save_probabilities(path: str | Path, probabilities: np.ndarray) -> Path:
    """Write (K, Z, Y, X) probabilities as float16 under key "probabilities" in a compressed .npz, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{PROBABILITIES_KEY: np.asarray(probabilities, dtype=np.float16)})
    data = buf.getvalue()
    return atomic_write(path, lambda f: f.write(data))


def load_probabilities(path: str | Path) -> np.ndarray:
    """Read a .npz written by `save_probabilities`: float32 (K, Z, Y, X)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[PROBABILITIES_KEY].astype(np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"probabilities file {path} is unreadable ({type(exc).__name__}: {exc}); predict the case "
                         f"again with --save-probabilities") from None


def remove_unfinished_outputs(out_dir: str | Path, case_ids: Sequence[str], file_ending: str) -> None:
    """Remove what a killed run left of these cases' outputs (the hidden temporaries of their masks and .npz);
    only theirs, since other processes (`satnet predict --part`) may be writing into the same folder."""
    names = [n for c in case_ids for n in (f"{c}{file_ending}", probabilities_file(out_dir, c).name)]
    remove_temporaries(out_dir, names)


def write_case(prediction: CasePrediction, out_dir: str | Path, file_ending: str,
               postprocessing: PostprocessingDecision | None = None, save_probs: bool = False) -> Path:
    """Postprocess and write the mask `{case}{file_ending}` (and first `{case}.npz` when `save_probs`).

    The mask is written last, so its presence marks a complete case.
    """
    if save_probs:
        if prediction.probabilities is None:
            raise ValueError("save_probs needs the probabilities: export with keep_probabilities=True")
        save_probabilities(probabilities_file(out_dir, prediction.case_id), prediction.probabilities)
    seg = prediction.segmentation
    if postprocessing is not None:
        seg = apply_postprocessing(seg, postprocessing)
    path = Path(out_dir) / f"{check_case_id(prediction.case_id)}{file_ending}"
    write_segmentation(seg, prediction.geometry, path)
    return path


# ---------------------------------------------------------------------------------------------
# End-of-fold validation


def predict_preprocessed_cases(
    networks: nn.Module | Sequence[nn.Module],
    plan: ConfigurationPlan,
    folder: str | Path,
    case_ids: Sequence[str],
    out_dir: str | Path,
    file_ending: str,
    save_probabilities: bool = True,
    settings: InferenceSettings | None = None,
    postprocessing: PostprocessingDecision | None = None,
) -> PredictionReport:
    """Predict already preprocessed cases (training's validation) into `out_dir`.

    networks: one network or the networks to ensemble, all built from `plan.network`; they run
        on the device they are on, in eval mode, and get their previous mode and memory format back
        afterwards.
    folder: WORK_DIR/preprocessed/<data_identifier> holding `<case>.npy` and `<case>.json`.
    Writes `out_dir/{case}{file_ending}` (uint8, the raw image's geometry) and, with
    `save_probabilities`, `out_dir/{case}.npz` (float16 (K, Z, Y, X) under "probabilities").
    settings.device is ignored (the networks' device is used). Returns the report; cases that
    could not be read are in `report.failed`.
    """
    networks = [networks] if isinstance(networks, nn.Module) else list(networks)
    settings = settings or InferenceSettings()
    device = _device_of(networks[0])
    modes = [(n.training, memory_format_of(n)) for n in networks]
    dtype = autocast_dtype(settings.precision, device)
    predictors = [NetworkPredictor(n.eval(), dtype, settings.channels_last, len(plan.patch_size)) for n in networks]

    def load(case_id: str):
        data, _, props = load_case(folder, case_id, mmap=False)
        return data, props

    def predict(loaded):
        data, props = loaded
        return predict_probabilities(predictors, data, plan, settings, device), props

    def finish(result) -> None:
        probs, props = result
        write_case(export_case(probs, props, plan, save_probabilities), out_dir, file_ending, postprocessing,
                   save_probabilities)

    remove_unfinished_outputs(out_dir, case_ids, file_ending)
    try:
        return run_pipelined(list(case_ids), load, predict, finish, name=str, desc="validation")
    finally:
        for predictor, (training, memory_format) in zip(predictors, modes):
            predictor.network.train(training)
            predictor.network.to(memory_format=memory_format)
