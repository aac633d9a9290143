"""Reading and writing images and label maps with their geometry (:mod:`segqc.io.geometry`).

Conventions (see ``ARCHITECTURE.md``):

* Arrays are numpy in ITK index order ``(i, j, k) = (x, y, z)``: the *transpose* of
  ``SimpleITK.GetArrayFromImage``, so ``array.shape == image.GetSize()`` and ``spacing[d]`` (mm)
  belongs to array axis ``d``. This is also the axis order of nibabel's ``get_fdata()`` for NIfTI.
  Arrays returned by the readers are therefore usually Fortran-ordered views; use
  ``np.ascontiguousarray`` where C order matters.
* Physical coordinates are ITK's: millimetres, LPS (x grows to the patient's Left, y to Posterior,
  z to Superior). nibabel's RAS affine equals ``diag(-1, -1, 1, 1) @ Geometry.affine()``.
* Label maps are unsigned integers (``uint8`` if the largest label is <= 255, else ``uint16``, else
  ``uint32``); images are ``float32`` unless asked otherwise.
* Every problem with a file raises :class:`~segqc.errors.InputError` (or its subclass
  :class:`~segqc.errors.GeometryMismatchError`) with one line naming the file.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from segqc.errors import GeometryDifference, GeometryMismatchError, InputError
from segqc.io.atomic import note_write
from segqc.io.geometry import Geometry, format_number, format_tuple
from segqc.io.nifti_files import NIFTI_EXTENSIONS, check_nifti_complete, exact_name, stored_nonfinite
from segqc.io.png_files import PNG_PALETTE, palette_png, png_channels, png_colour_type

__all__ = [
    "IMAGE_EXTENSIONS",
    "Image",
    "blank_image_warning",
    "carries_spacing",
    "read_image",
    "read_label_map",
    "resample_nearest",
    "write_image",
]

#: File endings segqc reads and writes (matched case-insensitively, longest first).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff",
)
_PLAIN_2D = (".png", ".tif", ".tiff")  # no physical geometry: spacing 1 mm, origin 0, identity
_DETACHED = (".nhdr", ".mhd")  # header + separate data file
_FORMAT_NAMES = {
    ".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage",
    ".mhd": "MetaImage", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
}




@dataclass
class Image:
    """A voxel array (ITK index order) with its geometry and the file it came from, if any.

    ``spacing_known`` is ``False`` when the spacing is a placeholder (1 mm per pixel) because the
    file holds no physical spacing (PNG, TIFF) and none was given to the reader; millimetre
    figures of such an image are pixel units.
    """

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None
    spacing_known: bool = True


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(
    path: str | os.PathLike[str],
    *,
    dtype: Any = np.float32,
    spacing: Sequence[float] | None = None,
    finite: bool = False,
) -> Image:
    """Read a 2D or 3D scalar image (NIfTI, NRRD, MetaImage, PNG, TIFF).

    The array is in ITK index order and cast to ``dtype`` (``None`` keeps the stored type).
    PNG/TIFF hold no physical geometry: they get origin 0, identity direction and spacing 1 mm
    with ``spacing_known=False``, or ``spacing`` (mm per array axis) with ``spacing_known=True``
    when it is given. A palette PNG with a grey palette is read as its grey levels (one with
    colours is refused). For files that carry their own spacing, ``spacing`` must be ``None`` or
    equal to it (relative tolerance 1e-3); a different one is refused. Exactly the named file is
    read, even where ITK would pick a sibling (``CASE.nii`` next to ``CASE.nii.gz``). A
    ``.nii.gz`` is checked completely (gzip CRC and length), as ITK neither checks them nor
    notices truncated NIfTI data. Note that ITK's NIfTI reader replaces NaN and infinite voxels
    by 0: ``finite=True`` (for images whose values are computed with) refuses a file that stores
    them (``read_label_map`` always does). Raises :class:`InputError` naming the file for a
    missing, unsupported, unreadable, corrupt or truncated file, a multi-component (e.g. RGB)
    image, an image that is not 2D or 3D, an invalid ``spacing``, or with ``finite`` NaN or
    infinite voxels.
    """
    path = Path(path)
    sitk_image = _read_sitk(path)
    geometry, spacing_known = _geometry_of(sitk_image, path, spacing)
    array = _array_of(sitk_image)
    if finite:
        bad = stored_nonfinite(path)
        if bad is None and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = "NaN" if np.isnan(array).any() else "infinite"
        if bad is not None:
            raise InputError(f"contains {bad} voxels; the image must be finite", path)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Image(array=array, geometry=geometry, path=path, spacing_known=spacing_known)


def read_label_map(
    path: str | os.PathLike[str], *, spacing: Sequence[float] | None = None
) -> Image:
    """Read a label map and validate it: finite, integral and non-negative values.

    Float-typed data with integral values is accepted. The array is cast to the smallest of
    ``uint8`` / ``uint16`` / ``uint32`` that holds its largest label. ``spacing``, file checks and
    geometry as for :func:`read_image`. A palette (indexed-colour) PNG is read as its palette
    indices, the usual way label maps are stored in that format (the colours are ignored;
    :func:`read_image` reads a grey palette's grey levels and refuses colours). Raises
    :class:`InputError` naming the file for NaN or infinite values, fractional values and negative
    values.
    """
    path = Path(path)
    sitk_image = _read_sitk(path, palette_indices=True)
    geometry, spacing_known = _geometry_of(sitk_image, path, spacing)
    array = _array_of(sitk_image)
    if np.issubdtype(array.dtype, np.floating) and _extension(path) in NIFTI_EXTENSIONS:
        _check_nifti_finite(path)
    array = _label_array(array, path)
    return Image(array=array, geometry=geometry, path=path, spacing_known=spacing_known)


def _label_array(array: np.ndarray, path: Path | None) -> np.ndarray:
    """Validate label values and cast to the smallest unsigned type (uint8/16/32)."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise InputError("contains NaN values; a label map needs integer labels", path)
        if np.isinf(array).any():
            raise InputError("contains infinite values; a label map needs integer labels", path)
        fractional = array != np.round(array)
        if fractional.any():
            example = format_number(float(array[fractional].flat[0]))
            raise InputError(f"non-integer label values, e.g. {example}", path)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"unsupported pixel type {array.dtype} for a label map", path)
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    shown = (lambda v: str(int(v))) if array.dtype.kind in "iu" else (lambda v: format_number(float(v)))
    if low < 0:
        raise InputError(f"negative label values, e.g. {shown(low)}", path)
    for candidate in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(candidate).max:
            return array.astype(candidate, copy=False)
    raise InputError(f"label value {shown(high)} is too large (max 2^32-1)", path)




def _check_nifti_finite(path: Path) -> None:
    """A label map whose stored values are not finite is refused (see :func:`stored_nonfinite`)."""
    bad = stored_nonfinite(path)
    if bad is not None:
        raise InputError(f"contains {bad} values; a label map needs integer labels", path)


def carries_spacing(path: str | Path) -> bool:
    """Whether a file of this name stores its own physical spacing (NIfTI, NRRD, MetaImage: yes;
    PNG/TIFF: no). Decided by the file ending only; an unsupported ending is an InputError."""
    return _extension(Path(path)) not in _PLAIN_2D


def _extension(path: Path) -> str:
    """The supported file ending of ``path`` (lower case) or InputError."""
    name = path.name.lower()
    for ext in IMAGE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    suffix = "".join(path.suffixes[-2:]) if name.endswith(".gz") else path.suffix
    raise InputError(
        f"unsupported file type '{suffix or path.name}'; expected one of "
        + ", ".join(IMAGE_EXTENSIONS),
        path,
    )


def _read_sitk(path: Path, *, palette_indices: bool = False) -> sitk.Image:
    """Read a scalar 2D/3D image with SimpleITK, turning every failure into one InputError.

    ITK expands a palette PNG to its colours (3 channels); such a file is read here as its
    palette indices with ``palette_indices``, else as the grey levels of a grey palette (R = G = B
    in every entry), and refused as colour otherwise."""
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        raise InputError("is a folder, expected an image file", path)
    ext = _extension(path)
    if ext in NIFTI_EXTENSIONS:  # before ITK reads anything: it may read past corruption or zero-fill
        check_nifti_complete(path, ext)
    if ext == ".png" and png_colour_type(path) == PNG_PALETTE:
        return palette_png(path, indices=palette_indices)
    with exact_name(path, ext) as name:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            with _itk_output_held(ext):
                reader.ReadImageInformation()
        except RuntimeError as exc:
            components = png_channels(path) if ext == ".png" else None
            if components is not None and components != 1:
                raise InputError(_components_message(components), path) from None
            raise InputError(_unreadable_message(exc, ext), path) from None
        ndim = reader.GetDimension()
        if ndim not in (2, 3):
            raise InputError(
                f"expected a 2D or 3D image, got {ndim}D with size {tuple(reader.GetSize())}", path
            )
        components = reader.GetNumberOfComponents()
        if components != 1:
            raise InputError(_components_message(components), path)
        try:
            with _itk_output_held(ext):
                return reader.Execute()
        except RuntimeError as exc:
            raise InputError(_unreadable_message(exc, ext), path) from None


def _components_message(components: int) -> str:
    return f"expected a scalar (single-channel) image, got {components} components per voxel"




_HOLD_LOCK = threading.Lock()


@contextmanager
def _itk_output_held(ext: str) -> Iterator[None]:
    """Hold back what ITK's readers print straight to the process's stderr while a file is read
    (MetaImage and NRRD print several raw lines for a truncated file, past SimpleITK's warning
    switches): dropped when the read fails — the error line says what is wrong —, passed on to
    stderr when it succeeds. The file descriptor is swapped under a lock, so reads in several
    threads queue here rather than lose each other's stderr; NIfTI files are checked before ITK
    reads them and its NIfTI reader prints nothing, so they are read without the swap (and
    without the queue)."""
    if ext in NIFTI_EXTENSIONS:
        yield
        return
    with _HOLD_LOCK:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable stderr: nothing to hold back
            saved = -1
        if saved < 0:
            yield
            return
        try:
            with tempfile.TemporaryFile() as held:
                os.dup2(held.fileno(), 2)
                failed = True
                try:
                    yield
                    failed = False
                finally:
                    os.dup2(saved, 2)
                    if not failed:
                        held.seek(0)
                        text = held.read()
                        if text:
                            os.write(2, text)
        finally:
            os.close(saved)




def _unreadable_message(exc: RuntimeError, ext: str) -> str:
    fmt = _FORMAT_NAMES[ext]
    text = str(exc)
    if "Unable to determine ImageIO reader" in text:
        return f"cannot read image: not a valid {fmt} file (corrupt or wrong file type)"
    reason = _short_reason(text)
    msg = f"cannot read image: corrupt or truncated {fmt} file"
    if ext in _DETACHED:
        msg += " (or its data file is missing)"
    return f"{msg}: {reason}" if reason else msg


def _short_reason(text: str) -> str:
    """Last informative line of a SimpleITK/ITK error, without source locations and pointers."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("Exception thrown in SimpleITK"):
            continue
        if line.startswith("Reason:"):  # ITK's errno text, often a misleading "No such file"
            continue
        line = re.sub(r"^(sitk::ERROR|ITK ERROR|itk::ERROR):\s*", "", line)
        line = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
        line = re.sub(r"^\[\w+\]\s*", "", line)
        lines.append(line)
    if not lines or lines[-1].startswith("File cannot be read"):  # MetaImage: says nothing
        return ""
    return lines[-1][:200]




def _array_of(image: sitk.Image) -> np.ndarray:
    """Voxel array in ITK index order (transpose of ``GetArrayFromImage``)."""
    return sitk.GetArrayFromImage(image).T


def _geometry_of(
    image: sitk.Image, path: Path, spacing: Sequence[float] | None = None
) -> tuple[Geometry, bool]:
    """Geometry of a read image and whether its spacing is known (see :func:`read_image`)."""
    shape = tuple(image.GetSize())
    override = None if spacing is None else _spacing_override(spacing, len(shape), path)
    if _extension(path) in _PLAIN_2D:
        if override is None:
            return Geometry.from_shape(shape), False
        return Geometry.from_shape(shape, spacing=override), True
    geometry = Geometry(
        shape=shape,
        spacing=tuple(image.GetSpacing()),
        origin=tuple(image.GetOrigin()),
        direction=tuple(image.GetDirection()),
    )
    if override is not None and not np.allclose(override, geometry.spacing, rtol=1e-3, atol=0.0):
        raise InputError(
            f"carries its own spacing {format_tuple(geometry.spacing)} mm; a spacing override "
            f"applies only to files without one (got {format_tuple(override)} mm)",
            path,
        )
    return geometry, True


def _spacing_override(spacing: Sequence[float], ndim: int, path: Path) -> tuple[float, ...]:
    """Validate a spacing given to a reader: ``ndim`` finite positive numbers (mm)."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(
            f"spacing override {spacing!r} is not a sequence of {ndim} numbers (mm per axis)", path
        ) from None
    if len(values) != ndim:
        raise InputError(
            f"spacing override {format_tuple(values)} has {len(values)} value(s); "
            f"this {ndim}D image needs {ndim}",
            path,
        )
    if not all(np.isfinite(values)) or any(v <= 0 for v in values):
        raise InputError(
            f"spacing override {format_tuple(values)} must be positive and finite", path
        )
    return values


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _to_sitk(array: np.ndarray, geometry: Geometry, path: Path | None = None) -> sitk.Image:
    """SimpleITK image from an ITK-index-order array and its geometry."""
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D array, got shape {array.shape}", path)
    if array.shape != geometry.shape:
        raise InputError(
            f"array shape {array.shape} does not match geometry shape {geometry.shape}", path
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif not array.dtype.isnative:  # e.g. '>u2' read from a big-endian file: SimpleITK takes native only
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.T), isVector=False)
    except (TypeError, RuntimeError) as exc:
        raise InputError(f"cannot store pixel type {array.dtype}: {exc}", path) from None
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def blank_image_warning(path: str | os.PathLike[str], array: np.ndarray, consequence: str) -> list[str]:
    """``["PATH: the image is blank (every voxel V); CONSEQUENCE"]`` when every voxel of a
    non-empty image has one value, else ``[]``: a model's output for such an image (an export
    that lost its data, a wrong window) says nothing about the case."""
    if array.size and float(array.min()) == float(array.max()):
        return [f"{path}: the image is blank (every voxel {float(array.min()):g}); {consequence}"]
    return []


def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    geometry: Geometry,
    *,
    compress: bool = True,
) -> Path:
    """Write ``array`` (ITK index order) with ``geometry`` atomically; return the path.

    The format follows the file ending (see :data:`IMAGE_EXTENSIONS`). Parent folders are
    created. The data go to a temporary file in the same folder (``.tmp-<random>-<name>``,
    keeping the ending so that SimpleITK picks the right format) that is then renamed with
    ``os.replace``; readers never see a half-written file, and the temporary file is removed on
    failure. For detached-header formats (``.nhdr``, ``.mhd``) the pair is written in a hidden
    temporary folder and moved data file first, header last. ``bool`` arrays are stored as
    ``uint8``, ``float16`` as ``float32``, big-endian arrays in native byte order; other dtypes
    are kept when the format supports them. PNG/TIFF files store neither spacing nor origin (they
    read back as 1 mm, ``spacing_known=False``); PNG holds 8/16-bit unsigned integers. A dtype
    the format cannot hold is an :class:`InputError`.
    """
    path = Path(path)
    ext = _extension(path)
    image = _to_sitk(array, geometry, path)
    if ext in _PLAIN_2D and geometry.ndim != 2:
        raise InputError(f"{_FORMAT_NAMES[ext]} files hold 2D images only", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder: {exc.strerror or exc}", path.parent) from None
    note_write(path)
    token = secrets.token_hex(4)
    if ext in _DETACHED:
        _write_detached(image, path, token, compress)
        return path
    tmp = path.with_name(f".tmp-{token}-{path.name}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(_unwritable_message(exc), path) from None
    return path


def _write_detached(image: sitk.Image, path: Path, token: str, compress: bool) -> None:
    tmp_dir = path.with_name(f".tmp-{token}-{path.name}.d")
    try:
        tmp_dir.mkdir()
        sitk.WriteImage(image, str(tmp_dir / path.name), useCompression=compress)
        header = tmp_dir / path.name
        for item in sorted(tmp_dir.iterdir()):
            if item != header:
                note_write(path.with_name(item.name))
                os.replace(item, path.with_name(item.name))
        os.replace(header, path)
    except (RuntimeError, OSError) as exc:
        raise InputError(_unwritable_message(exc), path) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _unwritable_message(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot write image: {exc.strerror or exc}"
    reason = _short_reason(str(exc))
    return f"cannot write image: {reason}" if reason else "cannot write image"


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------




def resample_nearest(label: Image, reference: Geometry) -> Image:
    """Map a label map onto the ``reference`` grid in physical (LPS mm) space.

    Nearest-neighbour interpolation; reference voxels whose centre falls outside ``label``'s
    grid get 0 (background). The dtype is kept; ``path`` and ``spacing_known`` are carried over.
    """
    if label.geometry.ndim != reference.ndim:
        raise GeometryMismatchError(
            f"cannot resample a {label.geometry.ndim}D label map onto a {reference.ndim}D grid",
            label.path,
            [GeometryDifference("dimension", f"{label.geometry.ndim}D", f"{reference.ndim}D")],
        )
    dtype = label.array.dtype
    moving = _to_sitk(label.array, label.geometry, label.path)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in reference.shape])
    resampler.SetOutputSpacing(reference.spacing)
    resampler.SetOutputOrigin(reference.origin)
    resampler.SetOutputDirection(reference.direction)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(moving.GetPixelID())
    resampler.SetTransform(sitk.Transform(reference.ndim, sitk.sitkIdentity))
    out = resampler.Execute(moving)
    return Image(array=_array_of(out).astype(dtype, copy=False), geometry=reference,
                 path=label.path, spacing_known=label.spacing_known)
