"""Reading and writing images and label maps, and their geometry.

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

import gzip
import itertools
import math
import os
import re
import secrets
import shutil
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import SimpleITK as sitk

from segqc.errors import GeometryDifference, GeometryMismatchError, InputError
from segqc.io.atomic import note_write

if TYPE_CHECKING:
    import nibabel

__all__ = [
    "IMAGE_EXTENSIONS",
    "Geometry",
    "GeometryDifference",
    "Image",
    "check_same_geometry",
    "default_origin_atol_mm",
    "geometry_differences",
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
_NIFTI = (".nii", ".nii.gz")
_DETACHED = (".nhdr", ".mhd")  # header + separate data file
_FORMAT_NAMES = {
    ".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage",
    ".mhd": "MetaImage", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
}
_POSITIVE_CODES = "LPS"  # ITK/LPS: +x -> Left, +y -> Posterior, +z -> Superior
_NEGATIVE_CODES = "RAI"


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an image in physical space (ITK conventions, millimetres, LPS).

    ``shape`` is the array shape in ITK index order, ``spacing[d]`` the voxel size in mm along
    array axis ``d``, ``origin`` the LPS position (mm) of the centre of voxel ``(0, ..., 0)`` and
    ``direction`` the ``ndim * ndim`` direction cosines, row-major as ``SimpleITK.GetDirection()``
    (column ``d`` is the physical direction of array axis ``d``).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        n = len(shape)
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if n == 0 or any(s < 0 for s in shape):
            raise ValueError(f"invalid shape {shape}")
        if len(spacing) != n or len(origin) != n or len(direction) != n * n:
            raise ValueError(
                f"geometry of a {n}D grid needs {n} spacings, {n} origin coordinates and "
                f"{n * n} direction cosines; got {len(spacing)}, {len(origin)}, {len(direction)}"
            )
        if not all(np.isfinite(spacing)) or any(s <= 0 for s in spacing):
            raise ValueError(f"spacing must be positive and finite, got {spacing}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @classmethod
    def from_shape(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
    ) -> Geometry:
        """Axis-aligned grid (identity direction); spacing defaults to 1 mm, origin to 0."""
        n = len(shape)
        return cls(
            shape=tuple(shape),
            spacing=tuple(spacing) if spacing is not None else (1.0,) * n,
            origin=tuple(origin) if origin is not None else (0.0,) * n,
            direction=tuple(np.eye(n).ravel()),
        )

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.shape)

    def direction_matrix(self) -> np.ndarray:
        """``ndim x ndim`` direction cosine matrix (column d = direction of array axis d)."""
        return np.asarray(self.direction, dtype=float).reshape(self.ndim, self.ndim)

    def affine(self) -> np.ndarray:
        """``(ndim+1) x (ndim+1)`` matrix mapping a voxel index to its LPS position in mm."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = self.direction_matrix() @ np.diag(self.spacing)
        a[:n, n] = self.origin
        return a

    def orientation(self) -> str:
        """Axis codes such as ``"LPS"`` or ``"RAS"`` (``"LP"`` in 2D), one letter per array axis.

        Letter ``d`` names the anatomical direction that array axis ``d`` points *towards*
        (DICOM/nibabel convention; identity direction is ``"LPS"``). For oblique grids each axis
        gets the closest anatomical axis, with no anatomical axis used twice.
        """
        m = self.direction_matrix()
        n = self.ndim
        best = max(
            itertools.permutations(range(n)),
            key=lambda perm: sum(abs(m[perm[d], d]) for d in range(n)),
        )
        return "".join(
            (_POSITIVE_CODES if m[best[d], d] >= 0 else _NEGATIVE_CODES)[best[d]]
            for d in range(n)
        )

    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (``prod(spacing) / 1000``; for 2D grids this is the
        pixel area in mm^2 divided by 1000)."""
        return float(np.prod(self.spacing)) / 1000.0

    def differences(
        self,
        other: Geometry,
        *,
        spacing_rtol: float = 1e-3,
        direction_atol: float = 1e-3,
        origin_atol_mm: float | None = None,
    ) -> list[GeometryDifference]:
        """How this grid (taken as the prediction's) differs from ``other`` (the ground truth's);
        empty when they are the same grid. See :func:`geometry_differences`."""
        return geometry_differences(
            self, other, spacing_rtol=spacing_rtol, direction_atol=direction_atol,
            origin_atol_mm=origin_atol_mm,
        )

    def same_grid(self, other: Geometry) -> bool:
        """Whether ``other`` is the same physical voxel grid, within the default tolerances of
        :func:`geometry_differences` (shape exactly; spacing, direction and origin nearly)."""
        return not geometry_differences(self, other)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """JSON-able form: lists ``shape``, ``spacing``, ``origin``, ``direction``."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` on malformed data."""
        try:
            return cls(
                shape=tuple(data["shape"]),
                spacing=tuple(data["spacing"]),
                origin=tuple(data["origin"]),
                direction=tuple(data["direction"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed geometry {dict(data)!r}: {exc}") from None


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
    if np.issubdtype(array.dtype, np.floating) and _extension(path) in _NIFTI:
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
            example = _format_number(float(array[fractional].flat[0]))
            raise InputError(f"non-integer label values, e.g. {example}", path)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"unsupported pixel type {array.dtype} for a label map", path)
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    shown = (lambda v: str(int(v))) if array.dtype.kind in "iu" else (lambda v: _format_number(float(v)))
    if low < 0:
        raise InputError(f"negative label values, e.g. {shown(low)}", path)
    for candidate in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(candidate).max:
            return array.astype(candidate, copy=False)
    raise InputError(f"label value {shown(high)} is too large (max 2^32-1)", path)


def nibabel_nifti(path: Path) -> nibabel.Nifti1Image:
    """nibabel's (lazy) view of a ``.nii``/``.nii.gz`` file. ``nibabel.load`` is typed as returning
    any image class; NIfTI files load as ``Nifti1Image`` or its subclass ``Nifti2Image``."""
    import nibabel

    return cast("nibabel.Nifti1Image", nibabel.load(path))


def stored_nonfinite(path: str | os.PathLike[str]) -> str | None:
    """``"NaN"`` or ``"infinite"`` when a float-typed NIfTI file stores such voxels, else None.

    ITK's NIfTI reader silently turns NaN and infinite voxels into 0, so the stored values are
    looked at with nibabel (only for float data types; other files and formats give None)."""
    path = Path(path)
    if _extension(path) not in _NIFTI:
        return None
    try:
        proxy = nibabel_nifti(path)
        if not np.issubdtype(proxy.get_data_dtype(), np.floating):
            return None
        stored = np.asanyarray(proxy.dataobj)
    except Exception:  # noqa: BLE001 - SimpleITK read it; nibabel's opinion is only a check
        return None
    if np.isnan(stored).any():
        return "NaN"
    if np.isinf(stored).any():
        return "infinite"
    return None


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
    if ext in _NIFTI:  # before ITK reads anything: it may read past corruption or zero-fill
        _check_nifti_complete(path, ext)
    if ext == ".png" and _png_colour_type(path) == _PNG_PALETTE:
        return _palette_png(path, indices=palette_indices)
    with _exact_name(path, ext) as name:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            with _itk_output_held(ext):
                reader.ReadImageInformation()
        except RuntimeError as exc:
            components = _png_channels(path) if ext == ".png" else None
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


#: PNG colour types (IHDR byte 9) -> channels: grey, RGB, palette, grey + alpha, RGB + alpha.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_PALETTE = 3


def _png_colour_type(path: Path) -> int | None:
    """The colour type stored in a PNG file's header, or None when the header is not a PNG's."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def _png_channels(path: Path) -> int | None:
    """Channels per pixel of a PNG file from its header, or None when the header is not a PNG's.
    ITK cannot even describe a grey + alpha PNG ("Unknown PixelType"), so its channel count is
    read here to say what is wrong."""
    colour_type = _png_colour_type(path)
    return None if colour_type is None else _PNG_CHANNELS.get(colour_type)


def _palette_png(path: Path, *, indices: bool) -> sitk.Image:
    """A palette PNG as a one-channel image (origin 0, spacing 1, as ITK gives PNGs): its palette
    indices (``indices``), or the grey level each index stands for when the palette is grey; a
    palette with colours is refused (it holds no intensities)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as picture:
            picture.load()
            mode = picture.mode
            array = np.array(picture, dtype=np.uint8)
            palette = np.array(picture.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is an unreadable file
        raise InputError(f"unreadable PNG file ({exc})", path) from None
    if mode != "P":
        raise InputError(f"palette PNG decoded as mode {mode}", path)
    if not indices:
        if palette.size == 0 or (palette != palette[:, :1]).any():
            raise InputError("is a palette PNG with colours, not grey levels; save the image as a "
                             "greyscale PNG", path)
        if array.size and int(array.max()) >= len(palette):
            raise InputError(f"palette index {int(array.max())} beyond the {len(palette)} palette "
                             "entries", path)
        array = palette[:, 0][array]
    return sitk.GetImageFromArray(array)


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
    if ext in _NIFTI:
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


def _nifti_siblings(path: Path, ext: str) -> list[Path]:
    """Files next to a NIfTI file ITK's reader could take instead of it: asked for
    ``CASE.nii.gz``, ITK reads ``CASE.nii`` when that exists (and ``CASE.nii.gz`` for
    ``CASE.nii`` is guarded against as well)."""
    name = path.name
    if ext == ".nii.gz":
        stem, own = name[:-7], name[-7:-3]
        others = {own, ".nii", ".NII"}
    else:
        stem, own = name[:-4], name[-4:]
        others = {own + ".gz", own + ".GZ", ".nii.gz", ".NII.GZ"}
    return [path.with_name(stem + other) for other in sorted(others)
            if os.path.lexists(path.with_name(stem + other))]


@contextmanager
def _exact_name(path: Path, ext: str) -> Iterator[str]:
    """A file name under which ITK reads exactly ``path``: ``path`` itself, or, for a NIfTI file
    with a sibling of the other NIfTI ending, a symbolic link of the same name in a private
    temporary folder (a copy where links cannot be made), removed afterwards."""
    if ext not in _NIFTI or not _nifti_siblings(path, ext):
        yield str(path)
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix="segqc-read-"))
    except OSError as exc:
        raise InputError(
            f"cannot read image: a sibling file with another NIfTI ending exists and no temporary "
            f"folder could be made to read exactly this file ({exc.strerror or exc})",
            path,
        ) from None
    alias = folder / path.name
    try:
        try:
            os.symlink(path.resolve(), alias)
        except OSError:
            try:
                shutil.copyfile(path, alias)
            except OSError as exc:
                raise InputError(
                    f"cannot read image: a sibling file with another NIfTI ending exists and this "
                    f"file could not be placed in a temporary folder ({exc.strerror or exc})",
                    path,
                ) from None
        yield str(alias)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def _check_nifti_complete(path: Path, ext: str) -> None:
    """Raise InputError if a NIfTI file is corrupt or holds fewer bytes than its header promises.

    ITK silently zero-fills truncated NIfTI data (both ``.nii`` and ``.nii.gz``) and does not
    verify the gzip CRC of a ``.nii.gz`` it does not read to the end, so this is checked here:
    for ``.nii`` the file size against the header, for ``.nii.gz`` the whole gzip stream (every
    member's CRC-32 and length trailer, see :func:`_gzip_stream_size`) and its decompressed size
    against the header.
    """
    try:
        if ext == ".nii":
            with open(path, "rb") as f:
                header = f.read(540)
            expected = _nifti_expected_bytes(header)
            header_problem = _nifti_header_problem(header)
            if header_problem is not None:
                raise InputError(header_problem, path)
            if expected is not None and path.stat().st_size < expected:
                raise InputError(
                    f"cannot read image: truncated NIfTI file ({path.stat().st_size} bytes, "
                    f"header promises {expected})",
                    path,
                )
            return
        total = _gzip_stream_size(path)
        with gzip.open(path, "rb") as g:
            header = g.read(540)
        expected = _nifti_expected_bytes(header)
        header_problem = _nifti_header_problem(header)
    except (_GzipTruncated, EOFError):
        raise InputError(
            "cannot read image: truncated .nii.gz file (compressed data ends early)", path
        ) from None
    except _GzipCorrupt as exc:
        raise InputError(f"cannot read image: corrupt .nii.gz file ({exc})", path) from None
    except (OSError, zlib.error) as exc:
        raise InputError(f"cannot read image: corrupt .nii.gz file ({exc})", path) from None
    if header_problem is not None:
        raise InputError(header_problem, path)
    if expected is not None and total < expected:
        raise InputError(
            f"cannot read image: truncated NIfTI file ({total} bytes after decompression, "
            f"header promises {expected})",
            path,
        )


class _GzipTruncated(Exception):
    """The gzip stream ends inside a member."""


class _GzipCorrupt(Exception):
    """The gzip stream is not valid; ``str()`` says why in a few words."""


_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_READ = 1 << 18  # compressed bytes per read
_GZIP_OUT = 1 << 20  # most decompressed bytes produced per step


def _gzip_stream_size(path: Path) -> int:
    """Decompressed size of a gzip file, verifying the whole stream on the way.

    Decompressed in chunks with zlib (a few MB of memory whatever the ratio), which checks
    every member's CRC-32 and length (ISIZE) trailer. Several members are allowed (as in
    ``cat a.gz b.gz``), and so are zero bytes after the last one (padding). Anything else after
    a member is refused: zlib's reader (ITK's) silently ignores everything from the first byte
    that does not start a member, so data there, even a member after zero padding, would be
    lost. Raises :class:`_GzipTruncated` or :class:`_GzipCorrupt`.
    """
    total = 0
    first = True
    try:
        with open(path, "rb") as f:
            data = f.read(_GZIP_READ)
            while True:
                # at the start of a member or after the last one
                while len(data) < 2 and (more := f.read(_GZIP_READ)):
                    data += more
                if not data:
                    return total
                if data[:2] != _GZIP_MAGIC:
                    if first:
                        raise _GzipCorrupt("not a gzip stream")
                    while data:  # only zero padding may follow the last member
                        if data.strip(b"\x00"):
                            raise _GzipCorrupt("unexpected data after the compressed stream")
                        data = f.read(_GZIP_READ)
                    return total
                first = False
                decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
                while not decomp.eof:
                    if data:
                        total += len(decomp.decompress(data, _GZIP_OUT))
                        data = decomp.unconsumed_tail
                        continue
                    data = f.read(_GZIP_READ)
                    if not data:
                        total += len(decomp.flush())  # output still held for consumed input
                        if not decomp.eof:
                            raise _GzipTruncated()
                data = decomp.unused_data + data
    except zlib.error as exc:
        text = str(exc)
        if "incorrect data check" in text:
            raise _GzipCorrupt("CRC check failed") from None
        if "incorrect length check" in text:
            raise _GzipCorrupt("length check failed") from None
        raise _GzipCorrupt(f"invalid compressed data: {text.split(': ', 1)[-1]}") from None


class _NiftiHeader(NamedTuple):
    sizeof_hdr: int
    dims: tuple[int, ...]
    bitpix: int
    vox_offset: float
    pixdim: tuple[float, ...]


def _nifti_header(header: bytes) -> _NiftiHeader | None:
    """The fields of a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header that the checks below
    read, in either byte order; None when ``header`` is neither."""
    if len(header) < 348:
        return None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", header[:4])
        if sizeof_hdr == 348:
            return _NiftiHeader(348, struct.unpack(endian + "8h", header[40:56]),
                                struct.unpack(endian + "h", header[72:74])[0],
                                struct.unpack(endian + "f", header[108:112])[0],
                                struct.unpack(endian + "8f", header[76:108]))
        if sizeof_hdr == 540 and len(header) >= 540:
            return _NiftiHeader(540, struct.unpack(endian + "8q", header[16:80]),
                                struct.unpack(endian + "h", header[14:16])[0],
                                struct.unpack(endian + "q", header[168:176])[0],
                                struct.unpack(endian + "8d", header[104:168]))
    return None


def _nifti_header_problem(header: bytes) -> str | None:
    """What is wrong with a NIfTI-1/2 header that ITK would silently repair, or None: an axis of
    size 0 (ITK reads a zero-filled axis of 1), or a voxel spacing (``pixdim``) of a spatial axis
    that is zero or not finite (ITK reads 1 mm)."""
    fields = _nifti_header(header)
    if fields is None:
        return None
    ndim = int(fields.dims[0])
    if 1 <= ndim <= 7 and 0 in fields.dims[1:ndim + 1]:
        return f"holds no voxels (size {tuple(int(d) for d in fields.dims[1:ndim + 1])})"
    spacing = fields.pixdim[1:1 + max(0, min(ndim, 3))]
    bad = [i for i, v in enumerate(spacing) if not math.isfinite(v) or v == 0]
    if not bad:
        return None
    shown = ", ".join(f"{v:g}" for v in spacing)
    return (f"the header's voxel spacing (pixdim {shown}) is not a positive number along axis "
            f"{bad[0]}; fix the header (ITK would read it as 1 mm)")


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Header size plus voxel data size promised by a NIfTI-1/2 header, or None if unparseable."""
    fields = _nifti_header(header)
    if fields is None:
        return None
    dims, ndim = fields.dims, fields.dims[0]
    if not 1 <= ndim <= 7 or fields.bitpix <= 0 or any(d <= 0 for d in dims[1 : ndim + 1]):
        return None
    offset = max(int(fields.vox_offset), fields.sizeof_hdr)
    return offset + int(np.prod(dims[1 : ndim + 1], dtype=np.int64)) * fields.bitpix // 8


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
            f"carries its own spacing {_format_tuple(geometry.spacing)} mm; a spacing override "
            f"applies only to files without one (got {_format_tuple(override)} mm)",
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
            f"spacing override {_format_tuple(values)} has {len(values)} value(s); "
            f"this {ndim}D image needs {ndim}",
            path,
        )
    if not all(np.isfinite(values)) or any(v <= 0 for v in values):
        raise InputError(
            f"spacing override {_format_tuple(values)} must be positive and finite", path
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
# Geometry checks and resampling
# --------------------------------------------------------------------------------------------


def default_origin_atol_mm(pred: Geometry, gt: Geometry) -> float:
    """Default origin tolerance: ``max(1e-3 mm, 1e-2 * the smallest voxel spacing of the two
    grids)``, i.e. a hundredth of a voxel, but never below a micrometre (NIfTI stores the origin
    as float32)."""
    return max(1e-3, 1e-2 * min(min(pred.spacing), min(gt.spacing)))


def geometry_differences(
    pred: Geometry,
    gt: Geometry,
    *,
    spacing_rtol: float = 1e-3,
    direction_atol: float = 1e-3,
    origin_atol_mm: float | None = None,
) -> list[GeometryDifference]:
    """Every way in which ``pred``'s voxel grid differs from ``gt``'s; empty for the same grid.

    The whole physical grid is compared: dimensionality (a ``"dimension"`` difference, then
    nothing else), shape (exactly), spacing (relative tolerance ``spacing_rtol``), direction
    cosines (absolute tolerance ``direction_atol``; reported as ``"orientation"`` with the axis
    codes when those differ, e.g. a flipped axis, else as ``"direction"``) and origin (largest
    coordinate difference in mm, tolerance ``origin_atol_mm``, by default
    ``max(1e-3 mm, 1e-2 * the smallest voxel spacing of the two grids)``).
    """
    if pred.ndim != gt.ndim:
        return [GeometryDifference("dimension", f"{pred.ndim}D", f"{gt.ndim}D")]
    diffs: list[GeometryDifference] = []
    if pred.shape != gt.shape:
        diffs.append(GeometryDifference("shape", str(pred.shape), str(gt.shape)))
    if not np.allclose(pred.spacing, gt.spacing, rtol=spacing_rtol, atol=0.0):
        diffs.append(GeometryDifference(
            "spacing", _format_tuple(pred.spacing) + " mm", _format_tuple(gt.spacing) + " mm"))
    if np.max(np.abs(np.subtract(pred.direction, gt.direction))) > direction_atol:
        p_code, g_code = pred.orientation(), gt.orientation()
        if p_code != g_code:
            diffs.append(GeometryDifference("orientation", p_code, g_code))
        else:
            diffs.append(GeometryDifference(
                "direction", _format_tuple(pred.direction, 4), _format_tuple(gt.direction, 4)))
    if origin_atol_mm is None:
        origin_atol_mm = default_origin_atol_mm(pred, gt)
    offset = float(np.max(np.abs(np.subtract(pred.origin, gt.origin))))
    if not offset <= origin_atol_mm:  # also catches NaN
        diffs.append(GeometryDifference(
            "origin", _format_tuple(pred.origin) + " mm", _format_tuple(gt.origin) + " mm"))
    return diffs


def check_same_geometry(
    pred: Geometry,
    gt: Geometry,
    *,
    pred_path: str | os.PathLike[str] | None = None,
    gt_path: str | os.PathLike[str] | None = None,
    spacing_rtol: float = 1e-3,
    direction_atol: float = 1e-3,
    origin_atol_mm: float | None = None,
    roles: tuple[str, str] = ("prediction", "ground truth"),
) -> None:
    """Raise :class:`GeometryMismatchError` unless ``pred`` and ``gt`` share a voxel grid.

    The full physical grid is compared, see :func:`geometry_differences`: dimensionality, shape
    (exactly), spacing (relative tolerance ``spacing_rtol``), direction cosines (absolute
    tolerance ``direction_atol``) and origin (largest coordinate difference in mm; tolerance
    ``origin_atol_mm``, by default ``max(1e-3 mm, 1e-2 * the smallest voxel spacing)``). The
    error's one-line message names the prediction file and lists what differs with both values;
    its ``differences`` attribute holds the same as :class:`GeometryDifference` records. The
    message suggests no remedy: callers add hints (e.g. a resampling option) themselves.
    ``roles``: what the message calls the two files (e.g. ``("image", "label map")``).
    """
    diffs = geometry_differences(
        pred, gt, spacing_rtol=spacing_rtol, direction_atol=direction_atol,
        origin_atol_mm=origin_atol_mm,
    )
    if not diffs:
        return
    pred_name = str(pred_path) if pred_path is not None else None
    mine, theirs = roles
    gt_ref = f"{theirs} {gt_path}" if gt_path is not None else theirs
    if diffs[0].what == "dimension":
        message = (
            f"{pred.ndim}D {mine} cannot be compared with {gt.ndim}D {gt_ref} "
            f"(shapes {pred.shape} and {gt.shape})"
        )
        raise GeometryMismatchError(message, pred_name, diffs)
    if len(diffs) == 1:
        d = diffs[0]
        message = f"{d.what} {d.pred} differs from {gt_ref} {d.gt}"
    else:
        message = (
            ", ".join(f"{d.what} {d.pred}" for d in diffs)
            + f" differ from {gt_ref}: "
            + ", ".join(f"{d.what} {d.gt}" for d in diffs)
        )
    if pred_name is None:
        message = f"{mine} " + message
    raise GeometryMismatchError(message, pred_name, diffs)


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


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _format_number(value: float, digits: int = 6) -> str:
    """Short, readable float: 1.0, 2.5, 1.5625, 0.333333."""
    if float(value).is_integer():
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def _format_tuple(values: Sequence[float], digits: int = 6) -> str:
    return "(" + ", ".join(_format_number(float(v), digits) for v in values) + ")"
