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
from segqc.execution.cache import file_digest
from segqc.io.geometry import Geometry
from segqc.io.images import Image, read_image, read_label_map
from segqc.review.worklist import ReviewCase

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_LAYER_NAMES = {"error": "error map", "uncertainty": "uncertainty map"}


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


def _digest(path: Path) -> str:
    """The SHA-256 of the file's bytes: a file rewritten in place is read again even when its
    size and modification time stay the same. Raises :class:`InputError` naming a file that is
    gone or cannot be read (it was there when the worklist was made)."""
    try:
        return file_digest(path)
    except FileNotFoundError:
        raise InputError("is missing (it was there when the review started)", path) from None
    except OSError as error:
        raise InputError(f"cannot be read: {error.strerror or error}", path) from None


def _box_centre(labels: np.ndarray) -> list[int]:
    """The voxel at the centre of the bounding box of ``labels > 0`` (index order, padded to 3
    numbers); an empty list when there is no foreground. One boolean copy of the map, no list of
    voxel coordinates (24 bytes per foreground voxel: 1.9 GB for a whole-body CT's labels)."""
    from segqc.metrics.masks import bounding_box

    box = bounding_box(labels > 0)
    if box is None:
        return []
    return [(b.start + b.stop - 1) // 2 for b in box] + [0] * (3 - labels.ndim)


class VolumeCache:
    """The NIfTI bytes of the last ``size`` layers asked for, and of no more than ``max_bytes`` in
    all (the layer just read is kept whatever its size), keyed by the contents of their files
    (SHA-256; a changed file is read again), and the grid and focus of the segmentations read."""

    def __init__(self, size: int = 12, max_bytes: int = 2 * 2**30) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._focus: dict[tuple[object, ...], list[int]] = {}
        self._grids: OrderedDict[str, Geometry] = OrderedDict()
        self._lock = threading.Lock()

    def layer(self, case: ReviewCase, layer: str) -> bytes:
        """The NIfTI bytes of ``layer`` of ``case``; raises ``KeyError`` for a layer the case
        lacks and :class:`InputError` for a missing or unreadable file, an image or uncertainty
        map with NaN or infinite voxels, or a layer that is not on the segmentation's voxel grid."""
        files = case.files
        if layer == "error" and "error" not in files:
            if "segmentation" not in files or "reference" not in files:
                raise KeyError(layer)
            sources = [files["segmentation"], files["reference"]]
        elif layer in files:
            sources = [files[layer]]
        else:
            raise KeyError(layer)
        seg = files.get("segmentation")
        grid_of = seg if seg is not None and seg not in sources else None  # the grid this layer must lie on
        digests = [_digest(p) for p in sources]
        seg_digest = _digest(grid_of) if grid_of is not None else None
        key = (layer, *digests, seg_digest)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data, geometry = self._read(layer, sources, case.id)
        if layer == "segmentation":
            self._remember_grid(digests[0], geometry)
        if grid_of is not None and seg_digest is not None:
            from segqc.report.cohort import check_layer_grid

            check_layer_grid(geometry, sources[0], self._grid(grid_of, seg_digest), grid_of,
                             layer=_LAYER_NAMES.get(layer, layer), case=case.id)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size or (
                    len(self._items) > 1 and sum(map(len, self._items.values())) > self.max_bytes):
                self._items.popitem(last=False)
        return data

    def _remember_grid(self, digest: str, geometry: Geometry) -> None:
        with self._lock:
            self._grids[digest] = geometry
            self._grids.move_to_end(digest)
            while len(self._grids) > 64 * self.size:
                self._grids.popitem(last=False)

    def _grid(self, path: Path, digest: str) -> Geometry:
        """The voxel grid of the label map at ``path`` whose contents have ``digest``."""
        with self._lock:
            found = self._grids.get(digest)
        if found is None:
            found = read_label_map(path).geometry
            self._remember_grid(digest, found)
        return found

    def focus(self, case: ReviewCase) -> list[int] | None:
        """The voxel (index order, 3 numbers) at the centre of the bounding box of the
        segmentation's foreground — of the reference's when the segmentation is empty; None when
        both are empty. The viewer opens there, so the first slice shown holds the segmentation.
        Raises :class:`InputError` for a missing or unreadable file."""
        for layer in ("segmentation", "reference"):
            if layer not in case.files:
                continue
            digest = _digest(case.files[layer])
            key = ("focus", digest)
            with self._lock:
                cached = self._focus.get(key)
            if cached is None:
                label = read_label_map(case.files[layer])
                self._remember_grid(digest, label.geometry)
                cached = _box_centre(label.array)
                with self._lock:
                    self._focus[key] = cached
            if cached:
                return cached
        return None

    @staticmethod
    def _read(layer: str, sources: list[Path], case: str) -> tuple[bytes, Geometry]:
        if layer == "image":
            image = read_image(sources[0], dtype=None, finite=True)
            array = image.array if image.array.dtype != np.float64 else image.array.astype(np.float32)
            return nifti_bytes(array, image.geometry), image.geometry
        if layer == "uncertainty":
            image = read_image(sources[0], dtype=np.float32, finite=True)
            return nifti_bytes(image.array, image.geometry), image.geometry
        maps: list[Image] = [read_label_map(path) for path in sources]
        if len(maps) == 2:
            from segqc.report.cohort import check_layer_grid

            seg, ref = maps
            check_layer_grid(ref.geometry, sources[1], seg.geometry, sources[0], layer="reference", case=case)
            return nifti_bytes((seg.array != ref.array).astype(np.uint8), seg.geometry), seg.geometry
        label = maps[0]
        if layer == "error":  # a stored error map: any class wrong -> 1 (the viewer's error colour)
            return nifti_bytes((label.array > 0).astype(np.uint8), label.geometry), label.geometry
        array = label.array.astype(np.uint8) if int(label.array.max(initial=0)) < 256 else label.array
        return nifti_bytes(array, label.geometry), label.geometry
