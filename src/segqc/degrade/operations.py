"""Synthetic segmentation errors: one pure function per error type, 2D and 3D, seeded.

Every operation has the same signature::

    op(label, rng, strength, *, spacing, target=None, labels=None) -> new label map

* ``label``: integer label map (0 = background), 2D or 3D, never modified; the result has the
  same shape and dtype.
* ``rng``: a ``numpy.random.Generator`` or an integer seed. The same seed and arguments give the
  same result, and for a fixed seed the damage grows with ``strength`` (the random draws do not
  depend on it), which is what :mod:`segqc.degrade.targeting` relies on to search strengths.
* ``strength`` in ``[0, 1]``: 0 leaves the map unchanged; 1 is the operation's maximum (see each
  function).
* ``spacing``: voxel size in mm per array axis; sizes and distances are physical (mm).
* ``target``: the class (or classes) the operation acts on; ``None`` = every class present.
* ``labels``: the dataset's foreground labels (e.g. from ``dataset.json``); operations that
  invent labels (class swap, collapse, false positives) draw from them. ``None`` = the classes
  present in ``label``.

Anisotropic volumes: a 3D map whose largest spacing is at least twice its smallest has a *slice
axis* (the axis of largest spacing; e.g. ACDC's 10 mm axis). Motions (shifts, and the SegGen
rotation/translation/elastic deformation in :mod:`segqc.degrade.seggen`) then stay in-plane:
moving a structure by whole thick slices is not how segmentations fail. Isotropic 3D maps move in
all three axes (rotations are about the last axis).

Spatially coherent choices (which voxels become holes, which false positives appear, which part
of a class is swapped) use a smooth random field: the voxels with the lowest field values are
taken first, so the affected voxels form blobs and grow monotonically with ``strength``.

Operations work on whatever array they are given; for speed, :mod:`.targeting` hands them the
bounding box of the foreground plus a margin. ``segqc.degrade.OPERATIONS`` maps names to these
functions and to the strength-scaled SegGen transforms of :mod:`segqc.degrade.seggen`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from segqc.metrics.multiclass import present_labels  # also re-exported for degrade.folder/targeting

__all__ = [
    "NNQC_OPERATIONS",
    "Operation",
    "PerAxis",
    "boundary",
    "collapse",
    "dilation",
    "erosion",
    "false_positives_far",
    "false_positives_near",
    "holes",
    "motion_axes",
    "shift",
    "slice_axis",
    "smooth_field",
    "split",
    "swap",
    "upsample",
]

Operation = Callable[..., np.ndarray]
Target = int | Iterable[int] | None
#: One value per axis (voxel spacing in mm, a move in voxels): a sequence or a 1-D array.
PerAxis = Sequence[float] | np.ndarray


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    """A Generator from a Generator or an integer seed."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(label: np.ndarray, strength: float, spacing: PerAxis) -> tuple[np.ndarray, float, np.ndarray]:
    label = np.asarray(label)
    if label.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {label.shape}")
    if label.dtype.kind not in "iub":
        raise ValueError(f"expected an integer label map, got dtype {label.dtype}")
    spacing_arr = np.asarray(spacing, dtype=float)
    if spacing_arr.shape != (label.ndim,) or not np.all(spacing_arr > 0):
        raise ValueError(f"spacing {tuple(spacing)} does not fit a {label.ndim}D map")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return label, strength, spacing_arr


def _targets(label: np.ndarray, target: Target) -> list[int]:
    present = present_labels(label)
    if target is None:
        return present
    return [t for t in _as_labels(target) if t in present]


def _as_labels(target: int | Iterable[int]) -> list[int]:
    """A label or labels as a list of ints."""
    return [int(t) for t in target] if isinstance(target, Iterable) else [int(target)]


def _label_pool(label: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    pool = sorted({int(v) for v in labels if int(v) != 0}) if labels is not None else []
    return pool or present_labels(label)


def slice_axis(spacing: PerAxis) -> int | None:
    """The slice axis of an anisotropic 3D grid (largest spacing >= 2x the smallest), else None."""
    s = np.asarray(spacing, dtype=float)
    if s.size != 3:
        return None
    k = int(np.argmax(s))
    return k if s[k] >= 2.0 * s.min() else None


def motion_axes(spacing: PerAxis) -> tuple[int, ...]:
    """Axes along which structures are moved: all but the slice axis (module docstring)."""
    k = slice_axis(spacing)
    return tuple(d for d in range(len(spacing)) if d != k)


def upsample(coarse: np.ndarray, shape: Sequence[int], *, cubic: bool = False) -> np.ndarray:
    """Interpolate a coarse grid onto ``shape`` (corners aligned), separably, one axis at a time.

    Linear (a two-tap gather per axis), or a cubic spline with ``cubic=True`` (a small dense
    matrix per axis; meant for control-point grids of a few points). An axis of one sample is
    broadcast. Much cheaper than ``ndimage.zoom`` for the large factors of random fields.
    """
    out = np.asarray(coarse, dtype=np.float32)
    for d, n in enumerate(shape):
        c = out.shape[d]
        n = int(n)
        if c == 1:
            out = np.repeat(out, n, axis=d)
            continue
        x = np.linspace(0.0, c - 1.0, n)
        if cubic and 4 <= c <= 64:
            from scipy.interpolate import CubicSpline

            weights = CubicSpline(np.arange(c), np.eye(c), axis=0)(x).astype(np.float32)
            out = np.moveaxis(np.tensordot(weights, out, axes=(1, d)), 0, d)
            continue
        i0 = np.minimum(np.floor(x).astype(np.intp), c - 2)
        w = (x - i0).astype(np.float32).reshape([-1 if a == d else 1 for a in range(out.ndim)])
        out = np.take(out, i0, axis=d) * (1.0 - w) + np.take(out, i0 + 1, axis=d) * w
    return np.ascontiguousarray(out)


def smooth_field(shape: Sequence[int], spacing: PerAxis, sigma_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field (mean 0, std 1, float32) with correlation length ``sigma_mm``: white
    noise smoothed by a Gaussian of standard deviation ``sigma_mm`` (mm, on every axis whatever the
    spacing), so two points ``d`` mm apart correlate about ``exp(-d² / (4 sigma_mm²))``.

    Drawn on a coarse grid (step ``sigma/1.5`` voxels per axis, at least one voxel), smoothed there
    and interpolated linearly to ``shape``, so the cost follows the number of correlation lengths,
    not of voxels.
    """
    shape = tuple(int(n) for n in shape)
    sigma_vox = np.maximum(sigma_mm / np.asarray(spacing, dtype=float), 1e-6)
    step = np.maximum(1.0, sigma_vox / 1.5)
    coarse_shape = tuple(max(2, int(math.ceil(n / st)) + 1) for n, st in zip(shape, step))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma=sigma_vox / step, mode="wrap")
    field = upsample(coarse, shape)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _box(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``pad`` voxels per axis (clipped), or None if empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return None
    return tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(found[0], pad, mask.shape))


def _lowest(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``round(fraction * n)`` smallest entries of a 1-D array (stable ties)."""
    n = values.size
    k = int(round(fraction * n))
    out = np.zeros(n, dtype=bool)
    if k <= 0:
        return out
    if k >= n:
        out[:] = True
        return out
    out[np.argpartition(values, k - 1)[:k]] = True
    return out


def _equivalent_radius_mm(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Radius (mm) of the ball (3D) or disc (2D) with the volume of ``mask``.

    With a slice axis (anisotropic 3D) it is the disc of the mean area per occupied slice: thin
    stacks of slices are flat, and motions are in-plane there.
    """
    n_voxels = int(np.count_nonzero(mask))
    volume = n_voxels * float(np.prod(spacing))
    if mask.ndim == 2:
        return math.sqrt(volume / math.pi)
    k = slice_axis(spacing)
    if k is not None:
        other = tuple(d for d in range(3) if d != k)
        n_slices = max(1, int(np.count_nonzero(mask.any(axis=other))))
        return math.sqrt(volume / (n_slices * spacing[k]) / math.pi)
    return (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)


def _inside_depth(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from every voxel of ``mask`` to the nearest voxel outside it (0 outside).

    The array border counts as outside, so a structure touching the border erodes from there too.
    """
    padded = np.pad(mask, 1)
    depth = ndimage.distance_transform_edt(padded, sampling=spacing)
    return depth[tuple(slice(1, -1) for _ in range(mask.ndim))]


# --------------------------------------------------------------------------------------------
# nnQC degradations
# --------------------------------------------------------------------------------------------


def holes(label, rng, strength, *, spacing, target: Target = None, labels=None, sigma_mm: float = 4.0):
    """Blank holes inside each target class; the class outline (its one-voxel rim) is kept.

    ``strength`` is the fraction of the class's interior (voxels not on its rim) set to
    background, as blobs of a smooth random field of correlation length ``sigma_mm``; 1 leaves
    only the rim.
    """
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    classes = _targets(label, target)
    field = smooth_field(label.shape, spacing, sigma_mm, rng)
    if strength == 0 or not classes:
        return out
    structure = ndimage.generate_binary_structure(label.ndim, 1)
    one = (1,) * label.ndim
    for c in classes:
        box = _box(label == c, one)
        mask = label[box] == c
        interior = ndimage.binary_erosion(mask, structure, border_value=0)
        idx = np.flatnonzero(interior)
        if idx.size:
            hole = np.zeros(mask.shape, dtype=bool)
            hole.reshape(-1)[idx[_lowest(field[box].reshape(-1)[idx], strength)]] = True
            out[box][hole] = 0
    return out


def erosion(label, rng, strength, *, spacing, target: Target = None, labels=None):
    """Iterative erosion of each target class (spacing-aware ball), eroded voxels -> background.

    Voxels whose distance to the outside of their class is at most ``strength * D`` are removed,
    ``D`` being the class's largest inside distance (its "thickness"): the result of eroding with
    a growing ball in mm. 1 removes the class. Neighbouring classes count as outside.
    """
    label, strength, spacing = _check(label, strength, spacing)
    as_rng(rng)
    out = label.copy()
    if strength == 0:
        return out
    one = (1,) * label.ndim
    for c in _targets(label, target):
        box = _box(label == c, one)
        mask = label[box] == c
        depth = _inside_depth(mask, spacing)
        limit = strength * float(depth.max())
        out[box][mask & (depth <= limit + 1e-9)] = 0
    return out


def dilation(label, rng, strength, *, spacing, target: Target = None, labels=None, max_mm: float | None = None):
    """Dilate each target class by ``strength * R`` mm, over background and other classes.

    ``R`` is ``max_mm`` or, by default, twice the class's equivalent radius (a ball/disc of the
    same volume; at full strength the class grows roughly 9-fold in 2D, 27-fold in 3D). Where
    grown classes meet, a voxel goes to the nearest one.
    """
    label, strength, spacing = _check(label, strength, spacing)
    as_rng(rng)
    out = label.copy()
    classes = _targets(label, target)
    if strength == 0 or not classes:
        return out
    radius = np.zeros(int(max(classes)) + 1)
    for c in classes:
        r = max_mm if max_mm is not None else 2.0 * _equivalent_radius_mm(label == c, spacing)
        radius[c] = strength * r
    all_sources = np.isin(label, classes)
    box = _box(all_sources, [int(math.ceil(radius.max() / s)) + 1 for s in spacing])
    crop = label[box]
    sources = all_sources[box]
    distance, nearest = ndimage.distance_transform_edt(~sources, sampling=spacing, return_indices=True)
    nearest_label = crop[tuple(nearest)]
    grow = ~sources & (distance <= radius[np.where(sources, 0, nearest_label).astype(np.intp)] + 1e-9)
    out[box][grow] = nearest_label[grow]
    return out


def _false_positives(label, rng, strength, spacing, target, labels, *, near: bool, amount: float,
                     near_mm: float, far_mm: float, sigma_mm: float):
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    pool = _targets(label, target) if target is not None else _label_pool(label, labels)
    if not pool:
        pool = _label_pool(label, labels)
    field = smooth_field(label.shape, spacing, sigma_mm, rng)
    fp_class = int(rng.choice(pool)) if pool else 1
    foreground = label != 0
    n_fg = int(np.count_nonzero(foreground))
    if strength == 0 or n_fg == 0:
        return out
    # distances matter only up to the band's edge: compute them on the foreground's box grown by it
    reach = near_mm if near else far_mm
    box = _box(foreground, [int(math.ceil(reach / s)) + 1 for s in spacing])
    distance = ndimage.distance_transform_edt(~foreground[box], sampling=spacing)
    if near:
        region = np.zeros(label.shape, dtype=bool)
        region[box] = (distance > 0) & (distance <= near_mm)
    else:
        region = np.ones(label.shape, dtype=bool)
        region[box] = distance >= far_mm
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return out
    fraction = min(1.0, strength * amount * n_fg / idx.size)
    out.reshape(-1)[idx[_lowest(field.reshape(-1)[idx], fraction)]] = fp_class
    return out


def false_positives_near(label, rng, strength, *, spacing, target: Target = None, labels=None,
                         amount: float = 2.0, near_mm: float = 10.0, sigma_mm: float = 4.0):
    """Random false-positive blobs in the background within ``near_mm`` of the foreground.

    Adds ``strength * amount`` times the foreground volume (fewer if the band is smaller), in
    blobs of one class (``target`` if given, else drawn from ``labels``).
    """
    return _false_positives(label, rng, strength, spacing, target, labels, near=True, amount=amount,
                            near_mm=near_mm, far_mm=0.0, sigma_mm=sigma_mm)


def false_positives_far(label, rng, strength, *, spacing, target: Target = None, labels=None,
                        amount: float = 2.0, far_mm: float = 20.0, sigma_mm: float = 5.0):
    """Random false-positive blobs in the background at least ``far_mm`` from the foreground.

    Adds ``strength * amount`` times the foreground volume (fewer if the far region of the given
    array is smaller), in blobs of one class (``target`` if given, else drawn from ``labels``).
    """
    return _false_positives(label, rng, strength, spacing, target, labels, near=False, amount=amount,
                            near_mm=0.0, far_mm=far_mm, sigma_mm=sigma_mm)


def collapse(label, rng, strength, *, spacing, target: Target = None, labels=None, sigma_mm: float = 8.0):
    """Collapse a multi-class map into one class.

    A fraction ``strength`` of the foreground (coherent blobs) takes one label (``target`` if
    given, else drawn from ``labels``); at 1 the foreground is a single class.
    """
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    pool = _targets(label, target) if target is not None else _label_pool(label, labels)
    if target is not None and not pool:
        pool = _as_labels(target)
    field = smooth_field(label.shape, spacing, sigma_mm, rng)
    if not pool:
        return out
    into = int(rng.choice(pool))
    idx = np.flatnonzero(label.reshape(-1) != 0)
    if strength == 0 or idx.size == 0:
        return out
    out.reshape(-1)[idx[_lowest(field.reshape(-1)[idx], strength)]] = into
    return out


def _derangement(values: list[int], pool: list[int], rng: np.random.Generator) -> dict[int, int]:
    """Map every value to a different label of ``pool`` (a permutation when pool == values)."""
    pool = sorted(set(pool) | set(values))
    if len(pool) < 2:
        return {v: v for v in values}
    for _ in range(100):
        perm = rng.permutation(pool)
        mapping = dict(zip(pool, (int(p) for p in perm)))
        if all(mapping[v] != v for v in values):
            return {v: mapping[v] for v in values}
    return {v: pool[(pool.index(v) + 1) % len(pool)] for v in values}  # cyclic shift: always valid


def swap(label, rng, strength, *, spacing, target: Target = None, labels=None, sigma_mm: float = 8.0):
    """Swap classes: a random permutation of the labels with no fixed point on the target classes.

    A fraction ``strength`` of each target class (coherent blobs) is relabelled; at 1 the class
    volumes are permuted exactly. Labels come from ``labels`` (so a class can be swapped with a
    dataset class absent from this map).
    """
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    classes = _targets(label, target)
    pool = _label_pool(label, labels)
    mapping = _derangement(classes, pool, rng) if classes else {}
    field = smooth_field(label.shape, spacing, sigma_mm, rng)
    if strength == 0:
        return out
    flat_label, flat_out, flat_field = label.reshape(-1), out.reshape(-1), field.reshape(-1)
    for c, new in mapping.items():
        idx = np.flatnonzero(flat_label == c)
        flat_out[idx[_lowest(flat_field[idx], strength)]] = new
    return out


def boundary(label, rng, strength, *, spacing, target: Target = None, labels=None,
             max_mm: float | None = None, sigma_mm: float | None = None):
    """Boundary perturbation: move the target classes' surfaces by a smooth random displacement.

    Each class's signed distance (mm, negative inside) plus ``strength * A * n`` is thresholded
    at 0, ``n`` one smooth random field in [-1, 1] shared by the classes (so touching boundaries
    move together) with correlation length ``sigma_mm`` (default a third of the classes' mean
    equivalent radius, at least 3 mm) and ``A`` = ``max_mm`` (default the class's equivalent
    radius): surfaces move in and out by up to ``strength * A`` mm. Voxels a class leaves become
    background; a voxel claimed by several classes goes to the one it is deepest inside.
    """
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    classes = _targets(label, target)
    radii = {c: _equivalent_radius_mm(label == c, spacing) for c in classes}
    sigma = sigma_mm if sigma_mm is not None else max(3.0, float(np.mean(list(radii.values()) or [9.0])) / 3.0)
    field = np.clip(smooth_field(label.shape, spacing, sigma, rng) / 2.0, -1.0, 1.0)
    if strength == 0 or not classes:
        return out
    best = np.zeros(label.shape, dtype=np.float32)
    owner = np.zeros(label.shape, dtype=label.dtype)
    for c in classes:
        amplitude = strength * (max_mm if max_mm is not None else radii[c])
        # only voxels within `amplitude` of the surface can change: work on that box
        box = _box(label == c, [int(math.ceil(amplitude / s)) + 1 for s in spacing])
        mask = label[box] == c
        signed = ndimage.distance_transform_edt(~mask, sampling=spacing) - _inside_depth(mask, spacing)
        psi = (signed + amplitude * field[box]).astype(np.float32)
        best_box, owner_box = best[box], owner[box]
        claim = psi < best_box
        owner_box[claim] = c
        best_box[claim] = psi[claim]
    out[np.isin(label, classes)] = 0
    claimed = owner != 0
    out[claimed] = owner[claimed]
    return out


def split(label, rng, strength, *, spacing, target: Target = None, labels=None):
    """Split each target class in two: a gap (background) along a random plane through its centre.

    The plane's normal is random (in-plane for anisotropic 3D maps); voxels within
    ``strength * E / 4`` mm of the plane are removed, ``E`` the class's extent along the normal,
    so at 1 half the extent is gone.
    """
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    axes = motion_axes(spacing) if label.ndim == 3 else (0, 1)
    for c in _targets(label, target):
        normal = np.zeros(label.ndim)
        normal[list(axes)] = rng.standard_normal(len(axes))
        normal /= np.linalg.norm(normal) or 1.0
        if strength == 0:
            continue
        idx = np.nonzero(label == c)
        points = np.stack(idx, axis=1) * spacing
        projection = (points - points.mean(axis=0)) @ normal
        extent = float(projection.max() - projection.min())
        gap = np.abs(projection) <= strength * extent / 4.0
        out[tuple(i[gap] for i in idx)] = 0
    return out


def _shift_array(mask: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """``mask`` moved by an integer voxel offset; what leaves the array is lost (no wrap)."""
    result = np.zeros_like(mask)
    src, dst = [], []
    for o, n in zip(offset, mask.shape):
        o = int(o)
        if abs(o) >= n:
            return result
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    result[tuple(dst)] = mask[tuple(src)]
    return result


def shift(label, rng, strength, *, spacing, target: Target = None, labels=None, max_mm: float | None = None):
    """Shift the target classes together by ``strength * M`` mm in a random direction.

    ``M`` is ``max_mm`` or, by default, the diameter of the targets' equivalent ball/disc (at
    full strength a target no longer overlaps its old place). The direction is in-plane for
    anisotropic 3D maps; the move is rounded to whole voxels. The vacated voxels become
    background; moved voxels overwrite what they land on.
    """
    label, strength, spacing = _check(label, strength, spacing)
    rng = as_rng(rng)
    out = label.copy()
    classes = _targets(label, target)
    axes = motion_axes(spacing) if label.ndim == 3 else (0, 1)
    direction = np.zeros(label.ndim)
    direction[list(axes)] = rng.standard_normal(len(axes))
    direction /= np.linalg.norm(direction) or 1.0
    if strength == 0 or not classes:
        return out
    moving = np.isin(label, classes)
    reach = max_mm if max_mm is not None else 2.0 * _equivalent_radius_mm(moving, spacing)
    offset = np.rint(strength * reach * direction / spacing).astype(int)
    moved = _shift_array(np.where(moving, label, 0), offset)
    out[moving] = 0
    keep = moved != 0
    out[keep] = moved[keep]
    return out


#: The nnQC degradations (III-E / IV-A.4 of the nnQC paper, plus boundary noise, splits, shifts).
NNQC_OPERATIONS: dict[str, Operation] = {
    "holes": holes,
    "erosion": erosion,
    "dilation": dilation,
    "fp_near": false_positives_near,
    "fp_far": false_positives_far,
    "collapse": collapse,
    "swap": swap,
    "boundary": boundary,
    "split": split,
    "shift": shift,
}
