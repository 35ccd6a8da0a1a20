"""Small ways to break an input file, written with SimpleITK, torch and plain bytes (not satnet.io),
so the corpus tests satnet's readers against files it did not write itself."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk
import torch


class Unavailable(Exception):
    """The bad input cannot be built on this machine (e.g. chmod does not stop root); `args[0]` says why."""


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def edit_json(path: Path, edit: Callable[[Any], object]) -> None:
    """Apply `edit` to the JSON data of `path` in place (its return value is ignored) and write it back."""
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def rewrite_nifti(path: Path, array: Callable[[np.ndarray], np.ndarray] | None = None, **geometry) -> None:
    """Rewrite a NIfTI with `array(values)` and geometry overrides: spacing/origin/direction as SimpleITK takes them
    ((x, y, z) order), `spacing_factor=(fx, fy, fz)` or `origin_shift=(dx, dy, dz)` mm."""
    image = sitk.ReadImage(str(path))
    values = sitk.GetArrayFromImage(image)  # (Z, Y, X)
    new = sitk.GetImageFromArray(array(values) if array is not None else values)
    new.SetSpacing(image.GetSpacing())
    new.SetOrigin(image.GetOrigin())
    new.SetDirection(image.GetDirection())
    factor = geometry.pop("spacing_factor", None)
    if factor is not None:
        new.SetSpacing([s * f for s, f in zip(image.GetSpacing(), factor)])
    shift = geometry.pop("origin_shift", None)
    if shift is not None:
        new.SetOrigin([o + d for o, d in zip(image.GetOrigin(), shift)])
    for key, value in geometry.items():
        getattr(new, f"Set{key.capitalize()}")(value)
    sitk.WriteImage(new, str(path), useCompression=True)


def rotated_direction(degrees: float) -> tuple[float, ...]:
    """A rotation about z, as SimpleITK's row-major 3x3 direction."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def write_4d(path: Path, like: Path, frames: int = 2) -> None:
    """A 4D NIfTI (`frames` time points) with the spatial grid of `like`."""
    reference = sitk.ReadImage(str(like))
    volume = sitk.GetArrayFromImage(reference)
    image = sitk.JoinSeries([sitk.GetImageFromArray(volume)] * frames)
    image.SetSpacing((*reference.GetSpacing(), 1.0))
    image.SetOrigin((*reference.GetOrigin(), 0.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def set_voxel(path: Path, value: float, dtype=np.float32) -> None:
    """Set the centre voxel of a NIfTI to `value`, storing the file as `dtype`."""
    def edit(a: np.ndarray) -> np.ndarray:
        a = a.astype(dtype)
        a[tuple(s // 2 for s in a.shape)] = value
        return a
    rewrite_nifti(path, edit)


def rename_case(folder: Path, old: str, new: str) -> None:
    """Rename every file of case `old` in `folder` ({old}_0000.nii.gz, {old}.nii.gz, ...) to case `new`."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith(old):
            path.rename(path.with_name(new + path.name[len(old):]))


def add_second_channel(raw: Path) -> None:
    """Make a 1-channel dataset a 2-channel one: copy every _0000 file to _0001, list channel "1"."""
    for path in sorted((raw / "imagesTr").glob("*_0000.nii.gz")):
        shutil.copyfile(path, path.with_name(path.name.replace("_0000", "_0001")))
    edit_json(raw / "dataset.json", lambda d: d["channel_names"].update({"1": "T2"}))


def crop_centre(folder: Path, shape: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> None:
    """Keep the central `shape` (Z, Y, X) voxels of every NIfTI in `folder`, with spacing `spacing_xyz` mm."""
    def crop(a: np.ndarray) -> np.ndarray:
        start = [(n - m) // 2 for n, m in zip(a.shape, shape)]
        return a[tuple(slice(s, s + m) for s, m in zip(start, shape))]

    for path in sorted(folder.glob("*.nii.gz")):
        rewrite_nifti(path, crop, spacing=spacing_xyz)


# ---------------------------------------------------------------------------------------------
# Checkpoints


class NotATensor:
    """A class torch.load(weights_only=True) must refuse to unpickle."""

    def __reduce__(self):
        return (os.getcwd, ())  # would run code if unpickled


def pickled_checkpoint(path: Path) -> None:
    """A checkpoint dict that also holds an object of a class: weights_only refuses it."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["extra"] = NotATensor()
    torch.save(checkpoint, path)


def random_bytes(path: Path, size: int = 4096) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(size))


def read_only_folder(folder: Path) -> None:
    """chmod 555 `folder`; Unavailable when that does not stop this process from writing (root)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return
    probe.unlink()
    folder.chmod(0o755)
    raise Unavailable("chmod does not stop this process from writing (it runs as root); the case of a work folder "
                      "under a regular file covers an unwritable WORK_DIR instead")
