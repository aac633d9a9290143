"""Boundary- and shape-sensitive agreement metrics: Boundary IoU, centreline Dice, centre-of-mass distance.

All functions take ``pred, gt`` (same-shape 2D or 3D binary arrays; any non-zero value is foreground)
and, where distances matter, ``spacing`` (mm per array axis). Each function assumes BOTH masks are
non-empty: the caller applies its empty-mask policy first. An empty mask raises ``ValueError`` so
that misuse is loud instead of silently producing 0/0.

Boundary IoU (Cheng et al., CVPR 2021)
    ``|Pd ∩ Gd| / |Pd ∪ Gd|`` where ``Md`` is the boundary band of mask ``M``: its voxels within
    ``width_mm`` of its contour. Two band definitions are available (``definition=``):

    ``"distance"`` (default)
        ``Md = {x in M : dt(x) <= width_mm}``, with ``dt(x)`` the exact Euclidean distance in mm
        (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``) from the centre of ``x``
        to the centre of the nearest voxel outside ``M``; the image border counts as outside (the
        array is zero-padded). A voxel with a face neighbour outside therefore has ``dt`` equal to
        the spacing along that axis, so ``width_mm`` equal to an isotropic spacing selects exactly
        the one-voxel contour layer (the voxels with a face neighbour outside), and every further
        millimetre adds depth along each axis in proportion to its spacing. A relative tolerance of
        1e-9 absorbs the rounding of ``k * spacing`` (e.g. ``3 * 0.1 != 0.3`` in floating point).
    ``"metricsreloaded"``
        The band of MetricsReloaded's ``BinaryPairwiseMeasures.boundary_iou`` (``dict_args
        ["boundary_dist"]``, default 1): the border is the mask minus its binary erosion with the
        face-connected (cross) structuring element, the image edge counting as background; the band
        is ``{x in M : e(x) < width_mm}`` with ``e(x)`` the Euclidean distance from ``x`` to the
        nearest border voxel. MetricsReloaded computes ``e`` in voxels (it ignores ``pixdim`` here);
        this function computes it in mm with ``sampling=spacing``, so with ``spacing`` all ones and
        ``width_mm = boundary_dist`` the value is MetricsReloaded's exactly.

    The two definitions select the same band for ``width_mm`` equal to an isotropic spacing
    (MetricsReloaded's default ``boundary_dist=1`` at unit spacing): both are then the voxels with a
    face neighbour outside the mask. Along a straight face a voxel ``k`` voxels deep is ``k`` from
    the outside but ``k - 1`` from the border, so for integer widths (in voxels) the two agree there
    (``k <= width`` against ``k - 1 < width``) and for fractional widths MetricsReloaded's band is
    one voxel deeper. They also differ near concave corners, where the distance to the nearest
    border voxel can be shorter than the distance to the nearest outside voxel minus one voxel
    (see the tests).

    Both bands are computed on the bounding box of ``pred | gt`` padded by one zero voxel on every
    side. This equals the full-volume result: every voxel beyond the box is outside both masks and
    farther from any voxel of the box than the padding voxel obtained by clamping its coordinates
    to the padded box, and the border voxels lie inside the box.

Centreline Dice (Shit et al., CVPR 2021)
    ``Tprec = |S(P) ∩ G| / |S(P)|``, ``Tsens = |S(G) ∩ P| / |S(G)|``, ``clDice = 2 Tprec Tsens /
    (Tprec + Tsens)`` (0 when both are 0), with ``S`` the skeleton by
    ``skimage.morphology.skeletonize``: Zhang-Suen thinning in 2D and Lee's 3D medial-axis thinning
    in 3D (scikit-image's defaults for ``method=None``; MetricsReloaded's ``compute_skeleton`` calls
    the same function with the same defaults). A skeleton is a set of voxel positions, so spacing
    plays no part. A non-empty mask whose skeleton comes out empty (thinning may remove every voxel
    of a tiny, blob-like object) is used as its own skeleton: such an object is too small to have a
    centreline other than itself, and the ratio stays defined.

Centre-of-mass distance
    The Euclidean distance in mm between the centroids of the two masks (mean voxel index per axis
    times the spacing of that axis). MetricsReloaded's ``com_dist`` is the same quantity: it takes
    ``ndimage.center_of_mass`` in voxel indices and, when ``pixdim`` is given, weights the squared
    index differences by ``pixdim**2`` (voxel units without ``pixdim``; it returns -1 for an empty
    mask instead of raising).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from segqc.metrics.masks import as_mask, check_spacing, nonempty_box

BoundaryDefinition = Literal["distance", "metricsreloaded"]
BOUNDARY_DEFINITIONS: tuple[str, ...] = ("distance", "metricsreloaded")

# Relative slack on the band width: distances are computed as sqrt(sum((k_i * s_i)^2)), whose
# rounding may put a voxel exactly at the width a few ulps beyond it.
_WIDTH_RTOL = 1e-9


# --------------------------------------------------------------------------------------------
# Input checks


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = as_mask(pred, "pred")
    g = as_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if not p.any():
        raise ValueError("pred is empty; apply the empty-mask policy before calling this metric")
    if not g.any():
        raise ValueError("gt is empty; apply the empty-mask policy before calling this metric")
    return p, g


# --------------------------------------------------------------------------------------------
# Boundary IoU


def boundary_band(
    mask: np.ndarray,
    spacing: Sequence[float],
    width_mm: float,
    *,
    definition: BoundaryDefinition = "distance",
) -> np.ndarray:
    """Boundary band of one mask (bool array of the mask's shape), as used by :func:`boundary_iou`.

    ``spacing`` in mm per axis, ``width_mm`` in mm (``> 0``; ``inf`` selects the whole mask). See
    the module docstring for the two definitions. The image border counts as background. An empty
    mask gives an empty band. Computed on the mask's bounding box padded by one voxel.
    """
    m = as_mask(mask, "mask")
    sp = check_spacing(spacing, m.ndim)
    _check_width(width_mm)
    _check_definition(definition)
    band = np.zeros(m.shape, dtype=bool)
    if not m.any():
        return band
    box = nonempty_box(m)
    band[box] = _band_padded(np.pad(m[box], 1), sp, width_mm, definition)[(slice(1, -1),) * m.ndim]
    return band


def _check_width(width_mm: float) -> None:
    if not (width_mm > 0) or math.isnan(width_mm):
        raise ValueError(f"width_mm must be > 0 (mm), got {width_mm}")


def check_band_width(width_mm: float, spacing: Sequence[float], definition: str = "distance") -> None:
    """``ValueError`` naming ``width_mm`` when the ``"distance"`` band of that width holds no voxel
    of any mask at ``spacing`` (mm per axis): a contour voxel's centre lies at least the smallest
    spacing from the nearest outside voxel centre, so a narrower band is empty and boundary IoU
    0/0. MetricsReloaded's band always holds the contour layer."""
    smallest = min(float(s) for s in spacing)
    if definition == "distance" and width_mm * (1.0 + _WIDTH_RTOL) < smallest:
        raise ValueError(f"width_mm {width_mm:g} is below the smallest voxel spacing {smallest:g} mm: the boundary "
                         f"band holds no voxel; give a width of at least {smallest:g} mm (or the "
                         "'metricsreloaded' definition)")


def _check_definition(definition: str) -> None:
    if definition not in BOUNDARY_DEFINITIONS:
        raise ValueError(f"definition must be one of {BOUNDARY_DEFINITIONS}, got {definition!r}")


def _band_padded(mask: np.ndarray, spacing: tuple[float, ...], width_mm: float, definition: str) -> np.ndarray:
    """Band of ``mask``, which must already have at least one background voxel on every side."""
    if math.isinf(width_mm):
        return mask.copy()
    limit = width_mm * (1.0 + _WIDTH_RTOL)
    if definition == "distance":
        # Distance (mm) from each mask voxel to the nearest background voxel centre; 0 outside.
        dt = ndimage.distance_transform_edt(mask, sampling=spacing)
        return mask & (dt <= limit)
    # "metricsreloaded": border = mask minus its cross-structuring-element erosion (outside of the
    # array = background, which the padding provides), then the distance to the nearest border voxel.
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    border = mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)
    dist = ndimage.distance_transform_edt(~border, sampling=spacing)
    # Strictly below the width, as MetricsReloaded; the tolerance goes the other way here.
    return mask & (dist < width_mm * (1.0 - _WIDTH_RTOL))


def boundary_iou(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    width_mm: float,
    *,
    definition: BoundaryDefinition = "distance",
) -> float:
    """Boundary IoU of ``pred`` against ``gt`` (dimensionless, in [0, 1]; 1 is best).

    ``spacing``: voxel size in mm per array axis. ``width_mm``: band width in mm (``> 0``; a width
    at least as deep as both objects, or ``inf``, gives the plain IoU). ``definition``:
    ``"distance"`` (default; voxels whose centre lies within ``width_mm`` of the nearest outside
    voxel centre, so ``width_mm`` = one isotropic spacing is the one-voxel contour layer) or
    ``"metricsreloaded"`` (MetricsReloaded's erosion border plus distance ``< width_mm`` to it; with
    unit spacing and ``width_mm = boundary_dist`` this reproduces its value exactly). Both masks must
    be non-empty, and a ``"distance"`` width at least the smallest spacing (``ValueError`` otherwise,
    :func:`check_band_width`).
    """
    p, g = _check_pair(pred, gt)
    sp = check_spacing(spacing, p.ndim)
    _check_width(width_mm)
    _check_definition(definition)
    check_band_width(width_mm, sp, definition)
    box = nonempty_box(p | g)
    pc = np.pad(p[box], 1)
    gc = np.pad(g[box], 1)
    pb = _band_padded(pc, sp, width_mm, definition)
    gb = _band_padded(gc, sp, width_mm, definition)
    inter = int(np.count_nonzero(pb & gb))
    union = int(np.count_nonzero(pb | gb))
    return inter / union  # union > 0: each band holds at least the mask's outermost voxels


# --------------------------------------------------------------------------------------------
# Centreline Dice


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton (bool) of a 2D or 3D mask with ``skimage.morphology.skeletonize`` (Zhang in 2D,
    Lee in 3D). A non-empty mask whose skeleton is empty is returned as its own skeleton."""
    from skimage.morphology import skeletonize  # scikit-image: imported only where needed

    m = as_mask(mask, "mask")
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    box = nonempty_box(m)
    # Thinning only looks at the 3x3(x3) neighbourhoods, so the padded bounding box is enough.
    skel_box = np.asarray(skeletonize(np.pad(m[box], 1)), dtype=bool)[(slice(1, -1),) * m.ndim]
    if not skel_box.any():
        skel_box = m[box]
    out = np.zeros(m.shape, dtype=bool)
    out[box] = skel_box
    return out


def topology_precision_sensitivity(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(Tprec, Tsens)`` of clDice: ``|S(P) ∩ G| / |S(P)|`` and ``|S(G) ∩ P| / |S(G)|`` (both in
    [0, 1]). Both masks must be non-empty (``ValueError`` otherwise)."""
    p, g = _check_pair(pred, gt)
    sp_ = skeleton(p)
    sg = skeleton(g)
    tprec = np.count_nonzero(sp_ & g) / np.count_nonzero(sp_)
    tsens = np.count_nonzero(sg & p) / np.count_nonzero(sg)
    return float(tprec), float(tsens)


def cl_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Centreline Dice (dimensionless, in [0, 1]; 1 is best): harmonic mean of the topology precision
    and sensitivity (see :func:`topology_precision_sensitivity`), 0 when both are 0. Both masks must
    be non-empty (``ValueError`` otherwise). Voxel spacing does not enter."""
    tprec, tsens = topology_precision_sensitivity(pred, gt)
    if tprec + tsens == 0:
        return 0.0
    return 2.0 * tprec * tsens / (tprec + tsens)


# --------------------------------------------------------------------------------------------
# Centre of mass


def centre_of_mass_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Centroid of a non-empty mask in mm (mean voxel index per axis times the spacing), shape
    ``(ndim,)``; voxel ``(0, 0[, 0])`` has its centre at the origin."""
    m = as_mask(mask, "mask")
    sp = check_spacing(spacing, m.ndim)
    total = np.count_nonzero(m)
    if total == 0:
        raise ValueError("mask is empty; its centre of mass is undefined")
    centre = np.empty(m.ndim, dtype=np.float64)
    for axis in range(m.ndim):
        other = tuple(a for a in range(m.ndim) if a != axis)
        counts = np.count_nonzero(m, axis=other).astype(np.float64)  # voxels per index along axis
        centre[axis] = float(np.dot(counts, np.arange(m.shape[axis], dtype=np.float64))) / total * sp[axis]
    return centre


def com_distance(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Euclidean distance in mm between the centres of mass of ``pred`` and ``gt`` (0 is best).

    ``spacing``: voxel size in mm per array axis. Both masks must be non-empty (``ValueError``
    otherwise).
    """
    p, g = _check_pair(pred, gt)
    sp = check_spacing(spacing, p.ndim)
    return float(np.linalg.norm(centre_of_mass_mm(p, sp) - centre_of_mass_mm(g, sp)))


__all__ = [
    "BOUNDARY_DEFINITIONS",
    "BoundaryDefinition",
    "boundary_band",
    "boundary_iou",
    "centre_of_mass_mm",
    "cl_dice",
    "com_distance",
    "skeleton",
    "topology_precision_sensitivity",
]
