"""Where voxels are in the patient: physical coordinates of label maps, centroids, the midsagittal
plane and the superior-inferior position of every voxel — what the anatomical rules and checks
need, orientation- and spacing-aware.

Coordinates are patient LPS millimetres (the ITK / DICOM convention of :class:`Geometry`):
+x = patient Left, +y = Posterior, +z = Superior, whatever the voxel order, axis flips or spacing
of the file. (RAS, the NIfTI convention, is the same with x and y negated.) Pure numpy: arrays and
a :class:`Geometry` in, numbers out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from segqc.io.geometry import Geometry

__all__ = ["MidsagittalPlane", "axis_coordinate", "centroid_mm", "fit_midsagittal_plane", "index_to_mm",
           "signed_side"]


def _matrix(geometry: Geometry) -> np.ndarray:
    """The 3x3 (or 2x2) matrix from array index to LPS mm offsets (arrays are in ITK index order:
    column ``d`` of the direction is the physical direction of array axis ``d``)."""
    ndim = geometry.ndim
    direction = np.asarray(geometry.direction, dtype=float).reshape(ndim, ndim)
    return direction * np.asarray(geometry.spacing, dtype=float)


def index_to_mm(geometry: Geometry, index: np.ndarray) -> np.ndarray:
    """Physical LPS mm of array indices ``index`` (shape (..., ndim))."""
    index = np.asarray(index, dtype=float)
    return index @ _matrix(geometry).T + np.asarray(geometry.origin, dtype=float)


def index_centroid(mask: np.ndarray) -> np.ndarray | None:
    """Centre of mass of ``mask`` (non-zero voxels) in array indices (float, one per axis); None
    for an empty mask. From the mask's voxel counts per index along each axis: no list of voxel
    coordinates (24 bytes per voxel) and no float copy of the volume."""
    mask = np.asarray(mask)
    total = np.count_nonzero(mask)
    if not total:
        return None
    mask = mask.astype(bool, copy=False)
    index = np.empty(mask.ndim)
    for k, n in enumerate(mask.shape):
        counts = mask.sum(axis=tuple(a for a in range(mask.ndim) if a != k), dtype=np.int64)
        index[k] = float(np.dot(np.arange(n, dtype=np.float64), counts)) / total
    return index


def centroid_mm(mask: np.ndarray, geometry: Geometry) -> np.ndarray | None:
    """Centre of mass of ``mask`` (non-zero voxels) in LPS mm; None for an empty mask
    (:func:`index_centroid` mapped through the grid)."""
    index = index_centroid(mask)
    return None if index is None else index_to_mm(geometry, index)


def axis_coordinate(geometry: Geometry, axis: int) -> np.ndarray:
    """LPS coordinate ``axis`` (0 = x left, 1 = y posterior, 2 = z superior) of every voxel, as an
    array broadcastable to the map's shape: a sum of one term per array axis that moves along
    ``axis`` (an axis-aligned grid gives one line of values, an oblique one more; never a grid of
    the array axes the coordinate does not depend on)."""
    matrix = _matrix(geometry)
    shape = geometry.shape
    total = np.full([1] * len(shape), float(geometry.origin[axis]))
    for k, n in enumerate(shape):
        if matrix[axis, k] == 0.0:
            continue
        view = [1] * len(shape)
        view[k] = n
        total = total + (np.arange(n, dtype=float) * matrix[axis, k]).reshape(view)
    return total


@dataclass(frozen=True)
class MidsagittalPlane:
    """The plane ``x = a + b·y + c·z`` (LPS mm) between the patient's halves; ``source``: what it was
    fitted to (``landmarks`` or the fallback ``body centre``); ``points``: how many centroids."""

    a: float
    b: float = 0.0
    c: float = 0.0
    source: str = "landmarks"
    points: int = 0

    def side(self, point: np.ndarray) -> float:
        """Signed distance along x in mm: > 0 patient left of the plane, < 0 right."""
        return float(point[0] - (self.a + self.b * point[1] + self.c * point[2]))

    @property
    def tilt_degrees(self) -> float:
        """Angle between the plane's normal and the patient's left-right axis."""
        normal = np.array([1.0, -self.b, -self.c])
        return float(np.degrees(np.arccos(1.0 / np.linalg.norm(normal))))


def fit_midsagittal_plane(points: Iterable[np.ndarray], *, fallback_x: float) -> MidsagittalPlane:
    """Least-squares plane ``x = a + b·y + c·z`` through midline landmark centroids (LPS mm), e.g. the
    vertebrae and the sternum. With points spread in both y and z all three terms are fitted; spread
    in one of them only, that term alone (a plane containing the other axis); fewer than two points,
    the plane ``x = fallback_x`` (e.g. the body's centre), marked ``body centre``."""
    array = np.array([np.asarray(p, dtype=float) for p in points]).reshape(-1, 3)
    if len(array) < 2:
        return MidsagittalPlane(a=float(fallback_x), source="body centre", points=len(array))
    columns = [np.ones(len(array))]
    names = []
    for axis, name in ((1, "b"), (2, "c")):
        if np.ptp(array[:, axis]) > 10.0:  # mm: enough spread to fit a slope
            columns.append(array[:, axis])
            names.append(name)
    design = np.stack(columns, axis=1)
    solution, *_ = np.linalg.lstsq(design, array[:, 0], rcond=None)
    terms = dict(zip(["a", *names], solution.tolist(), strict=True))
    return MidsagittalPlane(a=terms["a"], b=terms.get("b", 0.0), c=terms.get("c", 0.0), points=len(array))


def signed_side(plane: MidsagittalPlane, geometry: Geometry) -> np.ndarray:
    """Signed x distance (mm) of every voxel to the plane (> 0 left), broadcastable to the map."""
    return (axis_coordinate(geometry, 0) - plane.a - plane.b * axis_coordinate(geometry, 1)
            - plane.c * axis_coordinate(geometry, 2))
