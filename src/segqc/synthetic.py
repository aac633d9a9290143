"""Generated label maps with known structure: multi-lesion volumes and multi-class phantoms.

Used by the demo, tests and benchmarks. Every function takes a ``numpy.random.Generator`` (or a
seed) and draws objects on local crops, so that even 512x512x300 volumes are made in well under a
second per hundred objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def paint_ellipsoid(
    volume: np.ndarray,
    centre: Sequence[float] | np.ndarray,
    radii_vox: Sequence[float] | np.ndarray,
    value: int | bool = 1,
) -> None:
    """Set the voxels of an axis-aligned ellipsoid (radii in voxels per axis) to ``value``, in place."""
    lo = [max(0, int(np.floor(c - r))) for c, r in zip(centre, radii_vox)]
    hi = [min(s, int(np.ceil(c + r)) + 1) for c, r, s in zip(centre, radii_vox, volume.shape)]
    if any(h <= low for low, h in zip(lo, hi)):
        return
    box = tuple(slice(low, h) for low, h in zip(lo, hi))
    grids = np.ogrid[box]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii_vox)) <= 1.0
    crop = volume[box]
    crop[inside] = value


@dataclass(frozen=True)
class Lesion:
    centre: tuple[float, ...]
    radius_mm: float


def lesion_volume(
    shape: Sequence[int],
    spacing: Sequence[float],
    n_lesions: int,
    *,
    radius_mm: tuple[float, float] = (2.0, 20.0),
    seed: int | np.random.Generator = 0,
) -> tuple[np.ndarray, list[Lesion]]:
    """Binary volume with ``n_lesions`` balls (round in mm) at random positions."""
    rng = _rng(seed)
    volume = np.zeros(tuple(shape), dtype=bool)
    lesions = []
    sp = np.asarray(spacing, dtype=float)
    for _ in range(n_lesions):
        radius = rng.uniform(*radius_mm)
        radii_vox = radius / sp
        margin = np.minimum(radii_vox + 1, (np.asarray(shape) - 1) / 2)
        centre = tuple(rng.uniform(m, s - 1 - m) for m, s in zip(margin, shape))
        paint_ellipsoid(volume, centre, radii_vox)
        lesions.append(Lesion(centre, radius))
    return volume, lesions


def imperfect_lesion_prediction(
    gt: np.ndarray,
    spacing: Sequence[float],
    lesions: Sequence[Lesion],
    *,
    seed: int | np.random.Generator = 0,
    p_drop: float = 0.15,
    p_erode: float = 0.2,
    p_dilate: float = 0.2,
    p_shift: float = 0.2,
    added_fraction: float = 0.1,
) -> np.ndarray:
    """A prediction of a lesion volume with realistic errors, drawn per lesion: dropped (missed),
    eroded or dilated by 1-2 voxels, shifted by 1-3 voxels, or kept; plus added false-positive
    lesions (``added_fraction`` of the lesion count)."""
    rng = _rng(seed)
    sp = np.asarray(spacing, dtype=float)
    pred = np.zeros_like(gt, dtype=bool)
    structure = ndimage.generate_binary_structure(gt.ndim, 1)
    for lesion in lesions:
        radii = lesion.radius_mm / sp
        u = rng.random()
        if u < p_drop:
            continue
        one = np.zeros_like(gt, dtype=bool)
        centre = np.asarray(lesion.centre, dtype=float)
        if u < p_drop + p_shift:
            centre = centre + rng.integers(1, 4) * rng.choice([-1, 1], size=gt.ndim) * (rng.random(gt.ndim) < 0.6)
        paint_ellipsoid(one, centre, radii)
        lo = [max(0, int(c - r) - 4) for c, r in zip(centre, radii)]
        hi = [min(s, int(c + r) + 5) for c, r, s in zip(centre, radii, gt.shape)]
        box = tuple(slice(low, h) for low, h in zip(lo, hi))
        if p_drop + p_shift <= u < p_drop + p_shift + p_erode:
            one[box] = ndimage.binary_erosion(one[box], structure, iterations=int(rng.integers(1, 3)))
        elif p_drop + p_shift + p_erode <= u < p_drop + p_shift + p_erode + p_dilate:
            one[box] = ndimage.binary_dilation(one[box], structure, iterations=int(rng.integers(1, 3)))
        pred |= one
    n_added = int(round(added_fraction * len(lesions)))
    if n_added:
        extra, _ = lesion_volume(gt.shape, spacing, n_added, radius_mm=(2.0, 8.0), seed=rng)
        pred |= extra
    return pred


def multiclass_phantom(
    shape: Sequence[int] = (96, 96, 48),
    spacing: Sequence[float] = (1.0, 1.0, 2.5),
    *,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """A 3-class heart-like phantom (uint8): 1 = a cavity, 2 = a wall around it, 3 = a second
    cavity beside it, with randomly drawn sizes (round in mm)."""
    rng = _rng(seed)
    sp = np.asarray(spacing, dtype=float)
    shape = tuple(shape)
    label = np.zeros(shape, dtype=np.uint8)
    centre = np.asarray(shape, dtype=float) / 2 + rng.uniform(-3, 3, len(shape))
    outer = rng.uniform(14, 18)
    inner = outer - rng.uniform(4, 6)
    paint_ellipsoid(label, centre, outer / sp, 2)
    paint_ellipsoid(label, centre, inner / sp, 3)
    side = centre.copy()
    side[0] -= (outer + rng.uniform(8, 12)) / sp[0]
    paint_ellipsoid(label, side, rng.uniform(8, 11) / sp, 1)
    return label


def imperfect_multiclass_prediction(label: np.ndarray, *, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A flawed prediction of a multi-class map: a shifted copy with one class eroded, another
    dilated into the background, and a spurious blob."""
    rng = _rng(seed)
    pred = np.roll(label, int(rng.integers(1, 3)), axis=0)
    structure = ndimage.generate_binary_structure(label.ndim, 1)
    eroded = ndimage.binary_erosion(pred == 1, structure, iterations=2)
    pred[(pred == 1) & ~eroded] = 0
    grown = ndimage.binary_dilation(pred == 3, structure, iterations=1) & (pred == 0)
    pred[grown] = 3
    blob = np.zeros(label.shape, dtype=bool)
    paint_ellipsoid(blob, [s * 0.8 for s in label.shape], [3] * label.ndim)
    pred[blob] = 2
    return pred
