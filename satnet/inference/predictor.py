"""Predicting cases with trained networks: the per-case prediction, and training's validation loop.

For one preprocessed case (C, z, y, x) and the networks of a configuration's folds:
1. each network predicts the case with `sliding_window_predict` (Gaussian-weighted tiles,
   mirroring TTA over every axis of the patch, so the two in-plane axes for a 2d
   configuration), under bf16 autocast when asked and supported (satnet.inference.settings);
2. the softmax of each network's logits is averaged over the folds (`predict_probabilities`);
3. the probabilities go back onto the raw image's grid and are written (satnet.inference.export:
   `export_case`, `write_case`).

`predict_preprocessed_cases` is the entry point for the end-of-fold validation of training;
`satnet.inference.folder.predict_folder` is the one for `satnet predict`. The settings and the
export of a case used to live here and are still importable from this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from satnet.inference.export import (  # noqa: F401 (re-exported: the names' old home)
    PROBABILITIES_KEY,
    CasePrediction,
    export_case,
    export_ensemble,
    load_probabilities,
    probabilities_file,
    remove_unfinished_outputs,
    save_probabilities,
    write_case,
)
from satnet.inference.pipeline import PredictionReport, run_pipelined
from satnet.inference.postprocessing import PostprocessingDecision
from satnet.inference.settings import (  # noqa: F401 (re-exported: the names' old home)
    InferenceSettings,
    autocast_dtype,
    cpu_supports_bf16,
    resolve_device,
)
from satnet.inference.sliding_window import sliding_window_predict
from satnet.io.cases import load_case
from satnet.nets.layers import preferred_memory_format
from satnet.planning.plans import ConfigurationPlan

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
        kwargs = dict(step=settings.step, mirror_axes=mirror, tile_batch_size=settings.tile_batch_size, device=device,
                      mirror_set=settings.mirrors)
        try:
            logits = sliding_window_predict(predictor, data, plan.patch_size, num_classes, **kwargs)
        except torch.cuda.OutOfMemoryError:  # the case's logits do not fit beside the network: keep them on the CPU
            logits = None  # retried after the `except`: until it ends, the error's traceback holds the failed
        if logits is None:  # attempt's GPU tensors (logits, weights, activations), which empty_cache cannot free
            torch.cuda.empty_cache()
            kwargs["output_device"] = "cpu"
            logits = sliding_window_predict(predictor, data, plan.patch_size, num_classes, **kwargs)
        probs = torch.softmax(logits, dim=0).cpu()  # (K, z, y, x)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(predictors))


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
