"""segqc.io.images against independent readers (nibabel, SimpleITK used directly)."""

from __future__ import annotations

import gzip
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segqc.errors import GeometryMismatchError, InputError
from segqc.io import (
    Geometry,
    Image,
    check_same_geometry,
    read_image,
    read_label_map,
    resample_nearest,
    write_image,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture
def oblique_geometry() -> Geometry:
    """An anisotropic, rotated and flipped grid: nothing in it is the identity."""
    direction = _rotation_z(20.0) @ np.diag([1.0, -1.0, 1.0])
    return Geometry(
        shape=(5, 6, 7),
        spacing=(0.8, 1.2, 2.5),
        origin=(10.0, -20.0, 30.0),
        direction=tuple(direction.ravel()),
    )


@pytest.fixture
def labels_567() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, size=(5, 6, 7), dtype=np.uint8)


def _no_temp_files(folder: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in folder.iterdir())


# ------------------------------------------------------------------------------------------
# Axis order and affine against nibabel
# ------------------------------------------------------------------------------------------


def test_nifti_written_by_segqc_matches_nibabel_axis_order_and_ras_affine(
    tmp_path, oblique_geometry, labels_567
):
    path = write_image(tmp_path / "case.nii.gz", labels_567, oblique_geometry)
    ref = nib.load(path)
    assert ref.shape == labels_567.shape
    np.testing.assert_array_equal(np.asarray(ref.dataobj), labels_567)
    np.testing.assert_allclose(ref.affine, LPS_TO_RAS @ oblique_geometry.affine(), atol=1e-5)
    assert "".join(nib.aff2axcodes(ref.affine)) == oblique_geometry.orientation()


def test_nifti_written_by_nibabel_reads_with_same_values_and_affine(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)
    ras_affine = np.array(
        [[0.0, 0.0, -3.0, 12.0], [-1.5, 0.0, 0.0, 4.0], [0.0, 2.0, 0.0, -7.0], [0, 0, 0, 1]]
    )
    nib.save(nib.Nifti1Image(data, ras_affine), tmp_path / "x.nii.gz")

    image = read_image(tmp_path / "x.nii.gz")
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, data)
    np.testing.assert_allclose(LPS_TO_RAS @ image.geometry.affine(), ras_affine, atol=1e-5)
    np.testing.assert_allclose(image.geometry.spacing, (1.5, 2.0, 3.0), rtol=1e-6)
    assert image.geometry.orientation() == "".join(nib.aff2axcodes(ras_affine))
    assert image.path == tmp_path / "x.nii.gz"


def test_2d_nifti_gives_2d_array(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    nib.save(nib.Nifti1Image(data, np.diag([-0.5, -0.25, 1.0, 1.0])), tmp_path / "s.nii")
    image = read_label_map(tmp_path / "s.nii")
    assert image.array.shape == (3, 4) == image.geometry.shape
    np.testing.assert_array_equal(image.array, data)
    np.testing.assert_allclose(image.geometry.spacing, (0.5, 0.25))
    assert image.geometry.orientation() == "LP"


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_3d_round_trip_keeps_values_dtype_and_geometry(tmp_path, ending, dtype, oblique_geometry):
    rng = np.random.default_rng(2)
    array = (rng.random(oblique_geometry.shape) * 300).astype(dtype)
    path = write_image(tmp_path / f"case{ending}", array, oblique_geometry)
    assert path == tmp_path / f"case{ending}"

    image = read_image(path, dtype=None)
    assert image.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image.array, array)
    got = image.geometry
    assert got.shape == oblique_geometry.shape
    np.testing.assert_allclose(got.spacing, oblique_geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(got.origin, oblique_geometry.origin, atol=1e-4)
    np.testing.assert_allclose(got.direction, oblique_geometry.direction, atol=1e-6)
    assert _no_temp_files(tmp_path)
    # the same voxels through SimpleITK directly: (z, y, x) order there
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), array.T)


@pytest.mark.parametrize("dtype", [">u2", ">i4", ">f8"])
def test_big_endian_arrays_are_written_with_their_values(tmp_path, dtype, oblique_geometry):
    """Once: a big-endian array (as nibabel gives for a big-endian file) was refused with "cannot
    store pixel type >u2"; it is written in native byte order, values and kind kept."""
    array = np.arange(np.prod(oblique_geometry.shape)).reshape(oblique_geometry.shape).astype(dtype)
    image = read_image(write_image(tmp_path / "big.nii.gz", array, oblique_geometry), dtype=None)
    np.testing.assert_array_equal(image.array, array)
    assert image.array.dtype == np.dtype(dtype).newbyteorder("=")


@pytest.mark.parametrize("ending", [".png", ".tif"])
def test_2d_round_trip_png_tif(tmp_path, ending):
    array = np.arange(35, dtype=np.uint8).reshape(5, 7)
    write_image(tmp_path / f"slice{ending}", array, Geometry.from_shape(array.shape))
    image = read_label_map(tmp_path / f"slice{ending}")
    assert image.array.shape == (5, 7)
    np.testing.assert_array_equal(image.array, array)
    assert image.geometry == Geometry.from_shape((5, 7))
    # SimpleITK's (row, column) array is our transpose: array axis 0 is image x (columns)
    assert sitk.ReadImage(str(tmp_path / f"slice{ending}")).GetSize() == (5, 7)


def test_bool_is_written_as_uint8(tmp_path, oblique_geometry):
    mask = np.zeros(oblique_geometry.shape, dtype=bool)
    mask[1:3, 2:4, 3:5] = True
    write_image(tmp_path / "m.nii.gz", mask, oblique_geometry)
    assert nib.load(tmp_path / "m.nii.gz").get_data_dtype() == np.uint8
    image = read_image(tmp_path / "m.nii.gz", dtype=None)
    assert image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, mask)


def test_uncompressed_nifti_written_as_plain_nii(tmp_path, labels_567):
    geometry = Geometry.from_shape(labels_567.shape)
    path = write_image(tmp_path / "a.nii", labels_567, geometry, compress=True)
    with open(path, "rb") as f:
        assert f.read(2) != b"\x1f\x8b"  # not gzip: the ending decides
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), labels_567)


def test_write_creates_parent_folders_and_overwrites(tmp_path, labels_567):
    geometry = Geometry.from_shape(labels_567.shape, spacing=(1.0, 1.0, 2.0))
    target = tmp_path / "a" / "b" / "case.nii.gz"
    write_image(target, labels_567, geometry)
    write_image(target, labels_567 + 1, geometry)
    np.testing.assert_array_equal(read_label_map(target).array, labels_567 + 1)
    assert sorted(p.name for p in target.parent.iterdir()) == ["case.nii.gz"]


def test_write_goes_through_temporary_file_with_same_ending(tmp_path, labels_567, monkeypatch):
    seen: list[str] = []
    real_write = sitk.WriteImage

    def spy(image, name, *args, **kwargs):
        seen.append(name)
        assert not (tmp_path / "case.nii.gz").exists()  # final name appears only at the end
        return real_write(image, name, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", spy)
    write_image(tmp_path / "case.nii.gz", labels_567, Geometry.from_shape(labels_567.shape))
    (name,) = seen
    assert Path(name).parent == tmp_path
    assert Path(name).name.startswith(".tmp-") and name.endswith("-case.nii.gz")
    assert (tmp_path / "case.nii.gz").exists() and _no_temp_files(tmp_path)


def test_failed_write_leaves_no_files_and_names_target(tmp_path):
    data = np.linspace(0, 1, 12, dtype=np.float64).reshape(3, 4)  # PNG cannot hold float64
    with pytest.raises(InputError, match="bad.png"):
        write_image(tmp_path / "bad.png", data, Geometry.from_shape(data.shape))
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_shape_not_matching_geometry(tmp_path, labels_567):
    with pytest.raises(InputError, match="does not match geometry shape"):
        write_image(tmp_path / "x.nii.gz", labels_567, Geometry.from_shape((5, 6, 8)))


def test_write_rejects_unknown_extension(tmp_path, labels_567):
    with pytest.raises(InputError, match=r"x\.npy: unsupported file type '\.npy'"):
        write_image(tmp_path / "x.npy", labels_567, Geometry.from_shape(labels_567.shape))


# ------------------------------------------------------------------------------------------
# Bad files: one line naming the file
# ------------------------------------------------------------------------------------------


def _assert_one_line_naming(exc: pytest.ExceptionInfo, name: str, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert name in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "nope.nii.gz")
    _assert_one_line_naming(exc, "nope.nii.gz", "file not found")


def test_unknown_extension(tmp_path):
    (tmp_path / "case.dcm").write_bytes(b"x")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "case.dcm")
    _assert_one_line_naming(exc, "case.dcm", "unsupported file type")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file_is_rejected(tmp_path, ending):
    rng = np.random.default_rng(3)
    array = rng.normal(size=(16, 16, 16)).astype(np.float32)  # incompressible: cut hits data
    path = write_image(tmp_path / f"full{ending}", array, Geometry.from_shape(array.shape))
    data = path.read_bytes()
    cut = tmp_path / f"cut{ending}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_image(cut)
    _assert_one_line_naming(exc, f"cut{ending}", "cannot read image")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".png"])
def test_random_bytes_are_rejected(tmp_path, ending):
    path = tmp_path / f"noise{ending}"
    path.write_bytes(np.random.default_rng(4).bytes(2000))
    with pytest.raises(InputError) as exc:
        read_label_map(path)
    _assert_one_line_naming(exc, f"noise{ending}", "cannot read image")


def test_empty_file_is_rejected(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "empty.nii.gz")
    _assert_one_line_naming(exc, "empty.nii.gz", "cannot read image")


def test_4d_image_is_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "t.nii")
    _assert_one_line_naming(exc, "t.nii", "expected a 2D or 3D image")


def test_rgb_png_is_rejected(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.png"))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "rgb.png")
    _assert_one_line_naming(exc, "rgb.png", "3 components")


def _png_bytes(pixels: np.ndarray, colour_type: int) -> bytes:
    """A minimal 8-bit PNG of ``pixels`` (H, W, channels), written here byte by byte."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(np.uint8).tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_grey_and_alpha_png_is_rejected_for_its_two_channels(tmp_path):
    """Once: a valid grey + alpha PNG was called `corrupt or truncated PNG file: Unknown PixelType`."""
    grey = np.zeros((5, 4), np.uint8)
    grey[1:3, 1:3] = 1
    path = tmp_path / "la.png"
    path.write_bytes(_png_bytes(np.stack([grey, np.full_like(grey, 255)], axis=-1), colour_type=4))
    plain = tmp_path / "grey.png"
    plain.write_bytes(_png_bytes(grey[..., None], colour_type=0))
    assert read_label_map(plain).array.sum() == 4  # the encoder above writes PNGs ITK reads
    with pytest.raises(InputError) as exc:
        read_label_map(path)
    _assert_one_line_naming(exc, "la.png", "2 components")
    assert "corrupt" not in str(exc.value)


def test_palette_png_label_map_is_read_as_its_indices(tmp_path):
    """Once: a palette PNG label map (the usual VOC-style format) was refused as "3 components per
    voxel", as ITK expands it to colours. Written by Pillow, with colours unlike the indices."""
    from PIL import Image as PILImage

    indices = np.zeros((6, 7), np.uint8)
    indices[1:3, 2:5] = 1
    indices[4, 1:6] = 3
    picture = PILImage.fromarray(indices, mode="P")
    picture.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))
    picture.save(tmp_path / "voc.png")
    PILImage.fromarray(indices, mode="L").save(tmp_path / "grey.png")
    assert (tmp_path / "voc.png").read_bytes()[25] == 3  # colour type: palette
    label_map = read_label_map(tmp_path / "voc.png")
    np.testing.assert_array_equal(label_map.array, indices.T)  # ITK index order: x first
    np.testing.assert_array_equal(label_map.array, read_label_map(tmp_path / "grey.png").array)
    assert label_map.array.dtype == np.uint8 and not label_map.spacing_known
    assert read_label_map(tmp_path / "voc.png", spacing=(0.5, 0.25)).geometry.spacing == (0.5, 0.25)
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "voc.png")  # as an image, a palette of colours holds no intensities
    _assert_one_line_naming(exc, "voc.png", "palette PNG with colours")


def test_grey_palette_png_image_is_read_as_its_grey_levels(tmp_path):
    """A palette whose entries are grey (R = G = B) stands for grey levels: index i is read as
    level 255 - i here, as Pillow's own conversion to grey says."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    picture = PILImage.fromarray(rng.integers(0, 256, (9, 11)).astype(np.uint8), mode="P")
    picture.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    picture.save(tmp_path / "grey_palette.png")
    image = read_image(tmp_path / "grey_palette.png", dtype=None)
    expected = np.array(PILImage.open(tmp_path / "grey_palette.png").convert("L"))
    np.testing.assert_array_equal(image.array, expected.T)
    assert not image.spacing_known


def test_real_bubil_palette_image_reads_as_pillows_grey(shared_data):
    """BU-BIL's B02 image is the one palette PNG of the shared data (a grey palette)."""
    from PIL import Image as PILImage

    path = shared_data("bubil") / "BU-BIL_Dataset1" / "B02" / "image.png"
    assert path.read_bytes()[25] == 3
    expected = np.array(PILImage.open(path).convert("L"))
    np.testing.assert_array_equal(read_image(path, dtype=None).array, expected.T)


@pytest.mark.parametrize(("ending", "compress", "keep"), [
    (".mha", False, lambda n: n - 1000), (".mha", True, lambda n: n // 2), (".mhd", False, lambda n: n // 2),
    (".nrrd", True, lambda n: n // 2)])
def test_a_truncated_file_prints_nothing_but_the_error(tmp_path, capfd, ending, compress, keep):
    """Once: truncated MetaImage files printed 2-4 raw ITK lines to stderr before the error line
    (a detached .mhd: its cut data file)."""
    array = np.zeros((20, 20, 8), np.uint8)
    array[5:15, 5:15, 2:6] = 1
    full = tmp_path / "full" / f"x{ending}"
    full.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(array), str(full), useCompression=compress)
    cut = tmp_path / "cut" / full.name
    cut.parent.mkdir()
    for path in full.parent.iterdir():  # the header and, for .mhd, its data file
        data = path.read_bytes()
        (cut.parent / path.name).write_bytes(data if path.suffix == ".mhd" else data[: keep(len(data))])
    capfd.readouterr()
    with pytest.raises(InputError) as exc:
        read_label_map(cut)
    _assert_one_line_naming(exc, str(cut), "cannot read image")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert read_label_map(full).array.sum() == array.sum()  # whole files still read
    assert capfd.readouterr().err == ""


def test_what_a_successful_read_prints_is_passed_on_and_a_failed_one_dropped(capfd):
    from segqc.io.images import _itk_output_held

    with _itk_output_held(".mha"):
        os.write(2, b"kept\n")
    with pytest.raises(RuntimeError), _itk_output_held(".mha"):
        os.write(2, b"dropped\n")
        raise RuntimeError("read failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept\nafter\n"


# ------------------------------------------------------------------------------------------
# Corrupt .nii.gz: the gzip CRC and length trailers are verified
# ------------------------------------------------------------------------------------------


def _labels_volume() -> np.ndarray:
    """Large enough that ITK stops reading before the gzip trailer (it then checks no CRC)."""
    rng = np.random.default_rng(11)
    return (rng.random((128, 128, 64)) * 3).astype(np.uint8)


def _nifti_bytes(data: np.ndarray) -> bytes:
    return nib.Nifti1Image(data, np.eye(4)).to_bytes()


def test_nii_gz_with_flipped_crc_byte_is_rejected(tmp_path):
    data = _labels_volume()
    good = tmp_path / "good.nii.gz"
    good.write_bytes(gzip.compress(_nifti_bytes(data)))
    np.testing.assert_array_equal(read_label_map(good).array, data)  # the intact file reads
    corrupt = bytearray(good.read_bytes())
    corrupt[-8] ^= 0xFF  # first byte of the CRC-32 trailer (then 4 bytes of length)
    bad = tmp_path / "badcrc.nii.gz"
    bad.write_bytes(bytes(corrupt))
    for reader in (read_image, read_label_map):
        with pytest.raises(InputError) as exc:
            reader(bad)
        assert str(exc.value) == f"{bad}: cannot read image: corrupt .nii.gz file (CRC check failed)"


def test_nii_gz_with_changed_but_decodable_data_is_rejected(tmp_path):
    """Stored (level-0) deflate blocks: a flipped data byte keeps the stream decodable, only the
    CRC tells."""
    data = _labels_volume()
    stream = bytearray(gzip.compress(_nifti_bytes(data), compresslevel=0))
    stream[len(stream) // 2] ^= 0x01  # a voxel byte inside a stored block
    bad = tmp_path / "baddata.nii.gz"
    bad.write_bytes(bytes(stream))
    assert len(zlib.decompressobj(-15).decompress(bytes(stream[10:-8]))) == len(_nifti_bytes(data))
    with pytest.raises(InputError) as exc:
        read_image(bad)
    _assert_one_line_naming(exc, "baddata.nii.gz", "corrupt .nii.gz file (CRC check failed)")


def test_nii_gz_with_wrong_length_trailer_is_rejected(tmp_path):
    stream = bytearray(gzip.compress(_nifti_bytes(_labels_volume())))
    stream[-1] ^= 0x01  # ISIZE
    bad = tmp_path / "badlen.nii.gz"
    bad.write_bytes(bytes(stream))
    with pytest.raises(InputError) as exc:
        read_label_map(bad)
    _assert_one_line_naming(exc, "badlen.nii.gz", "corrupt .nii.gz file")


def test_multi_member_nii_gz_with_zero_padding_is_read(tmp_path):
    data = _labels_volume()
    raw = _nifti_bytes(data)
    cut = len(raw) // 3
    path = tmp_path / "members.nii.gz"
    members = gzip.compress(raw[:cut]) + gzip.compress(raw[cut:])
    assert gzip.decompress(members) == raw  # a valid (two-member) gzip stream
    path.write_bytes(members + b"\0" * 100)
    np.testing.assert_array_equal(read_label_map(path).array, data)


def test_crc_failure_of_the_second_member_is_rejected(tmp_path):
    raw = _nifti_bytes(_labels_volume())
    second = bytearray(gzip.compress(raw[1000:]))
    second[-5] ^= 0x10
    path = tmp_path / "member2.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + bytes(second))
    with pytest.raises(InputError, match=r"member2\.nii\.gz: cannot read image: corrupt \.nii\.gz file \(CRC"):
        read_image(path)


def test_member_after_zero_padding_is_rejected_as_itk_would_drop_it(tmp_path):
    """Python's gzip skips zero padding between members, but zlib's reader (ITK's) stops at the
    first byte that starts no member: the second member's voxels would silently read as 0."""
    data = _labels_volume()
    raw = _nifti_bytes(data)
    path = tmp_path / "padded.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + b"\0" * 4 + gzip.compress(raw[1000:]))
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T
    assert itk.shape == data.shape and not np.array_equal(itk, data)  # what ITK alone gives
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_one_line_naming(exc, "padded.nii.gz", "corrupt .nii.gz file (unexpected data after the compressed stream)")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(raw) + b"junk")
    with pytest.raises(InputError, match="garbage.nii.gz: cannot read image: corrupt .nii.gz file"):
        read_image(garbage)


@pytest.mark.parametrize(("read_size", "out_size"), [(1, 1), (3, 5), (4096, 700)])
def test_gzip_check_is_independent_of_chunk_sizes(tmp_path, monkeypatch, read_size, out_size):
    """Member and trailer boundaries falling anywhere in a chunk (the chunk sizes are private)."""
    from segqc.io import nifti_files

    monkeypatch.setattr(nifti_files, "_GZIP_READ", read_size)
    monkeypatch.setattr(nifti_files, "_GZIP_OUT", out_size)
    data = np.zeros((12, 10, 8), np.uint8)
    data[3:7, 2:5, 1:6] = 2
    raw = _nifti_bytes(data)
    good = tmp_path / "good.nii.gz"
    good.write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:]) + b"\0" * 3)
    np.testing.assert_array_equal(read_label_map(good).array, data)
    stream = bytearray(gzip.compress(raw))
    stream[-6] ^= 0x04
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(stream))
    with pytest.raises(InputError,
                       match=r"bad\.nii\.gz: cannot read image: corrupt \.nii\.gz file \(CRC check failed\)"):
        read_label_map(bad)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw)[:-3])
    with pytest.raises(InputError, match=r"cut\.nii\.gz: cannot read image: truncated \.nii\.gz file"):
        read_label_map(cut)


# ------------------------------------------------------------------------------------------
# Exactly the named file: CASE.nii.gz next to CASE.nii
# ------------------------------------------------------------------------------------------


def test_nii_gz_and_nii_siblings_are_each_read_from_their_own_file(tmp_path, monkeypatch):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    folder = tmp_path / "data"
    folder.mkdir()
    compressed = np.full((6, 5, 4), 1, np.uint8)
    compressed[0, 0, 0] = 7
    plain = np.full((6, 5, 4), 2, np.uint8)
    nib.save(nib.Nifti1Image(compressed, np.diag([-2.0, -2.0, 2.0, 1.0])), folder / "x.nii.gz")
    nib.save(nib.Nifti1Image(plain, np.diag([-3.0, -3.0, 3.0, 1.0])), folder / "x.nii")
    # the defect: ITK itself reads x.nii when asked for x.nii.gz
    assert np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "x.nii.gz")))).tolist() == [2]

    for reader in (read_label_map, read_image):
        got = reader(folder / "x.nii.gz")
        np.testing.assert_array_equal(got.array, compressed)
        np.testing.assert_allclose(got.geometry.spacing, (2.0, 2.0, 2.0))
        assert got.path == folder / "x.nii.gz"
        got = reader(folder / "x.nii")
        np.testing.assert_array_equal(got.array, plain)
        np.testing.assert_allclose(got.geometry.spacing, (3.0, 3.0, 3.0))
    assert list(private_tmp.iterdir()) == []  # temporary aliases are removed
    assert sorted(p.name for p in folder.iterdir()) == ["x.nii", "x.nii.gz"]


def test_errors_of_a_sibling_read_name_the_requested_file(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "y.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), np.eye(4)), tmp_path / "y.nii")
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "y.nii.gz")
    assert str(exc.value).startswith(f"{tmp_path / 'y.nii.gz'}: expected a 2D or 3D image, got 4D")


# ------------------------------------------------------------------------------------------
# Spacing of PNG/TIFF: unknown unless given
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", [".png", ".tif", ".tiff"])
def test_png_tiff_spacing_is_marked_unknown_and_can_be_given(tmp_path, ending):
    array = np.arange(35, dtype=np.uint8).reshape(5, 7)
    path = write_image(tmp_path / f"slice{ending}", array, Geometry.from_shape(array.shape))
    for reader in (read_image, read_label_map):
        plain = reader(path)
        assert plain.spacing_known is False and plain.geometry.spacing == (1.0, 1.0)
        given = reader(path, spacing=(0.5, 0.25))
        assert given.spacing_known is True
        assert given.geometry == Geometry.from_shape((5, 7), spacing=(0.5, 0.25))
        np.testing.assert_array_equal(given.array, array)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_files_with_spacing_have_known_spacing_and_refuse_a_different_override(tmp_path, ending):
    geometry = Geometry.from_shape((3, 4, 5), spacing=(0.8, 0.9, 2.5))
    path = write_image(tmp_path / f"v{ending}", np.zeros((3, 4, 5), np.uint8), geometry)
    assert read_label_map(path).spacing_known is True
    assert read_image(path, spacing=(0.8, 0.9, 2.5)).geometry.spacing == pytest.approx((0.8, 0.9, 2.5))
    with pytest.raises(InputError) as exc:
        read_label_map(path, spacing=(1.0, 1.0, 1.0))
    _assert_one_line_naming(exc, f"v{ending}", "carries its own spacing (0.8, 0.9, 2.5) mm",
                            "a spacing override applies only to files without one")
    assert "--" not in str(exc.value)


@pytest.mark.parametrize(
    ("spacing", "words"),
    [
        ((0.5,), "has 1 value(s); this 2D image needs 2"),
        ((0.5, 0.5, 0.5), "has 3 value(s); this 2D image needs 2"),
        ((0.5, 0.0), "must be positive and finite"),
        ((-1.0, 1.0), "must be positive and finite"),
        ((float("nan"), 1.0), "must be positive and finite"),
        ((float("inf"), 1.0), "must be positive and finite"),
        (0.5, "is not a sequence of 2 numbers"),
        (("a", "b"), "is not a sequence of 2 numbers"),
    ],
)
def test_invalid_spacing_override_is_one_line_naming_the_file(tmp_path, spacing, words):
    path = write_image(tmp_path / "s.png", np.zeros((4, 6), np.uint8), Geometry.from_shape((4, 6)))
    with pytest.raises(InputError) as exc:
        read_image(path, spacing=spacing)
    _assert_one_line_naming(exc, "s.png", words)


def test_real_bubil_png_has_unknown_spacing_and_hc18_nifti_known(shared_data):
    bubil = shared_data("bubil/BU-BIL_Dataset1")
    hc18 = shared_data("hc18/labelsTr")
    gold = read_label_map(min(bubil.glob("*/gold.png")))
    assert gold.spacing_known is False and gold.geometry.spacing == (1.0, 1.0)
    label_path = min(hc18.glob("*.nii.gz"))
    label = read_label_map(label_path)
    assert label.spacing_known is True
    np.testing.assert_allclose(label.geometry.spacing, nib.load(label_path).header.get_zooms(), rtol=1e-6)


@pytest.mark.parametrize(("name", "bad", "word"), [("nan.nii.gz", np.nan, "NaN"), ("inf.nii.gz", np.inf, "infinite"),
                                               ("nan.nrrd", np.nan, "NaN")])
def test_an_image_that_must_be_finite_is_refused_for_nan_or_infinite_voxels(tmp_path, name, bad, word):
    """ITK reads a NIfTI's NaN voxels as 0: without ``finite`` the image reads as zeros there."""
    data = np.ones((3, 4, 5), np.float32)
    data[1, 2, 3] = bad
    path = tmp_path / name
    if name.endswith(".nii.gz"):
        nib.save(nib.Nifti1Image(np.transpose(data), np.eye(4)), path)
    else:
        write_image(path, data, Geometry.from_shape(data.shape))
    with pytest.raises(InputError) as exc:
        read_image(path, finite=True)
    _assert_one_line_naming(exc, name, f"contains {word} voxels")
    clean = tmp_path / f"clean_{name}"
    data[1, 2, 3] = 1.0
    write_image(clean, data, Geometry.from_shape(data.shape))
    np.testing.assert_array_equal(read_image(clean, finite=True).array, data)


# ------------------------------------------------------------------------------------------
# Label maps
# ------------------------------------------------------------------------------------------


def _save_nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_label_map_with_nan_is_rejected(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    with pytest.raises(InputError) as exc:
        read_label_map(_save_nifti(tmp_path / "nan.nii.gz", data))
    _assert_one_line_naming(exc, "nan.nii.gz", "contains NaN values")


def test_label_map_with_nan_in_nrrd_is_rejected(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    write_image(tmp_path / "nan.nrrd", data, Geometry.from_shape(data.shape))
    with pytest.raises(InputError, match=r"nan\.nrrd: contains NaN values"):
        read_label_map(tmp_path / "nan.nrrd")


def test_label_map_with_inf_is_rejected(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    data[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="infinite"):
        read_label_map(_save_nifti(tmp_path / "inf.nii.gz", data))


def test_label_map_with_fractional_values_is_rejected(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    data[2, 1, 0] = 1.5
    with pytest.raises(InputError) as exc:
        read_label_map(_save_nifti(tmp_path / "frac.nii.gz", data))
    _assert_one_line_naming(exc, "frac.nii.gz", "non-integer label values, e.g. 1.5")


def test_label_map_with_negative_values_is_rejected(tmp_path):
    data = np.zeros((3, 3, 3), np.int16)
    data[0, 1, 2] = -1
    with pytest.raises(InputError) as exc:
        read_label_map(_save_nifti(tmp_path / "neg.nii.gz", data))
    _assert_one_line_naming(exc, "neg.nii.gz", "negative label values")


def test_integral_float_labels_are_accepted_and_cast(tmp_path):
    data = np.zeros((3, 4, 5), np.float64)
    data[1, 2, 3] = 3.0
    image = read_label_map(_save_nifti(tmp_path / "f.nii.gz", data))
    assert image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, data)


@pytest.mark.parametrize(
    ("largest", "dtype"), [(255, np.uint8), (256, np.uint16), (65535, np.uint16), (70000, np.uint32)]
)
def test_label_dtype_is_smallest_unsigned_type(tmp_path, largest, dtype):
    data = np.zeros((2, 3, 4), np.int32)
    data[1, 2, 3] = largest
    image = read_label_map(_save_nifti(tmp_path / "l.nii.gz", data))
    assert image.array.dtype == dtype
    assert image.array[1, 2, 3] == largest


# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------


def test_geometry_json_round_trip(oblique_geometry):
    text = json.dumps(oblique_geometry.to_dict())
    assert Geometry.from_dict(json.loads(text)) == oblique_geometry


def test_geometry_from_malformed_dict():
    with pytest.raises(InputError, match="malformed geometry"):
        Geometry.from_dict({"shape": [2, 2], "spacing": [1.0]})


def test_voxel_volume_in_ml():
    assert Geometry.from_shape((2, 2, 2), spacing=(1.5625, 1.5625, 10.0)).voxel_volume_ml() == (
        pytest.approx(1.5625 * 1.5625 * 10 / 1000)
    )


def test_affine_maps_index_to_lps_position_like_simpleitk(oblique_geometry):
    image = sitk.Image(list(oblique_geometry.shape), sitk.sitkUInt8)
    image.SetSpacing(oblique_geometry.spacing)
    image.SetOrigin(oblique_geometry.origin)
    image.SetDirection(oblique_geometry.direction)
    index = (3, 1, 4)
    expected = image.TransformIndexToPhysicalPoint(index)
    np.testing.assert_allclose((oblique_geometry.affine() @ (*index, 1))[:3], expected)


@pytest.mark.parametrize("seed", range(8))
def test_orientation_codes_agree_with_nibabel_and_simpleitk(seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    permutation = np.eye(3)[rng.permutation(3)] * rng.choice([-1.0, 1.0], size=3)
    direction = permutation @ (np.eye(3) + 0.2 * (q - np.eye(3)))  # near an axis permutation
    direction, _ = np.linalg.qr(direction)
    geometry = Geometry((2, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(direction.ravel()))
    nib_codes = "".join(nib.aff2axcodes(LPS_TO_RAS @ geometry.affine()))
    assert geometry.orientation() == nib_codes
    assert geometry.orientation() == sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
        geometry.direction
    )


def test_orientation_examples():
    assert Geometry.from_shape((2, 2, 2)).orientation() == "LPS"
    ras = Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert ras.orientation() == "RAS"
    assert Geometry.from_shape((4, 4)).orientation() == "LP"


# ------------------------------------------------------------------------------------------
# Geometry checks
# ------------------------------------------------------------------------------------------


def test_same_geometry_passes_within_tolerances():
    gt = Geometry.from_shape((4, 5, 6), spacing=(1.0, 1.0, 2.5))
    pred = Geometry.from_shape((4, 5, 6), spacing=(1.0, 1.0, 2.5 * (1 + 1e-4)), origin=(0.005, 0, 0))
    check_same_geometry(pred, gt)  # origin within the default 1e-2 * 1 mm


def test_spacing_mismatch_message_names_prediction_and_both_values_without_cli_hint():
    gt = Geometry.from_shape((4, 5, 6), spacing=(1.0, 1.0, 2.5))
    pred = Geometry.from_shape((4, 5, 6), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred, gt, pred_path="pred/case1.nii.gz", gt_path="gt/case1.nii.gz")
    assert str(exc.value) == (
        "pred/case1.nii.gz: spacing (1.0, 1.0, 2.0) mm differs from ground truth "
        "gt/case1.nii.gz (1.0, 1.0, 2.5) mm"
    )
    assert exc.value.path == Path("pred/case1.nii.gz")


def test_shape_mismatch_is_detected():
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(
            Geometry.from_shape((4, 5, 6)), Geometry.from_shape((4, 5, 7)), pred_path="p.nii.gz"
        )
    _assert_one_line_naming(exc, "p.nii.gz", "shape (4, 5, 6)", "(4, 5, 7)")
    assert "--resample" not in str(exc.value)


def test_flipped_axis_is_detected_with_orientation_codes():
    gt = Geometry.from_shape((4, 5, 6))
    pred = Geometry((4, 5, 6), (1, 1, 1), (0, 0, 0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred, gt, pred_path="p.nii.gz", gt_path="g.nii.gz")
    _assert_one_line_naming(exc, "p.nii.gz", "orientation RPS", "g.nii.gz LPS")


def test_several_differences_are_reported_together():
    gt = Geometry.from_shape((4, 5, 6), spacing=(1.0, 1.0, 2.5))
    pred = Geometry.from_shape((4, 5, 8), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred, gt, pred_path="p.nii.gz")
    _assert_one_line_naming(exc, "p.nii.gz", "shape (4, 5, 8), spacing (1.0, 1.0, 2.0) mm differ")


def test_dimensionality_mismatch():
    with pytest.raises(GeometryMismatchError, match="2D prediction"):
        check_same_geometry(Geometry.from_shape((4, 5)), Geometry.from_shape((4, 5, 1)))


# ------------------------------------------------------------------------------------------
# Resampling
# ------------------------------------------------------------------------------------------


def test_resample_to_half_spacing_reproduces_labels_at_coinciding_centres(oblique_geometry):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, size=oblique_geometry.shape).astype(np.uint16)
    fine = Geometry(
        shape=tuple(2 * s - 1 for s in oblique_geometry.shape),
        spacing=tuple(s / 2 for s in oblique_geometry.spacing),
        origin=oblique_geometry.origin,
        direction=oblique_geometry.direction,
    )
    out = resample_nearest(Image(labels, oblique_geometry, Path("p.nii.gz")), fine)
    assert out.geometry == fine and out.array.shape == fine.shape
    assert out.array.dtype == np.uint16
    np.testing.assert_array_equal(out.array[::2, ::2, ::2], labels)
    assert set(np.unique(out.array)) <= set(np.unique(labels))


def test_resample_onto_flipped_grid_flips_array():
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    geometry = Geometry.from_shape(labels.shape)
    flipped = Geometry(labels.shape, (1, 1, 1), (1.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    out = resample_nearest(Image(labels, geometry), flipped)
    np.testing.assert_array_equal(out.array, labels[::-1])


def test_resample_outside_fills_background_and_keeps_bool():
    mask = np.ones((3, 3, 3), dtype=bool)
    shifted = Geometry.from_shape((3, 3, 3), origin=(2.0, 0.0, 0.0))
    out = resample_nearest(Image(mask, Geometry.from_shape((3, 3, 3))), shifted)
    assert out.array.dtype == bool
    np.testing.assert_array_equal(out.array[0], True)
    np.testing.assert_array_equal(out.array[1:], False)


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


def test_real_acdc_label_map_matches_nibabel(shared_data):
    labels_dir = shared_data("acdc/labelsTr")
    path = sorted(labels_dir.glob("*.nii.gz"))[0]
    image = read_label_map(path)
    ref = nib.load(path)
    assert image.array.shape == ref.shape
    np.testing.assert_array_equal(image.array, np.asarray(ref.dataobj))
    assert image.array.dtype == np.uint8
    np.testing.assert_allclose(image.geometry.spacing, (1.5625, 1.5625, 10.0), rtol=1e-6)
    np.testing.assert_allclose(ref.header.get_zooms(), image.geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(LPS_TO_RAS @ image.geometry.affine(), ref.affine, atol=1e-4)
    assert set(np.unique(image.array)) <= {0, 1, 2, 3}
    assert os.fspath(image.path) == os.fspath(path)


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
@pytest.mark.parametrize("value", [0.0, float("nan")])
def test_a_zero_or_nan_spacing_in_the_header_is_refused_not_read_as_1_mm(tmp_path, ending, value):
    """ITK replaces a zero pixdim by 1 mm: `evaluate` reported an HD95 of 1.0 "mm" without a word.
    The file is written with nibabel and its header bytes edited (pixdim[3], no qform or sform)."""
    path = tmp_path / f"a{ending}"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), np.uint8), np.diag([0.8, 0.8, 2.0, 1.0])), tmp_path / "a.nii")
    raw = bytearray((tmp_path / "a.nii").read_bytes())
    struct.pack_into("<f", raw, 76 + 4 * 3, value)  # pixdim[3]
    struct.pack_into("<hh", raw, 252, 0, 0)  # qform_code, sform_code
    path.write_bytes(gzip.compress(bytes(raw)) if ending == ".nii.gz" else bytes(raw))
    with pytest.raises(InputError) as error:
        read_label_map(path)
    assert str(error.value).startswith(f"{path}: the header's voxel spacing (pixdim 0.8, 0.8, ")
    assert "not a positive number along axis 2" in str(error.value)


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
def test_a_nifti_with_an_axis_of_size_0_is_refused_not_read_as_a_zero_filled_slice(tmp_path, ending):
    """ITK turned size (20, 20, 0) into a zero-filled (20, 20, 1) volume: `evaluate` scored it."""
    path = tmp_path / f"a{ending}"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 0), np.uint8), np.eye(4)), path)
    with pytest.raises(InputError) as error:
        read_label_map(path)
    assert str(error.value) == f"{path}: holds no voxels (size (20, 20, 0))"


def test_label_values_out_of_range_are_printed_as_the_integers_they_are(tmp_path):
    """A uint64 label of 2^64 - 1 was printed as 18446744073709551616.0 (off by one, as a float)."""
    big = np.zeros((4, 4, 2), np.uint64)
    big[1, 1, 1] = np.iinfo(np.uint64).max
    nib.save(nib.Nifti1Image(big, np.eye(4), dtype=np.uint64), tmp_path / "big.nii.gz")
    with pytest.raises(InputError) as error:
        read_label_map(tmp_path / "big.nii.gz")
    assert str(error.value) == f"{tmp_path / 'big.nii.gz'}: label value 18446744073709551615 is too large (max 2^32-1)"
    negative = np.zeros((4, 4, 2), np.int32)
    negative[0, 0, 0] = -7
    nib.save(nib.Nifti1Image(negative, np.eye(4)), tmp_path / "neg.nii.gz")
    with pytest.raises(InputError, match=r"negative label values, e\.g\. -7$"):
        read_label_map(tmp_path / "neg.nii.gz")
