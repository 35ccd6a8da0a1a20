"""Whether a preprocessed case, and its reference copy in gt_segmentations, still matches its raw files.

Every preprocessed case records the raw files it was made from (`CaseProperties.sources`: each
channel file and the label, with size and SHA-256). A rerun of `satnet preprocess` (or
plan-and-preprocess) hashes the raw files again: a case whose record differs is removed (its
JSON first, so it is never complete with old arrays) and preprocessed again; a reference copy
whose bytes differ from the label is copied again. So a corrected label or image is never
silently trained or validated against with its old content.

Why a content hash and not size and mtime: the hash costs little next to what a rerun does anyway
(the dataset check decodes every file; SHA-256 reads about 4% of that time on ISIC's PNGs), it
sees a change that keeps the size and the mtime (a restore with `cp -p`, `rsync -a` from an
older copy, a coarse-mtime file system), and it does not redo a whole dataset that was copied,
checked out again or `touch`ed unchanged. It also keeps a case's JSON the same on every machine.

Cases preprocessed before the record existed (no `sources` key) are kept unless what can still
be compared differs: the image's geometry (stored in the JSON) or the label against its reference
copy (which the same run wrote). Kept cases get the record now, so later changes are seen;
preprocessing a large dataset again unasked would cost hours. docs/preprocessing.md says the same.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from satnet.contracts import atomic_write, atomic_write_json, dumps_json, read_json_or_none
from satnet.io.cases import CaseProperties, SourceFile, is_complete, props_path_of, remove_case, source_file
from satnet.io.checks import RawDataset
from satnet.io.pool import map_cases
from satnet.io.raw_cases import RawCase
from satnet.io.workdir import WorkDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseSources:
    """The raw files of one case as they are now, and whether its reference copy matches its label.

    reference: "same", "differs" (a copy with other bytes exists) or "absent".
    """

    case: RawCase
    files: tuple[SourceFile, ...]
    reference: str

    @property
    def records(self) -> list[dict]:
        return [f.to_dict() for f in self.files]


def _case_sources(case: RawCase, raw_dir: Path, gt_dir: Path) -> CaseSources:
    paths = list(case.image_files) + ([case.label_file] if case.label_file is not None else [])
    files = tuple(source_file(p, raw_dir) for p in paths)
    reference = "absent"
    if case.label_file is not None:
        copy = gt_dir / case.label_file.name
        if copy.is_file():
            same = copy.stat().st_size == files[-1].size and source_file(copy, gt_dir).sha256 == files[-1].sha256
            reference = "same" if same else "differs"
    return CaseSources(case, files, reference)


def hash_sources(dataset: RawDataset, work_dir: Path, workers: int) -> dict[str, CaseSources]:
    """Case id -> its CaseSources: every raw file hashed, in `workers` processes."""
    job = functools.partial(_case_sources, raw_dir=dataset.raw_dir, gt_dir=WorkDir(work_dir).gt_segmentations)
    return {s.case.case_id: s for s in map_cases(job, dataset.cases, workers, "hash raw files")}


def copy_reference_labels(sources: dict[str, CaseSources], work_dir: Path) -> None:
    """Copy each label whose reference copy is absent or differs into WORK_DIR/gt_segmentations."""
    target = WorkDir(work_dir).gt_segmentations
    for s in sources.values():
        if s.case.label_file is not None and s.reference != "same":
            data = s.case.label_file.read_bytes()
            atomic_write(target / s.case.label_file.name, lambda f, d=data: f.write(d))


def remove_outdated_cases(folder: Path, dataset: RawDataset, sources: dict[str, CaseSources]) -> None:
    """Remove the complete cases of `folder` whose raw files changed since they were preprocessed;
    record the sources of older cases that pass the checks still possible (module docstring)."""
    changed, unrecorded, remade_unrecorded = [], 0, []  # changed: a record that differs, or an unreadable JSON
    for case in dataset.cases:
        cid = case.case_id
        if not is_complete(folder, cid):
            continue
        props_path = props_path_of(folder, cid)
        data = read_json_or_none(props_path)
        current = sources[cid]
        if not isinstance(data, dict):
            changed.append(cid)  # unreadable: made again
        elif data.get("sources") is not None:
            if data["sources"] != current.records:
                changed.append(cid)
        else:
            unrecorded += 1
            geometry = dataset.geometries.get(cid)
            same_geometry = geometry is not None and data.get("geometry") == json.loads(dumps_json(geometry))
            if not same_geometry or current.reference == "differs":
                remade_unrecorded.append(cid)
            else:
                props = CaseProperties.from_dict(data, str(props_path))
                props.sources = list(current.files)
                atomic_write_json(props_path, props)
    for cid in changed + remade_unrecorded:
        remove_case(folder, cid)
    if unrecorded:
        log.warning("warning: %s: %d case(s) were preprocessed before satnet recorded their raw files; %d kept "
                    "(same image geometry and label as then) and recorded now, %d made again. An image whose "
                    "intensities changed before this run is not seen: delete %s and rerun to rebuild every case",
                    folder, unrecorded, unrecorded - len(remade_unrecorded), len(remade_unrecorded), folder)
    if changed:
        log.warning("warning: %s: the raw files of %d case(s) changed since they were preprocessed; making them "
                    "again: %s", folder, len(changed), ", ".join(changed[:10]) + (", ..." if len(changed) > 10 else ""))
