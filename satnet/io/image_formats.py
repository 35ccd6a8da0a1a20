"""Per-format backends behind satnet.io.images: SimpleITK, nibabel and Pillow.

Each reader returns the file's values in its own dtype as a (C, Z, Y, X) array (C = pixel
components: 1 for a scalar image, 3 for RGB; Z = 1 for a 2D file) and its ImageGeometry.
Each writer takes a (Z, Y, X) segmentation and a geometry and writes one file at a given
path (the caller makes it atomic). Every library failure becomes an ImageFileError naming
the file; no SimpleITK or Pillow traceback reaches the user.

Which library reads what, and why:
- SimpleITK reads NIfTI, NRRD and MetaImage: its geometry conventions (LPS physical space,
  NIfTI qform/sform choice) are those of nnU-Net and of ITK-based viewers (ITK-SNAP,
  3D Slicer), so a segmentation written back overlays the image there.
- nibabel reads a NIfTI only when SimpleITK refuses it: non-orthonormal direction cosines
  (a sheared grid, e.g. CT with gantry tilt, whose file has no usable qform), or NIfTI-2.
  The sform is kept as stored (direction = its normalised columns, not orthonormalised), and
  a geometry that ITK could not hold is written back by nibabel as an sform-only NIfTI, so
  the round trip is exact.
- Pillow reads and writes 2D natural images (PNG, JPEG, TIFF, BMP).

Two ITK NIfTI behaviours are guarded against:
- a truncated .nii / .nii.gz is read with zeros in place of the missing part instead of
  failing, so after every NIfTI read `_check_nifti_complete` compares the size the header
  announces with the gzip trailer (or the file size for .nii), which costs no decompression;
- NaN and inf voxels are read as 0; `count_nonfinite_nifti` counts them from the raw data
  for the dataset check (float NIfTI files only, which it reads a second time).
"""
from __future__ import annotations

import gzip
import logging
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from satnet.errors import InputError
from satnet.io.geometry import ImageGeometry

logger = logging.getLogger(__name__)

NATURAL_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
NIFTI_ENDINGS = (".nii.gz", ".nii")
SITK_ENDINGS = NIFTI_ENDINGS + (".nrrd", ".mha", ".mhd")
# Largest deviation of DᵀD from the identity that is still written through SimpleITK. ITK
# 5.4's NIfTI reader accepts an sform sheared by 1e-4 and refuses one sheared by 1e-3.
ORTHONORMAL_TOLERANCE = 1e-4
TIFF_ENDINGS = (".tif", ".tiff")
_PIL_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
# ITK's reader for each ending, named because ITK's own choice by ending fails for a .MHA (upper case) file.
_SITK_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".mha": "MetaImageIO",
            ".mhd": "MetaImageIO"}


class ImageFileError(InputError):
    """An image or label file cannot be used; `path` is the file and `reason` says why and the fix."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _library_message(exc: BaseException) -> str:
    """The informative last line of a SimpleITK / Pillow / nibabel error, shortened."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", text)  # the reader's class and object address
    return text if len(text) <= 200 else text[:197] + "..."


def _unreadable(path: Path, exc: BaseException) -> ImageFileError:
    return ImageFileError(
        path,
        f"cannot be read as an image ({_library_message(exc)}); the file is corrupt, truncated or not an "
        f"image: export it again",
    )


# ---------------------------------------------------------------- SimpleITK (NIfTI, NRRD, MHA)


def read_sitk(path: Path, as_label: bool = False) -> tuple[np.ndarray, ImageGeometry]:
    """Read a NIfTI / NRRD / MetaImage file: ((C, Z, Y, X) array in the file's dtype, geometry).
    as_label: the file is a segmentation (for the fix a 4D file is told)."""
    ending = next(e for e in SITK_ENDINGS if path.name.lower().endswith(e))
    try:
        image = sitk.ReadImage(str(path), imageIO=_SITK_IO[ending])
    except RuntimeError as exc:
        if path.name.lower().endswith(NIFTI_ENDINGS):
            return read_nifti_nibabel(path, why=_library_message(exc))
        raise _unreadable(path, exc) from None
    dims = image.GetDimension()
    if dims not in (2, 3):
        size = "x".join(str(s) for s in image.GetSize())
        fix = ("a label file holds one volume of class values: save the segmentation of this case alone, as a 3D "
               "(or 2D) image on its image's grid" if as_label else
               "split the volumes into separate channel files {case}_0000, {case}_0001, ... as nnU-Net requires")
        raise ImageFileError(path, f"is a {dims}D image (size {size}, x first); satnet expects one 2D or 3D "
                                   f"volume per file: {fix}")
    if path.name.lower().endswith(NIFTI_ENDINGS):
        _check_nifti_complete(path)
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X[, C]) or (Y, X[, C])
    array = np.moveaxis(array, -1, 0) if image.GetNumberOfComponentsPerPixel() > 1 else array[None]
    if dims == 2:
        array = array[:, None]
    geometry = ImageGeometry.from_sitk(
        image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), spatial_dims_in_file=dims
    )
    return array, geometry


def write_sitk(seg: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    """Write a (Z, Y, X) segmentation with SimpleITK, in 2D when the reference file was 2D."""
    size, spacing, origin, direction = geometry.to_sitk()
    if geometry.spatial_dims_in_file == 2:
        image = sitk.GetImageFromArray(seg[0])
        spacing, origin, direction = spacing[:2], origin[:2], [direction[0], direction[1], direction[3], direction[4]]
    else:
        image = sitk.GetImageFromArray(seg)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def is_orthonormal(geometry: ImageGeometry, tolerance: float = ORTHONORMAL_TOLERANCE) -> bool:
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    return bool(np.abs(d.T @ d - np.eye(3)).max() <= tolerance)


# ---------------------------------------------------------------- NIfTI integrity and the nibabel fallback


def _open_maybe_gzip(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _expected_nifti_bytes(path: Path) -> int:
    """Bytes a NIfTI-1 or NIfTI-2 header announces: data offset plus data size.

    Parsed with struct from the first 540 bytes (a tenth of the time nibabel takes); the
    header is known to be valid because SimpleITK has just read the file.
    """
    with _open_maybe_gzip(path) as f:
        head = f.read(540)
    for order in "<>":
        sizeof_hdr = struct.unpack_from(order + "i", head, 0)[0]
        if sizeof_hdr == 348:  # NIfTI-1: dim int16[8] at 40, bitpix int16 at 72, vox_offset float32 at 108
            dims, bitpix = struct.unpack_from(order + "8h", head, 40), struct.unpack_from(order + "h", head, 72)[0]
            offset = int(struct.unpack_from(order + "f", head, 108)[0])
            break
        if sizeof_hdr == 540:  # NIfTI-2: bitpix int16 at 14, dim int64[8] at 16, vox_offset int64 at 168
            dims, bitpix = struct.unpack_from(order + "8q", head, 16), struct.unpack_from(order + "h", head, 14)[0]
            offset = struct.unpack_from(order + "q", head, 168)[0]
            break
    else:
        raise ImageFileError(path, "does not start with a NIfTI header; the file is corrupt: export it again")
    # A single-file NIfTI whose vox_offset is too small keeps its data right after the header
    # and the 4-byte extension flag (how niftilib and ITK read it).
    offset = max(offset, sizeof_hdr + 4)
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(1, min(int(dims[0]), 7))]], dtype=np.int64))
    return offset + voxels * max(int(bitpix), 8) // 8


def _decompressed_size(path: Path) -> int:
    """Bytes a gzip file decompresses to, counting every member; a truncated stream counts what it holds."""
    total = 0
    decompressor = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, 32 KiB window
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            while chunk:
                try:
                    total += len(decompressor.decompress(chunk))
                except zlib.error:
                    return total  # corrupt data
                if not decompressor.eof:
                    break
                chunk = decompressor.unused_data  # another gzip member follows
                decompressor = zlib.decompressobj(wbits=47)
    return total


def _check_nifti_complete(path: Path) -> None:
    """Raise when a NIfTI file holds fewer bytes than its header announces.

    For .nii.gz the gzip trailer holds the uncompressed size mod 2**32: when it matches, the
    file is complete; otherwise (padding, several gzip members, or truncation) the stream is
    decompressed and counted, which is exact.
    """
    expected = _expected_nifti_bytes(path)
    if not path.name.lower().endswith(".gz"):
        found = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                return
        found = _decompressed_size(path)
    if found < expected:
        raise ImageFileError(
            path,
            f"is truncated: it holds {found} of the {expected} bytes its header announces (uncompressed); "
            f"copy or export the file again",
        )


def read_nifti_nibabel(path: Path, why: str = "") -> tuple[np.ndarray, ImageGeometry]:
    """Read a 3D NIfTI that SimpleITK refused (`why`): ((C, Z, Y, X) array, geometry as stored).

    The NIfTI files ITK refuses yet nibabel reads are those with non-orthonormal direction
    cosines (a sheared grid) and NIfTI-2 files. The geometry is nibabel's best affine (the
    sform when present), converted to ITK's LPS space, with the direction's columns
    normalised but not orthonormalised.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
        _check_nifti_complete(path)
        data = np.asanyarray(image.dataobj)  # (x, y, z), scaled by scl_slope / scl_inter
    except ImageFileError:
        raise
    except Exception as exc:  # nibabel raises several types for broken files
        raise _unreadable(path, exc) from None
    if data.ndim != 3 or data.dtype.fields is not None:
        raise ImageFileError(
            path,
            f"cannot be read by SimpleITK ({why}), and satnet's fallback reader (nibabel) takes only scalar 3D "
            f"NIfTI files: convert it to a 3D NIfTI-1 file with orthonormal direction cosines",
        )
    affine = np.asarray(image.affine, dtype=np.float64).copy()
    affine[:2] *= -1  # nibabel's RAS+ to ITK's LPS+
    affine += 0.0  # -0.0 -> 0.0
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    logger.info("%s: read with nibabel because SimpleITK refused it (%s)", path, why)
    geometry = ImageGeometry.from_sitk(data.shape, spacing, affine[:3, 3], direction.ravel())
    return np.ascontiguousarray(data.transpose(2, 1, 0))[None], geometry


def write_nifti_nibabel(seg: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    """Write a (Z, Y, X) segmentation as an sform-only NIfTI carrying a non-orthonormal geometry."""
    import nibabel as nib

    size, spacing, origin, direction = geometry.to_sitk()
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = origin
    affine[:2] *= -1  # ITK's LPS+ to NIfTI's RAS+
    image = nib.Nifti1Image(np.ascontiguousarray(seg.transpose(2, 1, 0)), affine)
    image.set_sform(affine, code=1)
    image.set_qform(None, code=0)  # no qform: readers must use the sform, as for the source file
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def count_nonfinite_nifti(path: Path) -> int:
    """NaN and inf values in a float NIfTI file (0 for integer files), counted from the raw data.

    ITK's NIfTI reader silently turns NaN and inf into 0, so the arrays satnet reads never
    show them; the dataset check counts them here to report the file.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if image.header.get_data_dtype().kind != "f":
            return 0
        data = np.asanyarray(image.dataobj)
    except Exception as exc:
        raise _unreadable(path, exc) from None
    return int(data.size - np.count_nonzero(np.isfinite(data)))


# ---------------------------------------------------------------- Pillow (2D natural images)


def _natural_geometry(height: int, width: int) -> ImageGeometry:
    # spacing (999, 1, 1): nnU-Net's convention, so no resampling ever crosses the absent Z axis
    return ImageGeometry.from_sitk([width, height], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0])


def _open_pillow(path: Path) -> Image.Image | None:
    """The image, loaded; None for a TIFF that Pillow cannot decode (ITK may: float colour, many 16-bit samples)."""
    try:
        with warnings.catch_warnings():  # "Corrupt EXIF data" and the like: satnet reads no metadata of these files
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            image = Image.open(path)
            image.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        if path.name.lower().endswith(TIFF_ENDINGS):
            return None
        raise _unreadable(path, exc) from None
    if getattr(image, "n_frames", 1) > 1:
        raise _pages_error(path, image.n_frames)
    return image


def _pages_error(path: Path, pages: int) -> ImageFileError:
    return ImageFileError(
        path, f"holds {pages} frames or pages; satnet reads single-frame 2D images: save one image per file")


def _samples_pillow_loses(image: Image.Image, path: Path) -> tuple[int, bool] | None:
    """(samples per pixel, last sample is alpha) of a PNG or TIFF whose samples Pillow would not keep as stored
    (16-bit RGB / RGBA read at 8 bits, a TIFF of more than 4 samples read as its first four); None otherwise."""
    if image.format == "PNG":
        with open(path, "rb") as f:  # IHDR's bit depth and colour type (2 RGB, 6 RGBA) are bytes 24 and 25
            header = f.read(26)
        if len(header) == 26 and header[24] == 16 and header[25] in (2, 6):
            return (3, False) if header[25] == 2 else (4, True)
    elif image.format == "TIFF":
        tags = image.tag_v2
        samples = int(tags.get(277, 1))  # SamplesPerPixel
        bits = tags.get(258, (8,))  # BitsPerSample, one per sample
        bits = max(bits) if isinstance(bits, tuple) else int(bits)
        if samples > 1 and (bits > 8 or samples > 4):
            extra = tags.get(338, ())  # ExtraSamples: 1 associated alpha, 2 unassociated alpha
            extra = extra if isinstance(extra, tuple) else (extra,)
            return samples, samples in (2, 4) and bool(extra) and extra[-1] in (1, 2)
    return None


def _read_samples_sitk(path: Path, alpha: bool) -> np.ndarray:
    """(C, H, W) samples of a PNG / TIFF as stored, through ITK's PNG and TIFF readers (the alpha sample dropped)."""
    io = "PNGImageIO" if path.name.lower().endswith(".png") else "TIFFImageIO"
    try:
        image = sitk.ReadImage(str(path), imageIO=io)
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None
    if image.GetDimension() != 2:
        raise _pages_error(path, image.GetSize()[2])
    array = sitk.GetArrayFromImage(image)  # (H, W, samples)
    array = np.moveaxis(array, -1, 0) if array.ndim == 3 else array[None]
    return array[:-1] if alpha else array


def _pillow_channels(image: Image.Image, as_label: bool) -> tuple[np.ndarray, str]:
    """(C, H, W) channels of an image Pillow reads as stored, and its mode (read_pillow says which channels)."""
    mode = image.mode
    if mode in ("P", "PA") and not as_label:  # a label keeps its palette indices
        image, mode = image.convert("RGB"), "RGB"
    elif mode not in ("1", "L", "LA", "P", "PA", "I", "F", "RGB", "RGBA") and not mode.startswith("I;16"):
        image, mode = image.convert("RGB"), "RGB"
    array = np.asarray(image)  # (H, W) or (H, W, bands)
    if mode == "1":
        array = array.astype(np.uint8)
    if array.ndim == 3:
        array = array[..., : 1 if mode in ("LA", "PA") else 3]  # drop alpha
    return (np.moveaxis(array, -1, 0) if array.ndim == 3 else array[None]), mode


def read_pillow(path: Path, as_label: bool = False) -> tuple[np.ndarray, ImageGeometry]:
    """Read a 2D natural image: ((C, 1, H, W) array, maybe not contiguous; geometry with spacing (999, 1, 1)).

    Channels: RGB -> 3; RGBA -> 3 (the alpha channel is dropped, colours are kept as stored,
    not composited onto a background); grayscale (L, I, I;16, F, 1) -> 1; LA -> 1; palette
    (P) -> 3 colours for an image, 1 (the palette indices) for a label; CMYK, YCbCr, LAB and
    HSV -> converted to RGB. A label must be single-channel; an RGB label whose three
    channels are identical (a gray mask saved as RGB) is read as one channel.

    Pillow keeps colour at 8 bits per sample and at most four samples: a 16-bit RGB(A) PNG or
    TIFF, a TIFF of more than four samples (multispectral) and a TIFF Pillow cannot decode
    (float colour) are read by ITK instead, every sample as stored (uint16 stays uint16; a
    TIFF's alpha, marked in ExtraSamples, is dropped).
    """
    image = _open_pillow(path)
    lost = (0, False) if image is None else _samples_pillow_loses(image, path)
    if image is not None:
        with image:
            if lost is None:
                array, mode = _pillow_channels(image, as_label)
    if lost is not None:
        array = _read_samples_sitk(path, alpha=lost[1])
        mode = f"{array.shape[0] + lost[1]}-sample"
    if as_label and array.shape[0] > 1:
        if not (array == array[:1]).all():
            raise ImageFileError(
                path,
                f"is a {mode} image with differing colour channels; a label must be one channel of integer "
                f"values: save it as a grayscale (mode L) or palette (mode P) image",
            )
        array = array[:1]
    return array[:, None], _natural_geometry(*array.shape[1:])  # (C, 1, H, W), a view: callers copy


def write_pillow(seg: np.ndarray, path: Path, ending: str) -> None:
    """Write a (1, H, W) uint8 segmentation as a grayscale PNG / BMP / TIFF."""
    if seg.shape[0] != 1:
        raise InputError(
            f"cannot write a segmentation of shape {tuple(seg.shape)} (Z, Y, X) to {path}: {ending} holds 2D "
            f"images only; use .nii.gz for 3D"
        )
    Image.fromarray(seg[0]).save(path, format=_PIL_FORMATS[ending])  # uint8 (H, W) -> mode L
