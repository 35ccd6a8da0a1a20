"""satnet.io: every file satnet reads or writes, and the on-disk contracts (docs/formats.md).

- images: read_image, read_label, write_segmentation, SUPPORTED_ENDINGS, geometry_mismatch
- dataset: load_dataset_json / DatasetJson, RawCase, find_training_cases, find_cases_in_folder,
  read_case
- checks: check_dataset -> RawDataset (run before any stage writes anything)
- geometry: ImageGeometry, (Z, Y, X) order; cases: preprocessed cases; checkpoints

The names below are importable from `satnet.io` directly; they load on first use, so that
`import satnet.io.cases` does not import SimpleITK.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SUPPORTED_ENDINGS": "satnet.io.images",
    "ImageFileError": "satnet.io.images",
    "geometry_mismatch": "satnet.io.images",
    "read_image": "satnet.io.images",
    "read_label": "satnet.io.images",
    "write_segmentation": "satnet.io.images",
    "DatasetJson": "satnet.io.dataset",
    "RawCase": "satnet.io.dataset",
    "find_cases_in_folder": "satnet.io.dataset",
    "find_training_cases": "satnet.io.dataset",
    "load_dataset_json": "satnet.io.dataset",
    "read_case": "satnet.io.dataset",
    "RawDataset": "satnet.io.checks",
    "check_dataset": "satnet.io.checks",
    "ImageGeometry": "satnet.io.geometry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'satnet.io' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
