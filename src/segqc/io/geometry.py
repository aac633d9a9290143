"""Voxel grids in physical space, and how two of them differ.

Conventions (see ``ARCHITECTURE.md``): array axes in ITK index order ``(i, j, k) = (x, y, z)``,
``spacing[d]`` in mm along array axis ``d``, physical coordinates in mm, LPS (x grows to the
patient's Left, y to Posterior, z to Superior). Pure numeric code: no files are read here
(:mod:`segqc.io.images` reads and writes images with their :class:`Geometry`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segqc.errors import GeometryDifference, GeometryMismatchError, InputError

__all__ = [
    "Geometry",
    "GeometryDifference",
    "check_same_geometry",
    "default_origin_atol_mm",
    "format_number",
    "format_tuple",
    "geometry_differences",
]

_POSITIVE_CODES = "LPS"  # ITK/LPS: +x -> Left, +y -> Posterior, +z -> Superior
_NEGATIVE_CODES = "RAI"


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
            "spacing", format_tuple(pred.spacing) + " mm", format_tuple(gt.spacing) + " mm"))
    if np.max(np.abs(np.subtract(pred.direction, gt.direction))) > direction_atol:
        p_code, g_code = pred.orientation(), gt.orientation()
        if p_code != g_code:
            diffs.append(GeometryDifference("orientation", p_code, g_code))
        else:
            diffs.append(GeometryDifference(
                "direction", format_tuple(pred.direction, 4), format_tuple(gt.direction, 4)))
    if origin_atol_mm is None:
        origin_atol_mm = default_origin_atol_mm(pred, gt)
    offset = float(np.max(np.abs(np.subtract(pred.origin, gt.origin))))
    if not offset <= origin_atol_mm:  # also catches NaN
        diffs.append(GeometryDifference(
            "origin", format_tuple(pred.origin) + " mm", format_tuple(gt.origin) + " mm"))
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


def format_number(value: float, digits: int = 6) -> str:
    """Short, readable float: 1.0, 2.5, 1.5625, 0.333333."""
    if float(value).is_integer():
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def format_tuple(values: Sequence[float], digits: int = 6) -> str:
    return "(" + ", ".join(format_number(float(v), digits) for v in values) + ")"
