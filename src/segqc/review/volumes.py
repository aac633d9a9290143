"""The layers of a review case as uncompressed NIfTI-1 bytes for the browser viewer.

Every layer goes through segqc's readers and one writer, so all layers of a case share one
affine (RAS, mm) whatever format the inputs were stored in (NIfTI, NRRD, MetaImage, PNG, TIFF;
a 2D image becomes one slice). Label layers are written as unsigned integers; the error layer
is 1 where the segmentation and the reference differ and 0 elsewhere (or the stored error map).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from segqc.errors import InputError
from segqc.io.images import Geometry, Image, read_image, read_label_map
from segqc.review.worklist import ReviewCase

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_bytes(array: np.ndarray, geometry: Geometry) -> bytes:
    """A single-file NIfTI-1 (``.nii``) of ``array`` (ITK index order) on ``geometry``."""
    import nibabel

    if geometry.ndim == 2:
        array = array[..., None]
        affine = np.eye(4)
        affine[:2, :2] = geometry.direction_matrix() @ np.diag(geometry.spacing)
        affine[:2, 3] = geometry.origin
    else:
        affine = geometry.affine()
    image = nibabel.Nifti1Image(np.ascontiguousarray(array), _LPS_TO_RAS @ affine)
    image.header.set_xyzt_units("mm")
    return bytes(image.to_bytes())


def _key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


class VolumeCache:
    """The NIfTI bytes of the last ``size`` layers asked for, keyed by the files' path, size and
    modification time (a changed file is read again)."""

    def __init__(self, size: int = 12) -> None:
        self.size = size
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._focus: dict[tuple[object, ...], list[int]] = {}
        self._lock = threading.Lock()

    def layer(self, case: ReviewCase, layer: str) -> bytes:
        """The NIfTI bytes of ``layer`` of ``case``; raises ``KeyError`` for a layer the case
        lacks and :class:`InputError` for an unreadable file or grids that differ."""
        files = case.files
        if layer == "error" and "error" not in files:
            if "segmentation" not in files or "reference" not in files:
                raise KeyError(layer)
            sources = [files["segmentation"], files["reference"]]
        elif layer in files:
            sources = [files[layer]]
        else:
            raise KeyError(layer)
        key = (layer, *(_key(p) for p in sources))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = self._read(layer, sources)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data

    def focus(self, case: ReviewCase) -> list[int] | None:
        """The voxel (index order, 3 numbers) at the centre of the bounding box of the
        segmentation's foreground — of the reference's when the segmentation is empty; None when
        both are empty. The viewer opens there, so the first slice shown holds the segmentation."""
        for layer in ("segmentation", "reference"):
            if layer not in case.files:
                continue
            key = ("focus", _key(case.files[layer]))
            with self._lock:
                cached = self._focus.get(key)
            if cached is None:
                array = read_label_map(case.files[layer]).array
                present = np.argwhere(array > 0)
                cached = [] if not len(present) else (
                    [int(v) for v in (present.min(axis=0) + present.max(axis=0)) // 2] + [0] * (3 - array.ndim))
                with self._lock:
                    self._focus[key] = cached
            if cached:
                return cached
        return None

    @staticmethod
    def _read(layer: str, sources: list[Path]) -> bytes:
        if layer == "image":
            image = read_image(sources[0], dtype=None)
            array = image.array if image.array.dtype != np.float64 else image.array.astype(np.float32)
            return nifti_bytes(array, image.geometry)
        if layer == "uncertainty":
            image = read_image(sources[0], dtype=np.float32)
            return nifti_bytes(image.array, image.geometry)
        maps: list[Image] = [read_label_map(path) for path in sources]
        if len(maps) == 2:
            seg, ref = maps
            if seg.array.shape != ref.array.shape:
                raise InputError(f"has shape {ref.array.shape}, the segmentation {seg.array.shape}", sources[1])
            return nifti_bytes((seg.array != ref.array).astype(np.uint8), seg.geometry)
        label = maps[0]
        if layer == "error":  # a stored error map: any class wrong -> 1 (the viewer's error colour)
            return nifti_bytes((label.array > 0).astype(np.uint8), label.geometry)
        array = label.array.astype(np.uint8) if int(label.array.max(initial=0)) < 256 else label.array
        return nifti_bytes(array, label.geometry)
