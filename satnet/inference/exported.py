"""`satnet export`: a self-contained model folder, and predicting from it with ONNX Runtime.

    OUT_DIR/
        satnet_model.json      everything prediction needs (EXPORT_FORMAT_VERSION; docs/formats.md)
        fold_<k>.onnx          one network per fold: input "image" (B, C, *spatial), output "logits"
                               (B, K, *spatial); batch and spatial sizes are dynamic (each spatial size a
                               multiple of the network's total stride, as the sliding window's tiles are)
        fold_<k>.xml, .bin     instead, with `--format openvino`: the same network as OpenVINO IR (fp32
                               weights), which only the OpenVINO backend reads; it loads without the onnx package

satnet_model.json holds the configuration's plan as it was trained (spacing, normalisation, patch size,
resampling, network spec), the dataset's labels, channel names and file ending, the postprocessing that
find-best decided (or null), the sliding-window settings (step, mirroring axes), and the satnet version. A
folder so made predicts without the work folder: `satnet predict -m OUT_DIR` (backend onnxruntime).

The networks are traced with satnet's CPU fast paths switched off (`satnet.nets.layers` sends every
convolution to F.conv*d during export; the norm exports as group norm), so the ONNX graph is the plain
function; its logits were within 2e-6 of torch's (relative to the logit range) for every architecture.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from satnet import __version__
from satnet.contracts import (
    Contract,
    atomic_write_json,
    check_writable_folder,
    is_temporary,
    new_file_mode,
    read_json,
    remove_temporaries,
)
from satnet.errors import ConfigError, InputError, MissingFileError, SatnetError, command
from satnet.io.workdir import EXPORT_FILE, is_exported_folder  # noqa: F401 (re-exported: satnet_model.json and its test)
from satnet.names import EXPORT_FORMATS
from satnet.inference.models import ConfigurationModels, load_configuration, postprocessing_path
from satnet.planning.fingerprint import FINGERPRINT_FILE, load_fingerprint
from satnet.planning.plans import Plans

logger = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1
FORMATS = EXPORT_FORMATS
SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
OPSET = 17
INPUT, OUTPUT = "image", "logits"


@dataclass
class ExportedModel(Contract):
    """satnet_model.json: see the module docstring and docs/formats.md."""

    FORMAT_VERSION = EXPORT_FORMAT_VERSION

    config: str
    folds: list[str]
    files: list[str]
    format: str
    plans: dict
    postprocessing: dict | None = None
    step: float = 0.5
    mirror_axes: list[int] = field(default_factory=list)
    training_spacing: list[float] | None = None  # median spacing and slice count of the training cases, which
    training_slices: int | None = None  # predict checks each scan against (satnet.io.checks.scan_problems)
    satnet_version: str = ""
    format_version: int = EXPORT_FORMAT_VERSION

    def __post_init__(self) -> None:
        # Contract.from_dict puts the file's name in front of these messages
        fix = "export the model again with `satnet export`"
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}; {fix}")
        if not (isinstance(self.folds, list) and isinstance(self.files, list) and len(self.folds) == len(self.files)):
            raise ConfigError(f"folds and files must be lists of the same length (one network file per fold), not "
                              f"{self.folds!r} and {self.files!r}; {fix}")
        wrong = [f for f in self.files if not (isinstance(f, str) and EXPORT_NAME.match(f) and f.endswith(SUFFIX[self.format]))]
        if wrong:
            raise ConfigError(f"files must name fold_<k>{SUFFIX[self.format]} files beside it ({self.format} format), "
                              f"not {wrong[0]!r}; {fix}")


def training_reference(work_dir: Path) -> tuple[list[float] | None, int | None]:
    """The training cases' median spacing and slice count (fingerprint.json), to check scans against."""
    if not (work_dir / FINGERPRINT_FILE).is_file():
        return None, None
    try:
        fingerprint = load_fingerprint(work_dir)
    except SatnetError:
        return None, None
    return fingerprint.median_spacing(), int(np.median(fingerprint.shapes_after_crop()[:, 0]))


EXPORT_NAME = re.compile(r"^fold_[A-Za-z0-9]+\.(onnx|xml|bin)$")  # the network files export writes


def unfinished_export(folder: str | Path) -> bool:
    """Whether `folder` holds exported networks but no satnet_model.json: an export stopped while replacing files."""
    folder = Path(folder)
    return (folder.is_dir() and not is_exported_folder(folder)
            and any(EXPORT_NAME.match(p.name) for p in folder.iterdir()))


def _check_output_folder(out_dir: Path) -> None:
    """-o must be writable, and new, empty, or a folder of an earlier export (satnet_model.json, or only the
    network files that an interrupted export leaves), so that exporting never mixes into or deletes other files."""
    check_writable_folder(out_dir, "output folder", "choose another with -o")
    if not out_dir.is_dir() or is_exported_folder(out_dir):
        return
    foreign = sorted(p.name for p in out_dir.iterdir() if not (EXPORT_NAME.match(p.name) or is_temporary(p.name)))
    if foreign:
        more = f" and {len(foreign) - 1} other file(s)" if len(foreign) > 1 else ""
        raise InputError(f"-o {out_dir} holds {foreign[0]}{more} and is no folder of `satnet export` (it has no "
                         f"{EXPORT_FILE}); give -o a new or empty folder, or an earlier export to replace")


def export_configuration(work_dir: str | Path, config: str, out_dir: str | Path, folds: Sequence[str] | None = None,
                         checkpoint: str = "final", fmt: str = "onnx") -> ExportedModel:
    """Write the folds of `config` and satnet_model.json into `out_dir`, all or nothing: into a hidden staging
    folder first, then moved into place (`_move_into_place`). `out_dir` is checked before the models load: it
    must be new, empty or an earlier export."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    if out_dir.resolve() == work_dir.resolve() or work_dir.resolve() in out_dir.resolve().parents:
        raise InputError(f"export into a folder outside the work folder {work_dir}, not {out_dir}: the exported "
                         f"model is meant to travel without it; choose another -o")
    _check_output_folder(out_dir)
    models = load_configuration(work_dir, config, folds, checkpoint, "cpu", "export")
    post = postprocessing_path(work_dir, [config])
    spacing, slices = training_reference(work_dir)
    exported = ExportedModel(
        config=config, folds=list(models.folds), files=[f"fold_{fold}{SUFFIX[fmt]}" for fold in models.folds],
        format=fmt, plans=models.plans.to_dict(),
        postprocessing=read_json(post, "postprocessing decision", "rerun `satnet find-best`") if post.is_file() else None,
        mirror_axes=list(range(len(models.plan.patch_size))), satnet_version=__version__,
        training_spacing=spacing, training_slices=slices,
    )
    write = export_onnx if fmt == "onnx" else export_openvino
    staging = _staging_folder(out_dir)
    try:
        for name, network in zip(exported.files, models.networks):
            write(network, models.plan.network.in_channels, models.plan.patch_size, staging / name)
        atomic_write_json(staging / EXPORT_FILE, exported)
        _move_into_place(staging, out_dir, model_files(exported))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s folds %s to %s", config, ", ".join(models.folds), out_dir)
    return exported


def _staging_folder(out_dir: Path) -> Path:
    """A hidden temporary folder that the export is written into: inside an existing `out_dir`, else beside it.
    What killed exports left there before is removed first."""
    if out_dir.is_dir():
        remove_temporaries(out_dir)
        return Path(tempfile.mkdtemp(prefix=".export.", suffix=".tmp", dir=out_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out_dir.parent, [out_dir.name])
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))


def _move_into_place(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Make the complete export in `staging` the folder `out_dir`, all or nothing for a reader.

    A new `out_dir` is `staging` renamed (one atomic step). An earlier export is replaced file by file: its
    satnet_model.json goes first and the new one comes last, so an export interrupted in between leaves a folder
    without satnet_model.json, which predict refuses as unfinished, never old and new networks under one JSON."""
    if not out_dir.is_dir():
        mode = new_file_mode()
        os.chmod(staging, mode | (mode & 0o444) >> 2)  # mkdtemp's 0700 would hide the model from colleagues
        os.rename(staging, out_dir)
        return
    (out_dir / EXPORT_FILE).unlink(missing_ok=True)
    for name in names:
        os.replace(staging / name, out_dir / name)
    for old in out_dir.iterdir():  # the earlier export's networks that this one does not have (other folds, format)
        if EXPORT_NAME.match(old.name) and old.name not in names:
            old.unlink()
    os.replace(staging / EXPORT_FILE, out_dir / EXPORT_FILE)


def export_onnx(network: torch.nn.Module, in_channels: int, patch: Sequence[int], path: Path) -> None:
    network = network.eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(1, in_channels, *patch)
    axes = {0: "batch", **{i + 2: f"size{i}" for i in range(len(patch))}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about shape checks it bakes in (group norm's batch check); the graph is checked
            # against torch on other batch and spatial sizes (tests/inference/test_exported.py)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(network, (example,), tmp, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: axes, OUTPUT: axes}, opset_version=OPSET, dynamo=False)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_openvino(network: torch.nn.Module, in_channels: int, patch: Sequence[int], path: Path) -> None:
    """OpenVINO IR (`path` .xml and its .bin) converted from the ONNX graph of `export_onnx`, weights kept fp32."""
    ov = _import_openvino("satnet export --format openvino")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export.") as tmp:
        onnx_path = Path(tmp) / "network.onnx"
        export_onnx(network, in_channels, patch, onnx_path)
        xml = Path(tmp) / path.name
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        for part in (xml.with_suffix(".bin"), xml):  # the .xml names a complete pair only once both are there
            os.chmod(part, new_file_mode())
            os.replace(part, path.parent / part.name)


def model_files(exported: ExportedModel) -> list[str]:
    """Every file the folder must hold: the fold networks, and for OpenVINO IR each one's weights (.bin)."""
    return [n for f in exported.files for n in ((f, f[: -len(".xml")] + ".bin") if f.endswith(".xml") else (f,))]


RUNTIMES = ("onnxruntime", "openvino")


def load_exported(folder: str | Path, threads: int | None = None,
                  runtime: str = "onnxruntime") -> tuple[ConfigurationModels, ExportedModel]:
    """The exported folds as predictors (tiles -> logits) of `runtime` ("onnxruntime" or "openvino"), with the
    plan they were trained with."""
    folder = Path(folder)
    exported = ExportedModel.from_dict(read_json(folder / EXPORT_FILE, "exported model",
                                                 f"export it again with `satnet export`"), str(folder / EXPORT_FILE))
    plans = Plans.from_dict(exported.plans, f"{folder / EXPORT_FILE}: plans")
    plan = plans.configuration(exported.config)
    if exported.format == "openvino" and runtime != "openvino":
        raise ConfigError(f"{folder} holds OpenVINO IR (`satnet export --format openvino`), which only --backend "
                          f"openvino reads: install it (pip install -e \".[openvino]\") or export with --format onnx")
    missing = [f for f in model_files(exported) if not (folder / f).is_file()]
    if missing:
        raise MissingFileError(f"{folder} lacks {', '.join(missing)} that {EXPORT_FILE} lists; copy the whole "
                               f"exported folder, or export it again")
    kind = OnnxRuntimePredictor if runtime == "onnxruntime" else OpenVinoPredictor
    predictors = [kind(folder / f, threads) for f in exported.files]
    for predictor in predictors:
        _check_shapes(predictor, plan.network.in_channels, plan.network.num_classes, len(plan.patch_size), exported)
    return ConfigurationModels(exported.config, plan, plans, list(exported.folds), predictors), exported


def _check_shapes(predictor: OnnxRuntimePredictor | OpenVinoPredictor, in_channels: int, num_classes: int,
                  spatial_dims: int, exported: ExportedModel) -> None:
    """The network's input (B, C, *spatial) and output (B, K, *spatial) must be those of the configuration that
    satnet_model.json describes; a fold file of another export (an older satnet's interrupted export, or files
    copied together) fails here, before a case is read, instead of in the runtime with its own message."""
    inputs, outputs = predictor.shapes()

    def fits(dims: list[int | None], channels: int) -> bool:  # the number of axes and the channel axis
        return len(dims) == 2 + spatial_dims and dims[1] in (None, channels)

    if not (fits(inputs, in_channels) and fits(outputs, num_classes)):
        raise InputError(
            f"{predictor.path}: the network takes {_shown(inputs)} and gives {_shown(outputs)}, but {EXPORT_FILE} "
            f"describes configuration {exported.config!r} ({spatial_dims}D, {in_channels} channel(s) in, "
            f"{num_classes} classes out): the folder mixes files of two exports; export it again with "
            f"`{command('satnet', 'export', '-m', 'WORK_DIR', '-c', exported.config, '-o', predictor.path.parent)}`")


def _shown(dims: list[int | None]) -> str:
    """A network's dimensions as "(?, 1, ?, ?)", ? where dynamic."""
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


class OpenVinoPredictor:
    """An exported fold on OpenVINO's CPU runtime: tiles (B, C, *patch) torch -> logits torch. Its precision is
    pinned to fp32 (OpenVINO would infer in bf16 on CPUs that have it, and the masks must match torch's)."""

    def __init__(self, path: Path, threads: int | None = None):
        ov = _import_openvino("--backend openvino")
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
                "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32"})
        except Exception as exc:
            raise _damaged(path, "OpenVINO", exc) from None
        self.path = path

    def shapes(self) -> tuple[list[int | None], list[int | None]]:
        """The input's and the output's dimensions, None where dynamic."""
        return tuple([d.get_length() if d.is_static else None for d in port.get_partial_shape()]  # type: ignore[return-value]
                     for port in (self.compiled.input(0), self.compiled.output(0)))

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        try:
            return torch.from_numpy(np.asarray(self.compiled(_tiles_array(tiles))[self.compiled.output(0)]))
        except Exception as exc:
            raise _failed(self.path, "OpenVINO", tiles, exc) from None


def _import_openvino(needed_by: str):
    try:
        import openvino as ov
    except ImportError:
        raise ConfigError(f"{needed_by} needs OpenVINO: pip install -e \".[openvino]\" (or pip install openvino)") from None
    return ov


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _tiles_array(tiles: torch.Tensor) -> np.ndarray:
    """What both runtimes take: a contiguous float32 numpy array on the CPU."""
    return np.ascontiguousarray(tiles.detach().to("cpu", torch.float32).numpy())


def _failed(path: Path, runtime: str, tiles: torch.Tensor, exc: Exception) -> InputError:
    """The error for a network that loaded but cannot run on the tiles of its configuration."""
    reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
    return InputError(f"{path}: {runtime} cannot run it on tiles of shape {tuple(tiles.shape)} ({reason}); it does "
                      f"not fit {EXPORT_FILE} beside it: export the model again with `satnet export`")


def _damaged(path: Path, runtime: str, exc: Exception) -> InputError:
    """The error for a model file a runtime cannot load (each raises exception types of its own)."""
    return InputError(f"{path}: {runtime} cannot load it ({str(exc).splitlines()[0][:200]}); the file is damaged: "
                      f"copy or export it again")


class OnnxRuntimePredictor:
    """An exported fold as the sliding window's predictor: tiles (B, C, *patch) torch -> logits torch, on the CPU."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("--backend onnxruntime needs ONNX Runtime: pip install -e \".[onnx]\" (or "
                              "pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise _damaged(path, "ONNX Runtime", exc) from None
        self.path = path

    def shapes(self) -> tuple[list[int | None], list[int | None]]:
        """The input's and the output's dimensions, None where dynamic (named)."""
        return tuple([d if isinstance(d, int) else None for d in node.shape]  # type: ignore[return-value]
                     for node in (self.session.get_inputs()[0], self.session.get_outputs()[0]))

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        try:
            return torch.from_numpy(self.session.run([OUTPUT], {INPUT: _tiles_array(tiles)})[0])
        except Exception as exc:
            raise _failed(self.path, "ONNX Runtime", tiles, exc) from None
