"""NIfTI files checked before ITK reads them, and read exactly as named.

ITK's NIfTI reader zero-fills truncated data, does not verify a ``.nii.gz``'s gzip trailer,
repairs a header with an empty axis or a zero spacing, reads ``CASE.nii`` when asked for
``CASE.nii.gz`` beside it, and turns NaN voxels into 0. The functions here find each of those
so that :mod:`segqc.io.images` can refuse the file in one line naming it.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

from segqc.errors import InputError

if TYPE_CHECKING:
    import nibabel

__all__ = [
    "NIFTI_EXTENSIONS", "check_nifti_complete", "exact_name", "is_nifti", "nibabel_nifti", "stored_nonfinite",
]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
"""NIfTI file endings (lower case)."""


def is_nifti(path: Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return path.name.lower().endswith(NIFTI_EXTENSIONS)


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
    if not is_nifti(path):
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
def exact_name(path: Path, ext: str) -> Iterator[str]:
    """A file name under which ITK reads exactly ``path``: ``path`` itself, or, for a NIfTI file
    with a sibling of the other NIfTI ending, a symbolic link of the same name in a private
    temporary folder (a copy where links cannot be made), removed afterwards."""
    if ext not in NIFTI_EXTENSIONS or not _nifti_siblings(path, ext):
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


def check_nifti_complete(path: Path, ext: str) -> None:
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
