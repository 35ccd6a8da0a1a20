"""ImageGeometry: where an image's voxels sit in physical space, in satnet's (Z, Y, X) order.

SimpleITK (and ITK-SNAP, 3D Slicer) speak (x, y, z): spacing[0] is the x spacing and the
direction is a row-major 3x3 matrix whose column j is the physical direction of index axis j.
satnet's arrays are numpy (Z, Y, X), so every per-axis value is stored reversed, and the
direction matrix has both its rows and its columns reversed. Reversal is a permutation of the
same floats, so the round trip to the file is exact. Only satnet/io converts.
"""
from __future__ import annotations

from dataclasses import dataclass

from satnet.contracts import Contract
from satnet.errors import ConfigError


@dataclass
class ImageGeometry(Contract):
    """Shape and physical placement of an image (spatial axes only).

    - shape: voxels per axis (Z, Y, X); a 2D image has Z = 1.
    - spacing: mm per voxel (Z, Y, X). 2D natural images (PNG, JPEG, TIFF) get 1.0 in-plane and
      999.0 along Z, as nnU-Net does, so no resampling crosses the (absent) Z axis.
    - origin: physical position of voxel (0, 0, 0) in mm, (Z, Y, X) = SimpleITK's origin reversed.
    - direction: 9 numbers, row-major 3x3 in (Z, Y, X) order (SimpleITK's with rows and columns
      reversed).
    - spatial_dims_in_file: 2 for 2D files (PNG, a 2D NIfTI), 3 otherwise; export writes the
      same dimensionality back.
    """

    shape: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    spatial_dims_in_file: int = 3

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ConfigError(
                "ImageGeometry needs 3 shape, spacing and origin values and 9 direction values, not "
                f"{len(self.shape)}, {len(self.spacing)}, {len(self.origin)}, {len(self.direction)}"
            )

    @staticmethod
    def from_sitk(size_xyz, spacing_xyz, origin_xyz, direction_xyz, spatial_dims_in_file: int = 3) -> "ImageGeometry":
        """Convert SimpleITK-ordered values (any 2D or 3D) into a (Z, Y, X) geometry."""
        n = len(size_xyz)
        if n == 2:  # pad a 2D image to 3D with a unit Z axis
            size_xyz = list(size_xyz) + [1]
            spacing_xyz = list(spacing_xyz) + [999.0]
            origin_xyz = list(origin_xyz) + [0.0]
            d = list(direction_xyz)
            direction_xyz = [d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0]
        d = [float(v) for v in direction_xyz]
        direction_zyx = [d[(2 - i) * 3 + (2 - j)] for i in range(3) for j in range(3)]
        return ImageGeometry(
            shape=[int(v) for v in reversed(list(size_xyz))],
            spacing=[float(v) for v in reversed(list(spacing_xyz))],
            origin=[float(v) for v in reversed(list(origin_xyz))],
            direction=direction_zyx,
            spatial_dims_in_file=spatial_dims_in_file if n == 3 else 2,
        )

    def to_sitk(self) -> tuple[list[int], list[float], list[float], list[float]]:
        """(size, spacing, origin, direction) in SimpleITK's (x, y, z) order, 3D."""
        d = self.direction
        direction_xyz = [d[(2 - i) * 3 + (2 - j)] for i in range(3) for j in range(3)]
        return (list(reversed(self.shape)), list(reversed(self.spacing)), list(reversed(self.origin)), direction_xyz)


# ---------------------------------------------------------------------------------------------
# Axis order: the raw (Z, Y, X) axes in the order the network sees them

IDENTITY_AXES = (0, 1, 2)


def check_axis_order(order, what: str) -> list[int]:
    """`order` as a list of ints, or ConfigError naming `what` when it is no permutation of 0, 1, 2."""
    if not isinstance(order, (list, tuple)) or sorted(order) != [0, 1, 2] or any(isinstance(a, bool) for a in order):
        raise ConfigError(f"{what} must be a permutation of the axes 0, 1, 2 (Z, Y, X), not {order!r}")
    return [int(a) for a in order]


def to_network_axes(values, order) -> list:
    """Per-axis values in raw (Z, Y, X) order -> the network's order: entry i is raw axis order[i]."""
    return [values[a] for a in order]


def to_raw_axes(values, order) -> list:
    """The inverse of `to_network_axes`: per-axis values in the network's order -> raw (Z, Y, X) order."""
    raw = [None] * len(order)
    for i, a in enumerate(order):
        raw[a] = values[i]
    return raw


def inverse_axes(order) -> list[int]:
    """The permutation that undoes `order` (for numpy.transpose of the spatial axes)."""
    return to_raw_axes(list(range(len(order))), order)
