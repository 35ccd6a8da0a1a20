"""`satnet predict`: segment every case of a folder of raw images with the trained models.

INPUT_DIR is laid out like imagesTs (`{case}_{channel:04d}{file_ending}`, the training
dataset's ending and channels). Each case is read, preprocessed exactly as in training (the
checkpoints' plan), predicted by every selected fold of every selected configuration, and
written to OUTPUT_DIR as `{case}{file_ending}` with the input's geometry.

Several configurations (find-best's ensemble of two) are averaged on the raw grid, since each
has its own preprocessing; the folds of one configuration are averaged on its preprocessed
grid. Postprocessing is applied when find-best decided it (`results/<config>/postprocessing.json`
or `results/ensemble_<A>+<B>/postprocessing.json`). What else OUTPUT_DIR holds, and the checks that
a run replaces only what satnet predict wrote: satnet.inference.output_folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from satnet import __version__
from satnet.contracts import atomic_write_json, check_writable_folder
from satnet.errors import ConfigError, InputError, MissingFileError, command
from satnet.inference.export import (
    CasePrediction,
    export_ensemble,
    remove_unfinished_outputs,
    write_case,
)
from satnet.inference.exported import (
    EXPORT_FILE,
    ExportedModel,
    is_exported_folder,
    load_exported,
    onnxruntime_available,
    openvino_available,
    training_reference,
    unfinished_export,
)
from satnet.inference.models import (
    ConfigurationModels,
    check_configuration,
    default_configurations,
    load_configuration,
    postprocessing_path,
)
from satnet.inference.output_folder import (
    SUMMARY_FILE,
    check_folders,
    check_not_replacing,
    mark_output_folder,
    output_complete,
)
from satnet.inference.pipeline import PredictionReport, run_pipelined
from satnet.inference.postprocessing import PostprocessingDecision, load_postprocessing
from satnet.inference.predictor import NetworkPredictor, predict_probabilities
from satnet.inference.settings import InferenceSettings, autocast_dtype, resolve_device
from satnet.io.checks import scan_problems
from satnet.io.raw_cases import RawCase, find_cases_in_folder, read_case
from satnet.names import BACKENDS, DEFAULT_CHECKPOINT
from satnet.planning.plans import Plans, load_plans
from satnet.preprocessing.case import preprocess_case

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """Predict every `count`-th case starting at `index` (0 <= index < count): split a folder over machines."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.index, int) and isinstance(self.count, int) and 0 <= self.index < self.count):
            raise InputError(f"part must be I/N with 0 <= I < N, not {self.index}/{self.count}")


def predict_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    work_dir: str | Path,
    configs: Sequence[str] | None = None,
    folds: Sequence[str] | None = None,
    checkpoint: str | None = None,
    settings: InferenceSettings | None = None,
    save_probabilities: bool = False,
    resume: bool = False,
    part: Part = Part(),
    backend: str = "auto",
    overwrite: bool = False,
) -> PredictionReport:
    """Predict every case of `input_dir` into `output_dir`; see the module docstring.

    configs: None -> find-best's recommendation, else "3d" if planned, else the first planned; each at most once.
    folds: None -> every fold with the checkpoint (per configuration).
    checkpoint: None -> DEFAULT_CHECKPOINT.
    resume: skip cases whose outputs exist (satnet.inference.output_folder.output_complete).
    overwrite: replace the cases' files in an `output_dir` that satnet predict has not written into before
    (else refused, satnet.inference.output_folder.check_not_replacing).
    work_dir may also be a folder of `satnet export` (satnet.inference.exported), predicted by OpenVINO or ONNX
    Runtime on the CPU in fp32 (settings asking for another device or precision, and a checkpoint, are refused);
    backend: "torch" (a work folder's checkpoints), "openvino" or "onnxruntime" (an exported folder),
    or "auto" (torch, or for an exported folder openvino when installed, else onnxruntime), named in the log.
    Raises a SatnetError before predicting anything when the folder, the configuration or a
    checkpoint is wrong; a case that cannot be read is recorded in the report's `failed`.
    """
    input_dir, output_dir, work_dir = Path(input_dir), Path(output_dir), Path(work_dir)
    settings = settings or InferenceSettings()
    _check_each_configuration_once(configs)
    check_folders(input_dir, output_dir)
    check_writable_folder(output_dir, "output folder", "choose another with -o")  # created by the first write
    source = _open_model_folder(work_dir, backend, configs, folds, checkpoint, settings)
    ending = source.plans.file_ending
    report = PredictionReport()
    cases = _cases_to_predict(input_dir, output_dir, source, part, resume, save_probabilities, report)
    check_not_replacing(output_dir, [c.case_id for c in cases], ending, save_probabilities, overwrite)
    remove_unfinished_outputs(output_dir, [c.case_id for c in cases] + report.skipped, ending)  # this part's only
    if not cases:
        return report
    device = resolve_device(settings.device) if source.exported is None else torch.device("cpu")
    logger.info("backend: %s", source.backend)
    ensemble, postprocessing = _build_ensemble(source, folds, checkpoint, settings, device, save_probabilities)
    _predict_cases(cases, ensemble, postprocessing, output_dir, source, save_probabilities, report)
    if report.predicted:  # a run that wrote no mask leaves the output folder as it was
        _write_summary(output_dir, part, report, source.backend, source.configs, [m.folds for m in ensemble.models],
                       settings, work_dir, ensemble.precision, device)
    return report


def _check_each_configuration_once(configs: Sequence[str] | None) -> None:
    """-c names each configuration at most once (two different ones are an ensemble)."""
    if configs and len(set(configs)) < len(configs):
        twice = next(c for c in configs if list(configs).count(c) > 1)
        raise ConfigError(f"-c names {twice} more than once ({' '.join(configs)}); give each configuration once "
                          f"(two different ones are ensembled)")


@dataclass
class _ModelFolder:
    """What -m holds, read before the cases: its plans, the configurations to predict with and the backend.
    An exported folder's networks are loaded with it (its plans come with them); a work folder's checkpoints
    only once there are cases to predict (`_build_ensemble`)."""

    path: Path
    backend: str
    plans: Plans
    configs: list[str]
    exported: tuple[ConfigurationModels, ExportedModel] | None = None

    @property
    def num_channels(self) -> int:
        return len(self.plans.channel_names)


def _open_model_folder(work_dir: Path, backend: str, configs: Sequence[str] | None, folds: Sequence[str] | None,
                       checkpoint: str | None, settings: InferenceSettings) -> _ModelFolder:
    """A work folder (its plans.json and the configurations, checked) or an exported folder (loaded), with the
    backend that predicts it (`_resolve_backend`)."""
    exported = is_exported_folder(work_dir)
    if not exported and unfinished_export(work_dir):
        raise MissingFileError(f"{work_dir} holds exported networks but no {EXPORT_FILE}: an export into it was "
                               f"interrupted; export it again with "
                               f"`{command('satnet', 'export', '-m', 'WORK_DIR', '-c', 'CONFIG', '-o', work_dir)}`")
    backend = _resolve_backend(backend, exported, work_dir)
    if exported:
        loaded, export_info = _load_exported(work_dir, backend, configs, folds, checkpoint, settings)
        return _ModelFolder(work_dir, backend, loaded.plans, [export_info.config], (loaded, export_info))
    plans = load_plans(work_dir, "-m")
    configs = list(configs) if configs else default_configurations(work_dir, plans)
    for config in configs:
        check_configuration(work_dir, config, "predict")
    return _ModelFolder(work_dir, backend, plans, configs)


def _cases_to_predict(input_dir: Path, output_dir: Path, source: _ModelFolder, part: Part, resume: bool,
                      save_probabilities: bool, report: PredictionReport) -> list[RawCase]:
    """This part's cases of `input_dir`; with `resume`, those whose outputs exist go to report.skipped instead."""
    ending = source.plans.file_ending
    cases = find_cases_in_folder(input_dir, ending, source.num_channels)[part.index :: part.count]
    if resume:
        done = {c.case_id for c in cases if output_complete(output_dir, c.case_id, ending, save_probabilities)}
        report.skipped = sorted(done)
        cases = [c for c in cases if c.case_id not in done]
        logger.info("%d case(s) already predicted in %s; %d to go", len(report.skipped), output_dir, len(cases))
    return cases


def _build_ensemble(source: _ModelFolder, folds: Sequence[str] | None, checkpoint: str | None,
                    settings: InferenceSettings, device: torch.device,
                    save_probabilities: bool) -> tuple[_Ensemble, PostprocessingDecision | None]:
    """The networks that predict (a work folder's checkpoints are loaded here, on `device`) and the postprocessing
    find-best decided for them."""
    if source.exported is not None:
        loaded, export_info = source.exported
        models = [loaded]
        postprocessing = (PostprocessingDecision.from_dict(export_info.postprocessing, f"{source.path}: postprocessing")
                          if export_info.postprocessing else None)
        reference = export_info.training_spacing, export_info.training_slices
    else:
        models = [load_configuration(source.path, c, folds, checkpoint or DEFAULT_CHECKPOINT, str(device), "predict")
                  for c in source.configs]
        postprocessing = _postprocessing(source.path, source.configs)
        reference = training_reference(source.path)
    _check_models_agree(models, source.num_channels, source.plans.labels)
    ensemble = _Ensemble(models, settings, device, keep_probabilities=save_probabilities or len(models) > 1,
                         training_reference=reference)
    return ensemble, postprocessing


def _predict_cases(cases: list[RawCase], ensemble: _Ensemble, postprocessing: PostprocessingDecision | None,
                   output_dir: Path, source: _ModelFolder, save_probabilities: bool, report: PredictionReport) -> None:
    """Read, predict and write every case, overlapped (satnet.inference.pipeline); what happened goes into `report`.
    The output folder is marked as satnet predict's (`mark_output_folder`) before its first mask."""
    marked = []

    def finish(result) -> None:
        if not marked:  # the writer thread is one thread: this runs once, before the first mask
            mark_output_folder(output_dir, source.path)
            marked.append(True)
        write_case(ensemble.export(*result), output_dir, source.plans.file_ending, postprocessing, save_probabilities)

    run = run_pipelined(cases, lambda case: ensemble.load(case, source.num_channels), ensemble.predict, finish,
                        name=lambda case: case.case_id, desc=f"predict {'+'.join(source.configs)}")
    report.predicted, report.failed = run.predicted, run.failed
    report.seconds, report.peak_rss_mb = run.seconds, run.peak_rss_mb


def _load_exported(work_dir: Path, backend: str, configs: Sequence[str] | None, folds: Sequence[str] | None,
                   checkpoint: str | None, settings: InferenceSettings) -> tuple[ConfigurationModels, ExportedModel]:
    """The exported folder's networks, the selected folds of them; flags that do not apply to it are refused."""
    for flag, value, fits, why in (
        ("--device", settings.device, settings.device in ("auto", "cpu"), "runs on the CPU (OpenVINO or ONNX Runtime)"),
        ("--precision", settings.precision, settings.precision == "fp32", "runs in fp32"),
        ("--checkpoint", checkpoint, checkpoint is None,
         "holds the checkpoint it was exported from (`satnet export --checkpoint` chooses it)"),
    ):
        if not fits:
            raise ConfigError(f"{flag} {value} does not apply to {work_dir}: an exported model {why}; leave out "
                              f"{flag}, or give -m the work folder to predict with torch")
    loaded, export_info = load_exported(work_dir, runtime=backend)
    if configs and list(configs) != [export_info.config]:
        raise ConfigError(f"{work_dir} holds configuration {export_info.config!r} only, not {' '.join(configs)}; "
                          f"leave out -c, or export that configuration too")
    if folds and [str(f) for f in folds] != loaded.folds:
        missing = [str(f) for f in folds if str(f) not in loaded.folds]
        if missing:  # as a work folder's missing fold is an error, not a quiet smaller ensemble
            raise ConfigError(f"{work_dir} holds folds {', '.join(export_info.folds)}, not {', '.join(missing)}; "
                              f"leave out -f to use every exported fold, or export those folds too")
        chosen = {str(x) for x in folds}
        loaded.networks = [n for f, n in zip(loaded.folds, loaded.networks) if f in chosen]
        loaded.folds = [f for f in loaded.folds if f in chosen]
    return loaded, export_info


def summary_path(output_dir: Path, part: Part) -> Path:
    """OUTPUT_DIR/predict_summary.json; predict_summary_part<I>of<N>.json for one of several --part processes."""
    name = SUMMARY_FILE if part.count == 1 else f"predict_summary_part{part.index}of{part.count}.json"
    return output_dir / name


def _write_summary(output_dir: Path, part: Part, report: PredictionReport, backend: str, configs: list[str],
                   folds: list[list[str]], settings: InferenceSettings, model: Path, precision: str,
                   device: torch.device) -> None:
    """What this run predicted: per case the seconds and the process's peak memory, the backend and settings
    (the precision and device it ran in, which may differ from what was asked: bf16 falls back to fp32)."""
    cases = [{"case": c, "status": "predicted", "seconds": report.seconds.get(c),
              "peak_rss_mb": report.peak_rss_mb.get(c)} for c in report.predicted]
    cases += [{"case": c, "status": "failed", "reason": reason} for c, reason in sorted(report.failed.items())]
    cases += [{"case": c, "status": "skipped (already predicted)"} for c in report.skipped]
    atomic_write_json(summary_path(output_dir, part), {
        "format_version": 1, "satnet_version": __version__, "model": str(model), "backend": backend,
        "configurations": configs, "folds": folds, "step": settings.step, "mirror": settings.mirror,
        "mirrors": settings.mirrors, "precision": precision, "device": str(device),
        "threads": torch.get_num_threads(), "cases": cases,
    })


def _resolve_backend(backend: str, exported: bool, work_dir: Path) -> str:
    """torch for a work folder's checkpoints; for an exported folder openvino when installed (0.86-0.90x torch's
    time on nnU-Net-sized 3D U-Nets, docs/predict.md), else onnxruntime. A mismatch says what to do."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if not exported:
        if backend in ("auto", "torch"):
            return "torch"
        raise ConfigError(f"--backend {backend} predicts an exported folder: make one with `satnet export -m {work_dir} "
                          f"-c CONFIG -o EXPORT_DIR`, then give -m EXPORT_DIR")
    if backend == "torch":
        raise ConfigError(f"{work_dir} is an exported model (ONNX networks, no checkpoints): predict it with "
                          f"--backend openvino or onnxruntime (auto picks one), or give -m the work folder for torch")
    if backend == "auto":
        backend = "openvino" if openvino_available() else "onnxruntime"
    if not (openvino_available() if backend == "openvino" else onnxruntime_available()):
        extra = "openvino" if backend == "openvino" else "onnx"
        raise ConfigError(f"{work_dir} is an exported model, which needs a runtime: pip install -e \".[{extra}]\" "
                          f"(or pip install {backend}), or pick the other with --backend")
    return backend


def _check_models_agree(models: list[ConfigurationModels], num_channels: int, labels: dict[str, int]) -> None:
    for m in models:
        if len(m.plans.channel_names) != num_channels or m.plans.labels != labels:
            raise InputError(
                f"the checkpoints of {m.config} were trained on other channels or labels ({m.plans.channel_names}, "
                f"{m.plans.labels}) than plans.json lists ({num_channels} channels, {labels}); predict with the "
                f"work folder they were trained in"
            )


def _postprocessing(work_dir: Path, configs: Sequence[str]) -> PostprocessingDecision | None:
    path = postprocessing_path(work_dir, configs)
    if not path.is_file():
        logger.info("no %s: predicting without postprocessing", path)
        return None
    decision = load_postprocessing(path)
    logger.info("postprocessing from %s: %s", path, decision.to_dict())
    return decision


class _Ensemble:
    """The three pipeline steps for an ensemble of configurations (usually one)."""

    def __init__(self, models: list[ConfigurationModels], settings: InferenceSettings, device: torch.device,
                 keep_probabilities: bool, training_reference: tuple[list[float] | None, int | None] = (None, None)):
        self.models = models
        self.training_spacing, self.training_slices = training_reference
        self.settings = settings
        self.device = device
        self.keep_probabilities = keep_probabilities
        torch_networks = any(isinstance(n, torch.nn.Module) for m in models for n in m.networks)
        dtype = autocast_dtype(settings.precision, device) if torch_networks else None  # exported: fp32
        self.precision = "bf16" if dtype == torch.bfloat16 else "fp32"  # what runs, recorded in the summary
        self.predictors = [  # torch networks get satnet's predictor; exported ones are predictors already
            [NetworkPredictor(n, dtype, settings.channels_last, len(m.plan.patch_size))
             if isinstance(n, torch.nn.Module) else n for n in m.networks]
            for m in models
        ]

    def load(self, case: RawCase, num_channels: int):
        """Read the case and preprocess it for each configuration: (case id, [(data, props)])."""
        image, _, geometry = read_case(case, num_channels)  # (C, Z, Y, X)
        dims = min(len(m.plan.patch_size) for m in self.models)
        problems = scan_problems(image, geometry, dims, case.image_files[0], self.training_spacing,
                                 self.training_slices)
        if problems:  # the pipeline records the case as skipped and goes on with the others
            raise InputError(f"{case.image_files[0]}: " + "; it also ".join(problems) + "; this case was skipped")
        labels = self.models[0].plans.labels
        prepared = []
        for m in self.models:
            data, _, props = preprocess_case(image, geometry, None, m.plan, case.case_id, labels)  # (C, z, y, x)
            prepared.append((data, props))
        return case.case_id, prepared

    def predict(self, loaded):
        case_id, prepared = loaded
        return case_id, [
            (predict_probabilities(predictors, data, m.plan, self.settings, self.device), props)
            for m, predictors, (data, props) in zip(self.models, self.predictors, prepared)
        ]

    def export(self, case_id: str, predicted) -> CasePrediction:
        """The case on the raw grid: one configuration's export, or the mean of several (satnet.inference.export)."""
        members = [(probs, props, m.plan) for m, (probs, props) in zip(self.models, predicted)]
        return export_ensemble(members, self.keep_probabilities)
