"""QCResUNet "SegGen": random rotation, scaling, translation and elastic deformation of a label map.

QCResUNet (section 2.2, table 2) makes segmentations of varied quality by transforming the ground
truth: rotation in [-15°, 15°], scaling in [0.85, 1.25], translation in [-20, 20] voxels and an
elastic deformation with displacements in [-20, 20] voxels, each applied with probability 0.5.
:func:`seggen` does exactly that; :func:`affine` and :func:`elastic` are the explicit-parameter
transforms it is made of.

Conventions (see :mod:`segqc.degrade.operations`): transforms are physical (mm, so anisotropic
voxels are handled), about the centroid of the foreground, with nearest-neighbour sampling of the
labels (no new label values, no blurring) and background outside the array. Rotations are
in-plane: about the slice axis of an anisotropic 3D map (the axis of largest spacing, e.g. ACDC's
10 mm axis), about the last axis of an isotropic one, in the plane of a 2D map. On an anisotropic
3D map scaling, translation and deformation act in-plane too. Voxel distances ("20 voxels") are
voxels of the finest axis, i.e. ``20 * min(spacing)`` mm.

For Dice targeting the module also offers the four transforms as *strength-scaled* operations
with the common signature ``op(label, rng, strength, *, spacing, target=None, labels=None)``
(:data:`SEGGEN_OPERATIONS`): at strength ``s`` the magnitude is ``s`` times the table's maximum
(rotation ``15 s`` degrees with a random sign; scale ``1 + 0.25 s`` or ``1 - 0.15 s``;
translation ``20 s`` voxels in a random in-plane direction; control-point displacements uniform
in ``[-20 s, 20 s]`` voxels), so strengths 0..1 sweep exactly the table's ranges. With a
``target`` only those classes move (vacated voxels become background).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from segqc.degrade.operations import (
    Operation,
    PerAxis,
    Target,
    _check,
    _shift_array,
    _targets,
    as_rng,
    motion_axes,
    slice_axis,
    upsample,
)

__all__ = [
    "SEGGEN_OPERATIONS",
    "SEGGEN_RANGES",
    "affine",
    "elastic",
    "rotate",
    "scale",
    "seggen",
    "translate",
    "deform",
]

#: QCResUNet table 2: parameter ranges and the probability of each transform.
SEGGEN_RANGES = {
    "rotation_deg": (-15.0, 15.0),
    "scale": (0.85, 1.25),
    "translation_vox": (-20.0, 20.0),
    "displacement_vox": (-20.0, 20.0),
    "probability": 0.5,
}


def _rotation_plane(spacing: np.ndarray, ndim: int) -> tuple[int, int]:
    if ndim == 2:
        return (0, 1)
    k = slice_axis(spacing)
    axes = [d for d in range(3) if d != (k if k is not None else 2)]
    return axes[0], axes[1]


def _centroid_mm(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    if not mask.any():
        return (np.asarray(mask.shape) - 1) / 2.0 * spacing
    return np.asarray(ndimage.center_of_mass(mask)) * spacing


def _moving_part(label: np.ndarray, target: Target) -> tuple[np.ndarray, np.ndarray | None]:
    """(array to transform, mask of the voxels it replaces or None for the whole map)."""
    if target is None:
        return label, None
    classes = _targets(label, target)
    moving = np.isin(label, classes)
    return np.where(moving, label, 0).astype(label.dtype), moving


def _paste(label: np.ndarray, moved: np.ndarray, moving: np.ndarray | None) -> np.ndarray:
    if moving is None:
        return moved
    out = label.copy()
    out[moving] = 0
    keep = moved != 0
    out[keep] = moved[keep]
    return out


def affine(
    label: np.ndarray,
    *,
    spacing: PerAxis,
    angle_deg: float = 0.0,
    scale: float = 1.0,
    translation_vox: PerAxis | None = None,
    centre_mm: PerAxis | None = None,
    target: Target = None,
) -> np.ndarray:
    """Rotate (in-plane, degrees: a positive ``angle_deg`` turns the first in-plane array axis
    towards the second), scale (about the centre) and translate a label map.

    ``translation_vox``: per-axis move in voxels of the finest axis (``None`` = none; on an
    anisotropic 3D map the slice-axis entry is ignored). ``centre_mm``: centre of rotation and
    scaling in mm from voxel 0 (default: centroid of the moving foreground). Nearest-neighbour
    sampling; background enters from outside the array. ``scale`` acts in-plane on anisotropic 3D
    maps, on all axes otherwise.
    """
    label, _, sp = _check(label, 0.0, spacing)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    source, moving = _moving_part(label, target)
    ndim = label.ndim
    axes = motion_axes(sp) if ndim == 3 else (0, 1)
    centre = np.asarray(centre_mm, dtype=float) if centre_mm is not None else _centroid_mm(source != 0, sp)
    rotation = np.eye(ndim)
    a, b = _rotation_plane(sp, ndim)
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = cos, -sin, sin, cos
    scaling = np.ones(ndim)
    scaling[list(axes)] = scale
    shift_mm = np.zeros(ndim)
    if translation_vox is not None:
        t = np.asarray(translation_vox, dtype=float)
        if t.shape != (ndim,):
            raise ValueError(f"translation_vox needs {ndim} values, got {tuple(translation_vox)}")
        shift_mm[list(axes)] = t[list(axes)] * sp.min()
    # forward map in mm: y = c + R S (x - c) + t  ->  x = c + S^-1 R^T (y - c - t)
    forward_inv = np.diag(1.0 / scaling) @ rotation.T
    matrix = np.diag(1.0 / sp) @ forward_inv @ np.diag(sp)
    offset = (centre - forward_inv @ (centre + shift_mm)) / sp
    if np.allclose(matrix, np.eye(ndim)) and np.allclose(offset, np.rint(offset)):
        moved = _shift_array(source, -np.rint(offset).astype(int))
    else:
        moved = ndimage.affine_transform(source, matrix, offset=offset, order=0, mode="constant", cval=0,
                                         output=source.dtype)
    return _paste(label, moved, moving)


def _displacement_field(shape: Sequence[int], sp: np.ndarray, rng: np.random.Generator, max_vox: float,
                        grid_vox: float | None) -> list[np.ndarray | None]:
    """Smooth per-axis displacement (in voxels of each axis) from random control points."""
    ndim = len(shape)
    axes = motion_axes(sp) if ndim == 3 else (0, 1)
    max_mm = max_vox * sp.min()
    step_mm = (grid_vox if grid_vox is not None else max(3.0 * max_vox, 8.0)) * sp.min()
    n_ctrl = [max(4 if d in axes else 2, int(round(n * s / step_mm)) + 1) for d, (n, s) in enumerate(zip(shape, sp))]
    fields: list[np.ndarray | None] = []
    draws = {d: rng.uniform(-1.0, 1.0, size=n_ctrl) for d in axes}
    for d in range(ndim):
        if d not in axes:
            fields.append(None)
            continue
        limit = max_mm / sp[d]
        fields.append(np.clip(upsample(draws[d] * limit, shape, cubic=True), -limit, limit))
    return fields


def elastic(
    label: np.ndarray,
    rng: np.random.Generator | int,
    *,
    spacing: PerAxis,
    max_displacement_vox: float = 20.0,
    grid_vox: float | None = None,
    target: Target = None,
) -> np.ndarray:
    """Elastic deformation: smooth displacements up to ``max_displacement_vox`` voxels (finest axis).

    Control points ``grid_vox`` voxels apart (default 3x the maximum displacement, at least 4
    per axis) get displacements uniform in ``[-max, max]`` per moving axis; a cubic spline gives
    the dense field; labels are sampled nearest-neighbour. In-plane on anisotropic 3D maps.
    """
    label, _, sp = _check(label, 0.0, spacing)
    rng = as_rng(rng)
    source, moving = _moving_part(label, target)
    fields = _displacement_field(label.shape, sp, rng, float(max_displacement_vox), grid_vox)
    if max_displacement_vox == 0:
        return label.copy()
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in label.shape], indexing="ij")
    coords = [g + f.astype(np.float32) if f is not None else g for g, f in zip(grid, fields)]
    moved = ndimage.map_coordinates(source, coords, order=0, mode="constant", cval=0, output=source.dtype)
    return _paste(label, moved, moving)


def seggen(
    label: np.ndarray,
    rng: np.random.Generator | int,
    *,
    spacing: PerAxis,
    probability: float = 0.5,
    rotation_deg: tuple[float, float] = (-15.0, 15.0),
    scale_range: tuple[float, float] = (0.85, 1.25),
    translation_vox: tuple[float, float] = (-20.0, 20.0),
    displacement_vox: tuple[float, float] = (-20.0, 20.0),
) -> tuple[np.ndarray, list[str]]:
    """QCResUNet SegGen: each transform with probability ``probability``, parameters uniform in
    the ranges (QCResUNet table 2). Returns the map and the transforms applied, as text
    (e.g. ``["rotation(deg=-7.31)", "elastic(max_vox=20)"]``); possibly none.

    The deformation draws every control-point displacement uniformly in ``displacement_vox``
    (see :func:`elastic`).
    """
    label, _, sp = _check(label, 0.0, spacing)
    rng = as_rng(rng)
    ndim = label.ndim
    axes = motion_axes(sp) if ndim == 3 else (0, 1)
    done: list[str] = []
    angle, factor, move = 0.0, 1.0, np.zeros(ndim)
    if rng.random() < probability:
        angle = float(rng.uniform(*rotation_deg))
        done.append(f"rotation(deg={angle:.2f})")
    if rng.random() < probability:
        factor = float(rng.uniform(*scale_range))
        done.append(f"scaling(factor={factor:.3f})")
    if rng.random() < probability:
        move[list(axes)] = rng.uniform(*translation_vox, size=len(axes))
        done.append("translation(vox=" + ",".join(f"{m:.1f}" for m in move) + ")")
    out = label
    if angle != 0.0 or factor != 1.0 or move.any():
        out = affine(label, spacing=sp, angle_deg=angle, scale=factor, translation_vox=move)
    if rng.random() < probability:
        magnitude = float(max(abs(displacement_vox[0]), abs(displacement_vox[1])))
        out = elastic(out, rng, spacing=sp, max_displacement_vox=magnitude)
        done.append(f"elastic(max_vox={magnitude:g})")
    return (out.copy() if out is label else out), done


# --------------------------------------------------------------------------------------------
# Strength-scaled forms for targeting
# --------------------------------------------------------------------------------------------


def rotate(label, rng, strength, *, spacing, target: Target = None, labels=None, max_deg: float = 15.0):
    """In-plane rotation by ``strength * max_deg`` degrees (random sign) about the centroid."""
    label, strength, sp = _check(label, strength, spacing)
    rng = as_rng(rng)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if strength == 0:
        return label.copy()
    return affine(label, spacing=sp, angle_deg=sign * strength * max_deg, target=target)


def scale(label, rng, strength, *, spacing, target: Target = None, labels=None,
          range_: tuple[float, float] = (0.85, 1.25)):
    """Scaling about the centroid: by ``1 + s (max - 1)`` or ``1 - s (1 - min)`` (random choice)."""
    label, strength, sp = _check(label, strength, spacing)
    rng = as_rng(rng)
    grow = rng.random() < 0.5
    if strength == 0:
        return label.copy()
    factor = 1.0 + strength * (range_[1] - 1.0) if grow else 1.0 - strength * (1.0 - range_[0])
    return affine(label, spacing=sp, scale=factor, target=target)


def translate(label, rng, strength, *, spacing, target: Target = None, labels=None, max_vox: float = 20.0):
    """Translation by ``strength * max_vox`` voxels (finest axis) in a random in-plane direction."""
    label, strength, sp = _check(label, strength, spacing)
    rng = as_rng(rng)
    axes = motion_axes(sp) if label.ndim == 3 else (0, 1)
    direction = np.zeros(label.ndim)
    direction[list(axes)] = rng.standard_normal(len(axes))
    direction /= np.linalg.norm(direction) or 1.0
    if strength == 0:
        return label.copy()
    return affine(label, spacing=sp, translation_vox=strength * max_vox * direction, target=target)


def deform(label, rng, strength, *, spacing, target: Target = None, labels=None, max_vox: float = 20.0):
    """Elastic deformation with control-point displacements up to ``strength * max_vox`` voxels.

    The control grid does not depend on ``strength`` (it is set by ``max_vox``), so the random
    field is the same and only its amplitude grows.
    """
    label, strength, sp = _check(label, strength, spacing)
    rng = as_rng(rng)
    source, moving = _moving_part(label, target)
    fields = _displacement_field(label.shape, sp, rng, float(max_vox), None)
    if strength == 0:
        return label.copy()
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in label.shape], indexing="ij")
    coords = [g + np.float32(strength) * f.astype(np.float32) if f is not None else g for g, f in zip(grid, fields)]
    moved = ndimage.map_coordinates(source, coords, order=0, mode="constant", cval=0, output=source.dtype)
    return _paste(label, moved, moving)


#: The SegGen transforms as strength-scaled operations (module docstring).
SEGGEN_OPERATIONS: dict[str, Operation] = {
    "rotate": rotate,
    "scale": scale,
    "translate": translate,
    "elastic": deform,
}
