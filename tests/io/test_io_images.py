"""satnet.io.images: reading, writing and exact geometry round trips in every supported format."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from satnet.errors import InputError, MissingFileError
from satnet.io.geometry import ImageGeometry
from satnet.io.images import (
    SUPPORTED_ENDINGS,
    ImageFileError,
    geometry_mismatch,
    image_ending,
    read_image,
    read_label,
    write_segmentation,
)

from satnet_testing import remove_read_permission

MEDICAL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def write_sitk(array, path, spacing_xyz=(0.7, 0.9, 2.5), origin_xyz=(-3.5, 12.0, 40.25), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz[: image.GetDimension()])
    image.SetOrigin(origin_xyz[: image.GetDimension()])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def oblique_case(dataset_3d):
    """(image path, label path) of a synthetic case: oblique, anisotropic (3, 1, 1), non-zero origin."""
    return dataset_3d / "imagesTr" / "case_000_0000.nii.gz", dataset_3d / "labelsTr" / "case_000.nii.gz"


def test_image_ending_prefers_the_longest_match():
    assert image_ending("a/case_0000.nii.gz") == ".nii.gz"
    assert image_ending("case.NII") == ".nii"
    assert image_ending("case.gz") is None and image_ending(".png") is None
    assert set(MEDICAL_ENDINGS) < set(SUPPORTED_ENDINGS)


def test_read_image_nifti_shape_dtype_and_geometry(oblique_case):
    image, geometry = read_image([oblique_case[0]])
    reference = sitk.ReadImage(str(oblique_case[0]))
    assert image.dtype == np.float32 and image.shape == (1, 16, 20, 24)
    np.testing.assert_array_equal(image[0], sitk.GetArrayFromImage(reference))
    assert geometry.spacing == [3.0, 1.0, 1.0]
    assert geometry.origin == list(reversed(reference.GetOrigin())) and geometry.origin != [0.0, 0.0, 0.0]
    assert geometry.to_sitk()[3] == list(reference.GetDirection())
    assert geometry.spatial_dims_in_file == 3


# In upper case too: the dataset check offers file_ending ".NII.GZ" for files named so. Before, ITK refused to write
# .NII.GZ and .NII, wrote a .MHA as a .mhd header and data file, and could not read a .MHA.
@pytest.mark.parametrize("ending", MEDICAL_ENDINGS + tuple(e.upper() for e in MEDICAL_ENDINGS))
def test_segmentation_round_trip_keeps_geometry_exactly(oblique_case, tmp_path, ending):
    _, geometry = read_image([oblique_case[0]])
    label, _ = read_label(oblique_case[1])
    out = tmp_path / f"seg{ending}"
    write_segmentation(label, geometry, out)
    assert out.is_file()
    label_back, geometry_back = read_label(out)
    assert geometry_back == geometry
    np.testing.assert_array_equal(label_back, label)
    assert label_back.dtype == np.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_mhd_writes_header_and_data_file(oblique_case, tmp_path):
    _, geometry = read_image([oblique_case[0]])
    write_segmentation(np.ones(geometry.shape, np.uint8), geometry, tmp_path / "seg.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.mhd", "seg.zraw"]
    assert read_label(tmp_path / "seg.mhd")[0].all()


@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif"])
def test_natural_image_round_trip(dataset_2d, tmp_path, ending):
    image, geometry = read_image([dataset_2d / "imagesTr" / "img_000_0000.png"])
    rgb = np.asarray(Image.open(dataset_2d / "imagesTr" / "img_000_0000.png"))
    assert image.shape == (3, 1, 32, 40) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, 0], np.moveaxis(rgb, -1, 0))
    assert geometry.spacing == [999.0, 1.0, 1.0] and geometry.spatial_dims_in_file == 2
    label, label_geometry = read_label(dataset_2d / "labelsTr" / "img_000.png")
    assert label.shape == (1, 32, 40) and label_geometry == geometry
    write_segmentation(label, geometry, tmp_path / f"seg{ending}")
    back, back_geometry = read_label(tmp_path / f"seg{ending}")
    assert back_geometry == geometry
    np.testing.assert_array_equal(back, label)


def test_2d_nifti_is_written_back_as_2d(tmp_path):
    rotation = (0.6, -0.8, 0.8, 0.6)
    path = write_sitk(np.arange(12, dtype=np.int16).reshape(3, 4), tmp_path / "img.nii.gz", direction=rotation)
    image, geometry = read_image([path])
    assert image.shape == (1, 1, 3, 4) and geometry.spatial_dims_in_file == 2
    write_segmentation(np.ones((1, 3, 4), np.uint8), geometry, tmp_path / "seg.nii.gz")
    written = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    assert written.GetDimension() == 2
    assert_same_geometry(read_label(tmp_path / "seg.nii.gz")[1], geometry)


def assert_same_geometry(a: ImageGeometry, b: ImageGeometry) -> None:
    """Equal up to the storage precision of the formats (docs/formats.md, "Round-trip precision")."""
    assert (a.shape, a.spatial_dims_in_file) == (b.shape, b.spatial_dims_in_file)
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-15)  # NRRD: last digit of 17
    np.testing.assert_allclose(a.origin, b.origin, rtol=1e-15, atol=1e-12)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=1e-7)  # NIfTI: float32


@pytest.mark.parametrize("ending", MEDICAL_ENDINGS)
def test_round_trip_of_arbitrary_rotations(tmp_path, ending):
    rng = np.random.default_rng(1)
    for i in range(5):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q[:, 0] *= np.sign(np.linalg.det(q))  # a rotation
        source = write_sitk(np.ones((2, 3, 4), np.uint8), tmp_path / f"src{i}{ending}", tuple(rng.uniform(0.3, 3, 3)),
                            tuple(rng.uniform(-300, 300, 3)), tuple(q.ravel()))
        _, geometry = read_image([source])
        write_segmentation(np.ones(geometry.shape, np.uint8), geometry, tmp_path / f"seg{i}{ending}")
        assert_same_geometry(read_label(tmp_path / f"seg{i}{ending}")[1], geometry)


def test_several_channel_files_are_stacked_in_order(tmp_path):
    a = write_sitk(np.full((2, 3, 4), 1, np.int16), tmp_path / "c_0000.nii.gz")
    b = write_sitk(np.full((2, 3, 4), 2.5, np.float32), tmp_path / "c_0001.nii.gz")
    image, _ = read_image([a, b])
    assert image.shape == (2, 2, 3, 4) and image.dtype == np.float32
    assert (image[0] == 1).all() and (image[1] == 2.5).all()


def test_channel_files_on_different_grids_are_refused_naming_both(tmp_path):
    a = write_sitk(np.ones((2, 3, 4), np.int16), tmp_path / "c_0000.nii.gz")
    b = write_sitk(np.ones((2, 3, 4), np.int16), tmp_path / "c_0001.nii.gz", spacing_xyz=(0.7, 0.9, 3.0))
    with pytest.raises(ImageFileError, match=r"c_0001.nii.gz: does not line up with .*c_0000.nii.gz \(spacing"):
        read_image([a, b])


def test_rgba_drops_alpha_and_palette_expands_to_rgb(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image, _ = read_image([tmp_path / "a.png"])
    np.testing.assert_array_equal(image[:, 0], np.moveaxis(rgba[..., :3], -1, 0))
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "p.png")
    image, _ = read_image([tmp_path / "p.png"])
    assert image.shape == (3, 1, 2, 2) and image[:, 0, 0, 1].tolist() == [200.0, 100.0, 50.0]
    label, _ = read_label(tmp_path / "p.png")  # a palette label keeps its indices
    assert label[0].tolist() == [[0, 1], [1, 0]]
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(tmp_path / "g.jpg")
    assert read_image([tmp_path / "g.jpg"])[0].shape == (1, 1, 4, 4)


@pytest.mark.parametrize("ending", [".png", ".tif"])
def test_16_bit_colour_keeps_every_bit_and_drops_alpha(tmp_path, ending):
    """Pillow reads 16-bit RGB(A) at 8 bits; read_image keeps the samples as stored (ITK reads those files)."""
    rgba = np.random.default_rng(1).integers(0, 65536, size=(5, 6, 4), dtype=np.uint16)
    for name, pixels in (("rgb", rgba[..., :3]), ("rgba", rgba)):
        sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=True), str(tmp_path / f"{name}{ending}"))
        image, geometry = read_image([tmp_path / f"{name}{ending}"])
        assert image.shape == (3, 1, 5, 6) and tuple(geometry.spacing) == (999.0, 1.0, 1.0)
        np.testing.assert_array_equal(image[:, 0], np.moveaxis(rgba[..., :3], -1, 0))
    mask = np.repeat(np.array([[[0], [2]], [[1], [0]]], np.uint16), 3, axis=2)  # a gray mask saved as 16-bit RGB
    sitk.WriteImage(sitk.GetImageFromArray(mask, isVector=True), str(tmp_path / f"mask{ending}"))
    assert read_label(tmp_path / f"mask{ending}")[0][0].tolist() == [[0, 2], [1, 0]]


def test_multispectral_and_float_colour_tiffs_keep_all_their_samples(tmp_path):
    rng = np.random.default_rng(2)
    for name, bands in (("ms8", rng.integers(0, 256, size=(4, 5, 6), dtype=np.uint8)),  # Pillow reads 4 of 6
                        ("ms16", rng.integers(0, 65536, size=(4, 5, 6), dtype=np.uint16)),  # Pillow cannot decode
                        ("float", rng.random((4, 5, 3), dtype=np.float32))):  # nor float RGB
        sitk.WriteImage(sitk.GetImageFromArray(bands, isVector=True), str(tmp_path / f"{name}.tif"))
        image, _ = read_image([tmp_path / f"{name}.tif"])
        np.testing.assert_array_equal(image[:, 0], np.moveaxis(bands, -1, 0))
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + bytes(range(200)))  # neither Pillow nor ITK reads it
    with pytest.raises(ImageFileError, match=r"junk.tif: cannot be read as an image \((?!ITK ERROR).*export it again"):
        read_image([tmp_path / "junk.tif"])


def test_label_dtypes(tmp_path):
    assert read_label(write_sitk(np.array([[[0.0, 2.0]]], np.float32), tmp_path / "f.nii.gz"))[0].dtype == np.uint8
    assert read_label(write_sitk(np.array([[[0, 300]]], np.int32), tmp_path / "i.nii.gz"))[0].dtype == np.int16
    assert read_label(write_sitk(np.array([[[-1, 0]]], np.int32), tmp_path / "n.nii.gz"))[0].dtype == np.int16
    gray_as_rgb = np.repeat(np.array([[0, 1], [1, 1]], np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(gray_as_rgb, mode="RGB").save(tmp_path / "rgb.png")
    assert read_label(tmp_path / "rgb.png")[0].tolist() == [[[0, 1], [1, 1]]]


def test_non_integer_label_values_are_named(tmp_path):
    path = write_sitk(np.array([[[0.0, 0.5, 1.0, np.nan]]], np.float32), tmp_path / "soft.mha")
    with pytest.raises(ImageFileError, match=r"soft.mha: has 2 non-integer label values \(e.g. 0.5, nan\)"):
        read_label(path)


def test_colour_label_is_refused(tmp_path):
    colours = np.random.default_rng(0).integers(0, 3, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(colours, mode="RGB").save(tmp_path / "c.png")
    with pytest.raises(ImageFileError, match="differing colour channels"):
        read_label(tmp_path / "c.png")


def test_4d_nifti_is_refused_naming_the_file(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), tmp_path / "t_0000.nii.gz")
    with pytest.raises(ImageFileError, match=r"t_0000.nii.gz: is a 4D image .* split"):
        read_image([tmp_path / "t_0000.nii.gz"])
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.uint8), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(ImageFileError, match=r"t.nii.gz: is a 4D image .* a label file holds one volume") as info:
        read_label(tmp_path / "t.nii.gz")
    assert "_0000" not in str(info.value)  # the channel-file fix is for images


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".png"])
def test_truncated_file_is_an_input_error(oblique_case, dataset_2d, tmp_path, ending):
    source = tmp_path / f"full{ending}"
    if ending == ".png":
        source.write_bytes((dataset_2d / "imagesTr" / "img_000_0000.png").read_bytes())
    else:
        sitk.WriteImage(sitk.ReadImage(str(oblique_case[0])), str(source), useCompression=True)
    data = source.read_bytes()
    broken = tmp_path / f"broken{ending}"
    broken.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(ImageFileError, match=r"broken\S*: (is truncated|cannot be read as an image)") as info:
        read_image([broken])
    assert info.value.path == broken


def test_padded_gzip_nifti_is_not_mistaken_for_truncated(oblique_case, tmp_path):
    """A .nii.gz of two gzip members (as concatenating tools write) has a trailer that does not match."""
    raw = gzip.decompress(oblique_case[0].read_bytes())
    path = tmp_path / "two_members.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    image, _ = read_image([path])
    np.testing.assert_array_equal(image, read_image([oblique_case[0]])[0])


def test_not_an_image_unsupported_and_missing(tmp_path):
    (tmp_path / "notes_0000.nii.gz").write_text("not an image")
    with pytest.raises(ImageFileError, match=r"notes_0000.nii.gz: cannot be read as an image"):
        read_image([tmp_path / "notes_0000.nii.gz"])
    (tmp_path / "x.dcm").write_bytes(b"")
    with pytest.raises(InputError, match=r"x.dcm: has an unsupported file ending; satnet reads .nii.gz"):
        read_image([tmp_path / "x.dcm"])
    with pytest.raises(MissingFileError, match="absent.nrrd"):
        read_label(tmp_path / "absent.nrrd")


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".png"])
def test_unreadable_file_is_named_with_the_permission_fix(tmp_path, ending):
    # Before: "cannot be read as an image (... does not exist.); the file is corrupt, truncated or not an image:
    # export it again" (NRRD; NIfTI and PNG alike).
    if ending == ".png":
        Image.fromarray(np.ones((4, 5), np.uint8)).save(tmp_path / "locked.png")
    else:
        write_sitk(np.ones((2, 3, 4), np.int16), tmp_path / f"locked{ending}")
    path = tmp_path / f"locked{ending}"
    remove_read_permission(path)
    with pytest.raises(ImageFileError, match=r"locked.*: cannot be opened \(permission denied\): give the user running "
                                             r"satnet read access to it \(e.g. chmod a\+r FILE\)"):
        read_image([path])


def test_symbolic_link_to_nothing_is_an_image_file_error(oblique_case, tmp_path):
    link = tmp_path / "case_0000.nii.gz"
    link.symlink_to(tmp_path / "moved_away.nii.gz")
    with pytest.raises(ImageFileError, match=r"case_0000.nii.gz: is a symbolic link to .*moved_away.nii.gz, which does "
                                             r"not exist: point the link at the file or put the file in its place"):
        read_image([link])
    (tmp_path / "moved_away.nii.gz").write_bytes(oblique_case[0].read_bytes())
    assert read_image([link])[0].shape == (1, 16, 20, 24)


def test_multi_page_tiff_is_refused(tmp_path):
    pages = [Image.fromarray(np.full((3, 3), i, np.uint8)) for i in range(2)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageFileError, match="holds 2 frames"):
        read_image([tmp_path / "stack.tif"])


def test_sheared_nifti_falls_back_to_nibabel_and_round_trips(tmp_path):
    affine = np.array([[1.0, 0.3, 0, 5], [0, 1, 0, 6], [0, 0, 2, 7], [0, 0, 0, 1]])
    source = nib.Nifti1Image(np.arange(120, dtype=np.int16).reshape(4, 5, 6), affine)
    source.set_sform(affine, code=1)
    source.set_qform(None, code=0)
    nib.save(source, tmp_path / "shear.nii.gz")
    with pytest.raises(RuntimeError, match="orthonormal"):  # the reason for the fallback
        sitk.ReadImage(str(tmp_path / "shear.nii.gz"))
    image, geometry = read_image([tmp_path / "shear.nii.gz"])
    assert image.shape == (1, 6, 5, 4) and image[0, 1, 2, 3] == source.get_fdata()[3, 2, 1]
    np.testing.assert_allclose(geometry.spacing, [2.0, np.hypot(1.0, 0.3), 1.0])
    write_segmentation(np.ones(geometry.shape, np.uint8), geometry, tmp_path / "seg.nii.gz")
    assert read_label(tmp_path / "seg.nii.gz")[1] == geometry
    np.testing.assert_allclose(nib.load(tmp_path / "seg.nii.gz").affine, affine)


def test_write_segmentation_refuses_jpeg_wrong_shape_and_3d_png(oblique_case, dataset_2d, tmp_path):
    _, geometry = read_image([oblique_case[0]])
    seg = np.zeros(geometry.shape, np.uint8)
    with pytest.raises(InputError, match="lossy"):
        write_segmentation(seg[:1], geometry, tmp_path / "s.jpg")
    with pytest.raises(ValueError, match="does not match"):
        write_segmentation(seg[:1], geometry, tmp_path / "s.nii.gz")
    with pytest.raises(InputError, match="holds 2D images only"):
        write_segmentation(seg, geometry, tmp_path / "s.png")
    assert list(tmp_path.iterdir()) == []


def test_geometry_mismatch_tolerances():
    g = ImageGeometry([4, 5, 6], [3.0, 1.0, 0.5], [10.0, -20.0, 30.0], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])

    def changed(**kw):
        return ImageGeometry(**{**g.to_dict(), **kw})

    assert geometry_mismatch(g, changed(spacing=[3.002, 1.0, 0.5])) is None  # within 1e-3 relative
    assert "spacing" in geometry_mismatch(g, changed(spacing=[3.01, 1.0, 0.5]))
    assert geometry_mismatch(g, changed(origin=[10.0004, -20.0, 30.0])) is None  # within 1e-3 * 0.5 mm
    assert "origin" in geometry_mismatch(g, changed(origin=[10.001, -20.0, 30.0]))
    assert "direction" in geometry_mismatch(g, changed(direction=[1.0, 0.002, 0, 0, 1.0, 0, 0, 0, 1.0]))
    assert "shape" in geometry_mismatch(g, changed(shape=[4, 5, 7]))
    assert "2D file" in geometry_mismatch(g, changed(spatial_dims_in_file=2))


def test_vector_pixels_become_channels(tmp_path):
    vector = sitk.GetImageFromArray(np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "v.nrrd"))
    image, geometry = read_image([tmp_path / "v.nrrd"])
    assert image.shape == (2, 2, 3, 4) and geometry.shape == [2, 3, 4]
    assert image[1, 0, 0, 0] == 1.0 and image[0, 0, 0, 1] == 2.0
    with pytest.raises(ImageFileError, match="has 2 channels; a label must have one channel"):
        read_label(tmp_path / "v.nrrd")
