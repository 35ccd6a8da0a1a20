"""Where nnU-Net v2 runs for the peer benchmarks: its venv, a scratch folder, the raw datasets.

nnU-Net takes its folders only from the environment variables nnUNet_raw, nnUNet_preprocessed
and nnUNet_results. `NnunetSite` lays them out under one scratch folder, outside the repo:

    SCRATCH/nnUNet_raw/Dataset004_Hippocampus -> DATA/Dataset004_Hippocampus   (a symlink, no copy)
    SCRATCH/nnUNet_preprocessed/ , SCRATCH/nnUNet_results/                     (nnU-Net's own)
    SCRATCH/runs/                                                              (inputs, predictions, logs)

and builds the environment every nnU-Net command runs with. It also writes nnU-Net's
splits_final.json from satnet's splits (both systems validate fold 0 on the same cases).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = Path(os.environ.get("NNUNET_VENV", Path.home() / ".cache/satnet-peers/nnunet-venv"))
DEFAULT_SCRATCH = Path(os.environ.get("NNUNET_SCRATCH", Path.home() / ".cache/satnet-peers/nnunet-work"))
DEFAULT_DATA = (REPO / ".." / "shared" / "data").resolve()
PLANS = "nnUNetPlans"


class PeerSetupError(RuntimeError):
    """Something the benchmark needs is missing; the message says what and how to get it."""


@dataclass(frozen=True)
class NnunetSite:
    """The nnU-Net venv, the scratch folder it works in, and the folder holding the raw datasets."""

    venv: Path = DEFAULT_VENV
    scratch: Path = DEFAULT_SCRATCH
    data: Path = DEFAULT_DATA

    @property
    def raw(self) -> Path:
        return self.scratch / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.scratch / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.scratch / "nnUNet_results"

    @property
    def runs(self) -> Path:
        return self.scratch / "runs"

    def tool(self, name: str) -> Path:
        """An nnU-Net console command (nnUNetv2_train, ...) or `python` of the venv."""
        path = self.venv / "bin" / name
        if not path.exists():
            raise PeerSetupError(f"{path} not found: run benchmarks/peers/setup_nnunet.sh "
                                 f"(with NNUNET_VENV={self.venv} if that is not the default)")
        return path

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """This process's environment plus nnU-Net's three folders (and `extra`), for a subprocess."""
        for folder in (self.raw, self.preprocessed, self.results, self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.preprocessed),
                   nnUNet_results=str(self.results), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        env.update(extra or {})
        return env

    def dataset_name(self, dataset_id: int) -> str:
        """'Dataset004_Hippocampus' for 4, found in the data folder, and linked into nnUNet_raw."""
        prefix = f"Dataset{dataset_id:03d}_"
        found = sorted(p.name for p in self.data.glob(prefix + "*") if p.is_dir()) if self.data.is_dir() else []
        if len(found) != 1:
            raise PeerSetupError(f"expected one folder {prefix}* in {self.data}, found {found or 'none'}; "
                                 f"pass --data with the folder that holds the raw datasets")
        name = found[0]
        link = self.raw / name
        self.raw.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and not link.exists():
            link.symlink_to(self.data / name, target_is_directory=True)
        elif link.resolve() != (self.data / name).resolve():
            raise PeerSetupError(f"{link} points to {link.resolve()}, not {self.data / name}; remove it")
        return name

    def dataset_json(self, dataset_id: int) -> dict:
        return json.loads((self.raw / self.dataset_name(dataset_id) / "dataset.json").read_text())

    def case_ids(self, dataset_id: int) -> list[str]:
        """Sorted ids of the training cases: the label files of labelsTr without the file ending."""
        ending = self.dataset_json(dataset_id)["file_ending"]
        labels = self.raw / self.dataset_name(dataset_id) / "labelsTr"
        return sorted(p.name[: -len(ending)] for p in labels.iterdir() if p.name.endswith(ending))

    def image_files(self, dataset_id: int, case_id: str) -> list[Path]:
        """The channel files imagesTr/{case}_{XXXX}{ending} of one case, in channel order."""
        ending = self.dataset_json(dataset_id)["file_ending"]
        images = self.raw / self.dataset_name(dataset_id) / "imagesTr"
        pattern = re.compile(re.escape(case_id) + r"_\d{4}" + re.escape(ending) + "$")
        return sorted(p for p in images.iterdir() if pattern.match(p.name))

    def splits_file(self, dataset_id: int) -> Path:
        return self.preprocessed / self.dataset_name(dataset_id) / "splits_final.json"

    def fold_dir(self, dataset_id: int, trainer: str, config: str, fold: int) -> Path:
        return self.results / self.dataset_name(dataset_id) / f"{trainer}__{PLANS}__{config}" / f"fold_{fold}"

    def plans_file(self, dataset_id: int) -> Path:
        return self.preprocessed / self.dataset_name(dataset_id) / f"{PLANS}.json"


# ---------------------------------------------------------------------------------------------
# splits_final.json from satnet's splits.json


def satnet_folds(satnet_splits: Path | None, case_ids: list[str]) -> tuple[list[dict], bool]:
    """satnet's folds as nnU-Net's list of {"train", "val"}, and whether they are the default KFold.

    satnet_splits: a satnet WORK_DIR/splits.json; None computes satnet's default folds
    (`make_splits`: KFold(5, shuffle=True, random_state=12345) over the sorted case ids).
    The file's cases must be exactly `case_ids` (the raw dataset's).
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # satnet from this checkout
    from satnet.planning.splits import Splits, make_splits

    default = make_splits(case_ids)
    if satnet_splits is None:
        splits = default
    else:
        splits = Splits.from_dict(json.loads(Path(satnet_splits).read_text()), str(satnet_splits))
        if splits.case_ids != case_ids:
            missing, extra = sorted(set(case_ids) - set(splits.case_ids)), sorted(set(splits.case_ids) - set(case_ids))
            raise PeerSetupError(f"{satnet_splits} does not split this dataset's cases: missing {missing[:5]}, "
                                 f"unknown {extra[:5]}; give the splits.json of a satnet run on the same dataset")
    folds = [{"train": list(f.train), "val": list(f.val)} for f in splits.folds]
    return folds, splits.to_dict()["folds"] == default.to_dict()["folds"]


def nnunet_default_folds(site: NnunetSite, case_ids: list[str]) -> list[dict]:
    """The folds nnU-Net itself would create (its generate_crossval_split, seed 12345), run in its venv."""
    code = ("import json, sys; from nnunetv2.utilities.crossval_split import generate_crossval_split; "
            "print(json.dumps(generate_crossval_split(json.load(sys.stdin), seed=12345, n_splits=5)))")
    out = subprocess.run([str(site.tool("python")), "-c", code], input=json.dumps(case_ids), text=True,
                         capture_output=True, check=True, env=site.env())
    return json.loads(out.stdout)


def same_folds(a: list[dict], b: list[dict]) -> bool:
    """Same folds in the same order, with the same cases (order within a fold ignored)."""
    return len(a) == len(b) and all(sorted(x["train"]) == sorted(y["train"]) and sorted(x["val"]) == sorted(y["val"])
                                    for x, y in zip(a, b))
