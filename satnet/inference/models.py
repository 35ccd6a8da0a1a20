"""Trained models of a work folder: which folds exist, and loading them for prediction.

The checkpoints are WORK_DIR/results/<config>/fold_<k>/checkpoint_{final,best,latest}.pt, find-best's
decisions results/<config or ensemble>/postprocessing.json and results/find_best.json
(satnet.io.workdir draws the whole tree).

A checkpoint carries the network spec its weights belong to and the whole plans.json it was
trained with. Prediction preprocesses with the checkpoint's configuration plan, not with
WORK_DIR/plans.json, so a model stays usable after the plans are edited or re-planned; all
folds of one configuration must agree on it. Checkpoints are read through satnet.io (this
floor never imports training).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from satnet.contracts import read_json
from satnet.errors import ConfigError, InputError, MissingFileError, SatnetError, command, unknown_name_error
from satnet.io.checkpoints import CheckpointMeta, load_checkpoint
from satnet.io.workdir import FOLD_FOLDER, RESULTS_FOLDER, WorkDir, checkpoint_name
from satnet.names import CHECKPOINT_NAMES, DEFAULT_CHECKPOINT, PREDICT_CHECKPOINTS
from satnet.planning.plans import ConfigurationPlan, Plans, load_plans
from satnet.planning.splits import load_splits

logger = logging.getLogger(__name__)
MODEL_FLAG_COMMANDS = ("predict", "export", "visualize")  # they take the work folder as -m


def results_dir(work_dir: str | Path, config: str) -> Path:
    """WORK_DIR/results/<config>."""
    return WorkDir(work_dir).results_dir(config)


def checkpoint_path(work_dir: str | Path, config: str, fold: str, checkpoint: str = DEFAULT_CHECKPOINT) -> Path:
    """WORK_DIR/results/<config>/fold_<fold>/checkpoint_<checkpoint>.pt."""
    return WorkDir(work_dir).checkpoint(config, fold, checkpoint)


def postprocessing_path(work_dir: str | Path, configs: Sequence[str]) -> Path:
    """Where find-best stores the postprocessing decision of one configuration or an ensemble."""
    return WorkDir(work_dir).postprocessing(configs)


def _fold_key(fold: str) -> tuple[int, int]:
    return (1, 0) if fold == "all" else (0, int(fold))


def trained_folds(work_dir: str | Path, config: str, checkpoint: str = DEFAULT_CHECKPOINT) -> list[str]:
    """Folds of `config` ("0", "1", ..., "all") that have checkpoint_<checkpoint>.pt, in order."""
    root = results_dir(work_dir, config)
    if not root.is_dir():
        return []
    folds = [m[1] for p in root.iterdir() if (m := FOLD_FOLDER.match(p.name)) and p.is_dir()]
    return sorted((f for f in folds if checkpoint_path(work_dir, config, f, checkpoint).is_file()), key=_fold_key)


def resolve_folds(work_dir: str | Path, config: str, folds: Sequence[str] | None, checkpoint: str,
                  asked_by: str | None = None) -> list[str]:
    """The folds to predict with: `folds` (each must have the checkpoint) or, when None, every
    numbered fold that has it ("all" only when no numbered fold has). Errors name the fix, in the
    words of the command `asked_by` ("predict", "export", "visualize", "train"; None: neutral)."""
    work_dir = Path(work_dir)
    have = trained_folds(work_dir, config, checkpoint)
    if folds is None:
        numbered = [f for f in have if f != "all"]
        folds = numbered or have
        if not folds:
            unfinished = trained_folds(work_dir, config, "latest")
            if unfinished:
                fix = (f"fold(s) {', '.join(unfinished)} have only checkpoint_latest.pt: training did not finish; "
                       f"resume it with `{command('satnet', 'train', work_dir, config, unfinished[0], '--resume')}`")
            else:
                num_folds = _num_folds(work_dir)
                ensemble = f"folds 0..{num_folds - 1}" if num_folds else "every fold of splits.json"
                fix = (f"train one with `{command('satnet', 'train', work_dir, config, 0)}` ({ensemble} for the "
                       f"cross-validation ensemble)")
            raise MissingFileError(
                f"configuration {config!r} has no trained fold with {checkpoint_name(checkpoint)} under "
                f"{results_dir(work_dir, config)}; {fix}{_other_checkpoints_hint(work_dir, config, checkpoint)}"
            )
        return list(folds)
    missing = [str(f) for f in folds if str(f) not in have]
    if missing:
        num_folds = _num_folds(work_dir)
        lines = [_missing_fold_line(work_dir, config, f, checkpoint, num_folds) for f in missing]
        raise MissingFileError(
            f"configuration {config!r} lacks {checkpoint_name(checkpoint)} for {len(missing)} of the requested folds:\n"
            + "\n".join(f"  - {line}" for line in lines) + _trained_folds_hint(have, asked_by)
        )
    return [str(f) for f in folds]


def _num_folds(work_dir: Path) -> int | None:
    """How many folds WORK_DIR/splits.json has, for an error's hint (read only then); None when it cannot be read
    (the hints then stay general)."""
    try:
        return len(load_splits(work_dir).folds)
    except SatnetError:
        return None


def _missing_fold_line(work_dir: Path, config: str, fold: str, checkpoint: str, num_folds: int | None) -> str:
    if num_folds is not None and fold != "all" and int(fold) >= num_folds:
        return (f"fold {fold}: {WorkDir(work_dir).splits} has no fold {fold}, only folds 0..{num_folds - 1} (and all, "
                f"trained on every case); choose one of those")
    return (f"fold {fold}: {checkpoint_path(work_dir, config, fold, checkpoint)} not found; train it with "
            f"`{command('satnet', 'train', work_dir, config, fold)}`" + _unfinished_hint(work_dir, config, fold))


def _trained_folds_hint(have: list[str], asked_by: str | None) -> str:
    """"(trained folds: 0, 1; <how this command uses them>)", or "" when none is trained."""
    if not have:
        return ""
    use = {
        "predict": "leave out -f to use them",
        "export": "leave out -f to use them",
        "visualize": "give one of them with -f",
        "train": "give one of them as FOLD",
    }.get(asked_by or "")
    return f"\n(trained folds: {', '.join(have)}{'; ' + use if use else ''})"


def _unfinished_hint(work_dir: Path, config: str, fold: str) -> str:
    if checkpoint_path(work_dir, config, fold, "latest").is_file():
        return (f" (checkpoint_latest.pt exists: training did not finish; resume it with "
                f"`{command('satnet', 'train', work_dir, config, fold, '--resume')}`)")
    return ""


def _other_checkpoints_hint(work_dir: Path, config: str, checkpoint: str) -> str:
    other = [c for c in PREDICT_CHECKPOINTS if c != checkpoint and trained_folds(work_dir, config, c)]
    return f"; folds with {checkpoint_name(other[0])} exist: use --checkpoint {other[0]}" if other else ""


def given_as(asked_by: str | None) -> str:
    """How `satnet <asked_by>` takes the work folder: "-m" (predict, export, visualize) or "WORK_DIR" (train, ...)."""
    return "-m" if asked_by in MODEL_FLAG_COMMANDS else "WORK_DIR"


def check_configuration(work_dir: str | Path, config: str, asked_by: str | None = None) -> Plans:
    """WORK_DIR/plans.json, after checking that it plans `config` (a did-you-mean error otherwise).

    asked_by: the satnet command asking ("predict", "export", "visualize", "train"), so hints name its flags.
    """
    plans = load_plans(work_dir, given_as(asked_by))
    if config not in plans.configurations:
        error = unknown_name_error("configuration", config, plans.configurations)
        raise ConfigError(f"{error} (in {WorkDir(work_dir).plans}); choose one with -c, or plan it with "
                          f"`satnet plan-and-preprocess` and train it")
    return plans


def default_configurations(work_dir: str | Path, plans: Plans) -> list[str]:
    """The configuration(s) find-best recommends, else "3d" when planned, else the first planned."""
    path = WorkDir(work_dir).find_best
    if path.is_file():
        data = read_json(path, "find-best result", "rerun `satnet find-best`")
        best = data.get("best") if isinstance(data, dict) else None
        configs = best.get("configurations") if isinstance(best, dict) else None
        if isinstance(configs, list) and configs and all(c in plans.configurations for c in configs):
            logger.info("using %s, recommended by %s", " + ".join(configs), path)
            return list(configs)
        logger.warning("ignoring %s: its recommendation is not in plans.json; rerun `satnet find-best`", path)
    return ["3d"] if "3d" in plans.configurations else [next(iter(plans.configurations))]


@dataclass
class ConfigurationModels:
    """The networks of one configuration's folds, ready to predict (eval mode, on one device).

    plan: the configuration plan the checkpoints were trained with (used to preprocess);
    plans: the whole plans of the first checkpoint (labels, channels, file ending).
    """

    config: str
    plan: ConfigurationPlan
    plans: Plans
    folds: list[str]
    networks: list  # list[torch.nn.Module]


def load_configuration(
    work_dir: str | Path,
    config: str,
    folds: Sequence[str] | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    device: str = "cpu",
    asked_by: str | None = None,
) -> ConfigurationModels:
    """Load the checkpoints of `config` (see `resolve_folds`) once each, onto `device`, in eval mode.

    asked_by: the satnet command asking ("predict", "export", "visualize", "train"), so hints name its flags.
    """
    from satnet.nets import build_network
    from satnet.nets.spec import NetworkSpec

    if checkpoint not in CHECKPOINT_NAMES:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, not {checkpoint!r}")
    check_configuration(work_dir, config, asked_by)
    folds = resolve_folds(work_dir, config, folds, checkpoint, asked_by)
    networks, reference = [], None
    for fold in folds:
        path = checkpoint_path(work_dir, config, fold, checkpoint)
        ckpt = load_checkpoint(path, map_location="cpu")
        meta = CheckpointMeta.of(ckpt)
        plans = _checkpoint_plans(meta, path)
        if meta.config != config or config not in plans.configurations:
            raise InputError(f"{path} belongs to configuration {meta.config!r}, not {config!r}; move it back to "
                             f"{RESULTS_FOLDER}/{meta.config}/")
        plan = plans.configuration(config)
        if reference is None:
            reference = (plans, plan, path)
        elif _preprocessing(plan) != _preprocessing(reference[1]):
            raise InputError(f"{path} was trained with other preprocessing than {reference[2]} (plans changed "
                             f"between folds); retrain the folds with one plans.json, or predict with -f to pick folds")
        network = build_network(NetworkSpec.from_dict(meta.network, f"{path}: network"))
        try:
            network.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as exc:
            raise InputError(f"{path}: its weights do not fit its network spec ({str(exc).splitlines()[0]}); the "
                             f"checkpoint is damaged: retrain fold {fold}") from None
        networks.append(network.to(device).eval())
    plans, plan, _ = reference
    _warn_if_replanned(work_dir, config, plan)
    logger.info("loaded %s folds %s (checkpoint_%s)", config, ", ".join(folds), checkpoint)
    return ConfigurationModels(config, plan, plans, list(folds), networks)


def _checkpoint_plans(meta: CheckpointMeta, path: Path) -> Plans:
    try:
        return Plans.from_dict(json.loads(meta.plans_json), f"{path}: plans_json")
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: plans_json is not valid JSON ({exc}); the checkpoint is damaged") from None


def _preprocessing(plan: ConfigurationPlan) -> dict:
    """What decides how a case is preprocessed and tiled."""
    d = plan.to_dict()
    return {k: d[k] for k in ("spacing", "patch_size", "normalization", "resampling")}


def _warn_if_replanned(work_dir: str | Path, config: str, plan: ConfigurationPlan) -> None:
    current = load_plans(work_dir).configurations.get(config)
    if current is not None and _preprocessing(current) != _preprocessing(plan):
        logger.warning("warning: %s in %s/plans.json differs from the plan its checkpoints were trained with; "
                       "predicting with the checkpoints' plan", config, work_dir)
