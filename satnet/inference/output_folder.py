"""What `satnet predict` keeps in its output folder, and the checks that it replaces only what it wrote.

OUTPUT_DIR holds a mask `{case}{file_ending}` per case (and `{case}.npz` with --save-probabilities),
predict_started.json, written before a run's first mask, and predict_summary.json at its end
(satnet.inference.folder writes it). A folder without either was not written by satnet predict:
files of the cases to predict there are replaced only with --overwrite.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from satnet import __version__
from satnet.contracts import atomic_write_json
from satnet.errors import InputError
from satnet.inference.export import probabilities_file
from satnet.io.dataset import DATASET_JSON, raw_dataset_of


def output_complete(out_dir: Path, case_id: str, file_ending: str, save_probabilities: bool) -> bool:
    """Whether a previous run finished the case: its mask (written last) and, if asked, its .npz exist."""
    mask = out_dir / f"{case_id}{file_ending}"
    return mask.is_file() and (not save_probabilities or probabilities_file(out_dir, case_id).is_file())


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """The input folder exists; the output folder is neither it nor a folder of a raw dataset."""
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} does not exist; give the folder of images to predict with -i")
    if output_dir.resolve() == input_dir.resolve():
        raise InputError(f"the output folder must differ from the input folder {input_dir}: masks named {{case}}"
                         f"<ending> beside the {{case}}_0000 images would be read as stray files next time; "
                         f"choose another -o")
    raw = raw_dataset_of(output_dir)
    if raw is not None:  # its labelsTs/labelsTr hold the reference labels, named as masks are
        raise InputError(f"-o {output_dir} is a folder of the raw dataset {raw} (beside its {DATASET_JSON}): masks "
                         f"written there would mix with or replace its images and reference labels; choose another -o")


STARTED_FILE = "predict_started.json"  # written before a run's first mask
SUMMARY_FILE = "predict_summary.json"  # written at its end


def is_prediction_folder(output_dir: Path) -> bool:
    """Whether `satnet predict` has written into `output_dir` before: predict_started.json (written before a
    run's first mask), or a predict_summary*.json (written at the end, also by satnet before the former)."""
    return (output_dir / STARTED_FILE).is_file() or any(output_dir.glob("predict_summary*.json"))


def check_not_replacing(output_dir: Path, case_ids: Sequence[str], file_ending: str, save_probabilities: bool,
                        overwrite: bool) -> None:
    """Refuse to replace files of these cases in a folder that `satnet predict` has not written into (reference
    labels, another tool's masks) unless --overwrite: predict replaces only what it wrote."""
    if overwrite or not output_dir.is_dir() or is_prediction_folder(output_dir):
        return
    names = [n for c in case_ids for n in ([f"{c}{file_ending}"] + ([probabilities_file(output_dir, c).name]
                                                                     if save_probabilities else []))]
    there = [n for n in names if os.path.lexists(output_dir / n)]
    if there:
        more = f" and {len(there) - 1} more file(s) of the cases to predict" if len(there) > 1 else ""
        raise InputError(f"-o {output_dir} already holds {there[0]}{more}, which satnet predict did not write (the "
                         f"folder has no {STARTED_FILE} or {SUMMARY_FILE}): predicting would replace "
                         f"{'them' if more else 'it'}; choose another -o, or add --overwrite to replace "
                         f"{'them' if more else 'it'}")


def mark_output_folder(output_dir: Path, model: Path) -> None:
    """predict_started.json, before the run's first mask: from now on this folder is satnet predict's output."""
    atomic_write_json(output_dir / STARTED_FILE, {"format_version": 1, "written_by": "satnet predict",
                                                  "satnet_version": __version__, "model": str(model)})
