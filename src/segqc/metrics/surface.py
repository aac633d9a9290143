"""Surfaces and surface distances of binary masks, in millimetres, with anisotropic spacing.

Two surface definitions are supported:

``"surfel"`` (default)
    The DeepMind ``surface-distance`` definition. Surface points are the corners of the voxel grid
    whose 2x2(x2) neighbourhood is mixed (some voxels inside, some outside); each carries the area
    (3D, mm^2) or length (2D, mm) of the marching-cubes surface element there. Percentiles are
    area-weighted (first element at which the cumulative area fraction reaches the percentile).
    Results match ``surface_distance.compute_surface_distances`` to floating-point precision.
``"voxel"``
    The MONAI definition: surface points are the centres of the mask voxels that have at least
    one 6-neighbour outside the mask (the image border counts as outside); each has weight 1.
    Percentiles interpolate linearly between order statistics (``numpy.percentile``), as MONAI's
    ``compute_hausdorff_distance`` does.

Distances between the two point sets are exact nearest-neighbour distances: Euclidean in mm, or
(voxel surfaces only) MONAI's chessboard (L-infinity) or taxicab (L1) distances in grid steps, where
MONAI ignores the spacing. They are
found with a k-d tree over the surface points only (points shared by both surfaces are resolved
without a query), so no distance transform of the whole volume is ever computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from segqc.metrics import _bitrows
from segqc.metrics._surfel_tables import contour_length_table, surface_area_table
from segqc.metrics.masks import as_mask, check_spacing

SurfaceMode = Literal["surfel", "voxel"]
SURFACE_MODES: tuple[str, ...] = ("surfel", "voxel")
DistanceNorm = Literal["euclidean", "chessboard", "taxicab"]
DISTANCE_NORMS: tuple[str, ...] = ("euclidean", "chessboard", "taxicab")
#: Minkowski p of each norm (k-d tree queries).
_NORM_P = {"euclidean": 2.0, "chessboard": np.inf, "taxicab": 1.0}


@dataclass(frozen=True)
class Surface:
    """Surface points of one mask, kept bit-packed.

    ``words``: packed occupancy of the surface points (see :mod:`segqc.metrics._bitrows`) over
    the point grid (the corner grid, of shape ``mask.shape + 1``, in surfel mode; the voxel grid
    in voxel mode). ``keys``: sorted keys of the points. ``weights``: area in mm^2 (3D) or length
    in mm (2D) per point, in key order; 1.0 per voxel in voxel mode.
    """

    words: np.ndarray
    keys: np.ndarray
    weights: np.ndarray
    mode: str

    @property
    def size(self) -> int:
        return int(self.keys.size)

    def coordinates(self) -> np.ndarray:
        """Point grid coordinates ``(n, ndim)``; surfel corners sit at -0.5 voxel."""
        return _bitrows.key_coordinates(self.keys, self.words.shape)

    def points_mm(self, spacing: Sequence[float]) -> np.ndarray:
        """Point coordinates in mm."""
        return self.coordinates() * np.asarray(spacing, dtype=np.float64)


def extract_surface(mask: np.ndarray, spacing: Sequence[float], *, mode: SurfaceMode = "surfel") -> Surface:
    """Surface points and their weights of a binary 2D/3D mask (see module docstring).

    ``spacing``: mm per axis; ``mode``: ``"surfel"`` (points on the boundary between foreground
    and background voxels, each weighted by its area in mm², or length in mm in 2D) or
    ``"voxel"`` (the foreground voxels next to the background, weight 1). An empty mask has an
    empty surface (no points)."""
    mask = as_mask(mask)
    spacing = check_spacing(spacing, mask.ndim)
    if mode == "surfel":
        return _surfel_surface(mask, spacing)
    if mode == "voxel":
        return _voxel_surface(mask)
    raise ValueError(f"unknown surface mode {mode!r}; expected one of {SURFACE_MODES}")


def _surfel_surface(mask: np.ndarray, spacing: tuple[float, ...]) -> Surface:
    # Corner c (along every axis) lies between voxels c-1 and c. In the padded packing, voxel row
    # r-1 is padded row r, so for corner row r the two voxel rows are padded rows r and r+1 and,
    # along the packed axis, voxel c-1 is the up-shifted word.
    words = _bitrows.pack_rows(mask, n_bits=mask.shape[-1] + 1)
    shifted = _bitrows.shift_up(words)
    lead = tuple(s + 1 for s in mask.shape[:-1])
    row_offsets: list[tuple[int, ...]]
    if mask.ndim == 3:
        table = surface_area_table(spacing)
        row_offsets = [(0, 0), (0, 1), (1, 0), (1, 1)]
    else:
        table = contour_length_table(spacing)
        row_offsets = [(0,), (1,)]
    n_bits_code = 2 * len(row_offsets)
    planes = []  # (code bit weight, packed plane over the corner grid)
    for i, offset in enumerate(row_offsets):
        sl = tuple(slice(o, o + n) for o, n in zip(offset, lead))
        high = 1 << (n_bits_code - 1 - 2 * i)
        planes.append((high, shifted[sl]))  # voxel c-1
        planes.append((high >> 1, words[sl]))  # voxel c
    any_in = planes[0][1] | planes[1][1]
    all_in = planes[0][1] & planes[1][1]
    for _, plane in planes[2:]:
        any_in |= plane
        all_in &= plane
    border = any_in & ~all_in
    keys = _bitrows.set_bit_keys(border)
    # gather each plane's bit at the border points straight from the padded arrays (no plane copies)
    n_words = border.shape[-1]
    lead_index = np.unravel_index(keys // (n_words * 64), lead)
    within = keys % (n_words * 64)  # bit position along the packed axis
    code = np.zeros(keys.size, dtype=np.uint8)
    for i, offset in enumerate(row_offsets):
        row = np.ravel_multi_index(tuple(c + o for c, o in zip(lead_index, offset)), words.shape[:-1])
        source_keys = row * (n_words * 64) + within
        high = planes[2 * i][0]
        code |= _bitrows.bits_at(shifted, source_keys) * np.uint8(high)
        code |= _bitrows.bits_at(words, source_keys) * np.uint8(high >> 1)
    return Surface(words=border, keys=keys, weights=table[code], mode="surfel")


def _voxel_surface(mask: np.ndarray) -> Surface:
    words = _bitrows.pack_rows(mask, n_bits=mask.shape[-1])
    inner = tuple(slice(1, -1) for _ in mask.shape[:-1])
    core = words[inner]
    eroded = core & _bitrows.shift_up(core) & _bitrows.shift_down(core)
    for axis in range(mask.ndim - 1):
        for step in (-1, 1):
            sl = list(inner)
            sl[axis] = slice(1 + step, words.shape[axis] - 1 + step)
            eroded &= words[tuple(sl)]
    border = core & ~eroded
    keys = _bitrows.set_bit_keys(border)
    return Surface(words=border, keys=keys, weights=np.ones(keys.size), mode="voxel")


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed distances (mm) from each surface point to the other surface, sorted ascending.

    ``gt_to_pred[i]`` is the distance from the i-th ground-truth surface point (weight
    ``gt_weights[i]``) to the nearest prediction surface point; likewise ``pred_to_gt``. When one
    surface is empty, the distances from the other one are ``inf``.
    """

    gt_to_pred: np.ndarray
    gt_weights: np.ndarray
    pred_to_gt: np.ndarray
    pred_weights: np.ndarray
    mode: str

    @property
    def gt_empty(self) -> bool:
        return self.gt_weights.size == 0

    @property
    def pred_empty(self) -> bool:
        return self.pred_weights.size == 0


# Below this many source points a k-d tree is cheaper than the word-parallel neighbourhood search.
_MIN_POINTS_FOR_RING_SEARCH = 4096
# Number of grid offsets searched word-parallel before the remaining points go to a k-d tree.
_RING_OFFSETS = 125


@lru_cache(maxsize=64)
def _ring_offsets(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Integer offsets within a radius holding about ``_RING_OFFSETS`` grid points, by distance.

    Returns (offsets (k, ndim), distances in mm (k,), per-axis maximal |offset|). Every offset
    whose distance is at most the radius is included, so the first hit is the exact nearest.
    """
    s = np.asarray(spacing, dtype=np.float64)
    ndim = s.size
    if ndim == 3:
        radius = (3.0 * _RING_OFFSETS * np.prod(s) / (4.0 * np.pi)) ** (1.0 / 3.0)
    else:
        radius = np.sqrt(_RING_OFFSETS * np.prod(s) / np.pi)
    radius = min(radius, (_bitrows.WORD_BITS - 1) * s[-1])  # a shift spans at most two words
    reach = tuple(int(np.floor(radius / si + 1e-9)) for si in s)
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, ndim)
    dist = np.sqrt(np.sum((grid * s) ** 2, axis=1))
    keep = dist <= radius
    grid, dist = grid[keep], dist[keep]
    order = np.argsort(dist, kind="stable")
    return grid[order], dist[order], reach


def ring_reach(spacing: Sequence[float]) -> tuple[int, ...]:
    """Largest |offset| per axis (voxels) that the ring search looks at."""
    return _ring_offsets(tuple(float(s) for s in spacing))[2]


def near_distances(source: Surface, target: Surface, spacing: Sequence[float]) -> np.ndarray:
    """Exact distances from source points to the target within the ring radius, ``inf`` beyond
    (all ``inf`` when the source is too small for the ring search to pay off)."""
    if source.size < _MIN_POINTS_FOR_RING_SEARCH or target.size == 0:
        return np.full(source.size, np.inf)
    return _ring_search(source, target, tuple(float(s) for s in spacing))


def _ring_search(source: Surface, target: Surface, spacing: tuple[float, ...]) -> np.ndarray:
    """Exact distances from source points to the nearest target point within the ring radius.

    Word-parallel: for each offset (nearest first) the packed target is shifted onto the
    still-unresolved source words, 64 points per operation. Points with no target within the
    radius get ``inf``.
    """
    offsets, offset_dist, reach = _ring_offsets(spacing)
    shape = target.words.shape  # (*lead, n_words); identical for source
    n_lead = len(shape) - 1
    padded_shape = tuple(n + 2 * r for n, r in zip(shape[:-1], reach[:-1])) + (shape[-1] + 2,)
    padded = np.zeros(padded_shape, dtype=np.uint64)
    padded[tuple(slice(r, r + n) for n, r in zip(shape[:-1], reach[:-1])) + (slice(1, -1),)] = target.words
    flat_target = padded.reshape(-1)
    strides = np.cumprod((padded_shape[1:] + (1,))[::-1])[::-1]  # element strides of padded

    source_flat = source.words.reshape(-1)
    word_flat = np.flatnonzero(source_flat)
    remaining = source_flat[word_flat].copy()
    lead_coords = np.unravel_index(word_flat // shape[-1], shape[:-1])
    base = np.zeros(word_flat.size, dtype=np.int64)
    for axis in range(n_lead):
        base += (lead_coords[axis] + reach[axis]) * strides[axis]
    base += word_flat % shape[-1] + 1

    found_words, found_flat, found_offset = [], [], []  # hit bits per offset, decoded once at the end
    for step, offset in enumerate(offsets):
        shift_words, shift_bits = divmod(int(offset[-1]), _bitrows.WORD_BITS)
        lead_shift = int(np.dot(offset[:-1], strides[:-1])) + shift_words
        idx = base + lead_shift
        moved = flat_target[idx]
        if shift_bits:
            moved = (moved >> np.uint64(shift_bits)) | (
                flat_target[idx + 1] << np.uint64(_bitrows.WORD_BITS - shift_bits)
            )
        hits = remaining & moved
        hit_words = np.flatnonzero(hits)
        if hit_words.size:
            hit_values = hits[hit_words]
            found_words.append(hit_values)
            found_flat.append(word_flat[hit_words])
            found_offset.append(np.full(hit_words.size, step, dtype=np.int32))
            remaining[hit_words] &= ~hit_values
            if step % 4 == 0:
                keep = remaining != 0
                if not keep.all():
                    remaining, base, word_flat = remaining[keep], base[keep], word_flat[keep]
                    if remaining.size == 0:
                        break
    distances = np.full(source.size, np.inf)
    if found_words:
        values = np.concatenate(found_words)
        local = _bitrows.set_bit_keys(values)  # bit b of values[i] -> key i * 64 + b
        word = local >> 6
        keys = np.concatenate(found_flat)[word] * 64 + (local & 63)
        distances[np.searchsorted(source.keys, keys)] = offset_dist[np.concatenate(found_offset)[word]]
    return distances


def kdtree(points: np.ndarray) -> cKDTree:
    """k-d tree tuned for surface point clouds: sliding-midpoint splits without shrinking the
    cells to their points (measured 3x faster for far queries, e.g. from a missed lesion, at the
    same speed for near ones) and 32-point leaves."""
    return cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)


def _query_workers(n_queries: int) -> int:
    """Threads for a k-d tree query: starting threads costs ~1 ms, worth it only for many points."""
    return -1 if n_queries >= 4000 else 1


def _directed(source: Surface, target: Surface, spacing: tuple[float, ...], p: float = 2.0) -> np.ndarray:
    if target.size == 0:
        return np.full(source.size, np.inf)
    if source.size == 0:
        return np.zeros(0)
    if p == 2.0 and source.size >= _MIN_POINTS_FOR_RING_SEARCH:  # the ring is ordered by Euclidean distance
        distances = _ring_search(source, target, spacing)
        todo = np.flatnonzero(np.isinf(distances))
    else:
        distances = np.empty(source.size)
        todo = None
    if todo is None or todo.size:
        target_grid = target.coordinates()
        tree = kdtree(target_grid * np.asarray(spacing))
        source_grid = source.coordinates() if todo is None else _bitrows.key_coordinates(source.keys[todo],
                                                                                           source.words.shape)
        nearest = tree.query(source_grid * np.asarray(spacing), k=1, p=p, workers=_query_workers(len(source_grid)))[1]
        found = _grid_distance(target_grid[nearest] - source_grid, spacing, p)
        if todo is None:
            distances = found
        else:
            distances[todo] = found
    return distances


def _grid_distance(offsets: np.ndarray, spacing: tuple[float, ...], p: float) -> np.ndarray:
    """Distances of integer grid offsets ``(n, ndim)`` in mm, each axis offset times its spacing
    before the norm (as a distance transform computes them, so a one-step offset is exactly one
    spacing: the difference of two mm coordinates can be an ulp off and flip an NSD tolerance)."""
    scaled = offsets * np.asarray(spacing)
    if p == 2.0:
        return np.sqrt(np.sum(scaled * scaled, axis=1))
    if p == 1.0:
        return np.sum(np.abs(scaled), axis=1)
    return np.max(np.abs(scaled), axis=1)


def _sorted(distances: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((weights, distances))  # by distance, then weight (as surface-distance)
    return distances[order], weights[order]


def distances_between(
    pred_surface: Surface, gt_surface: Surface, spacing: Sequence[float], *, norm: DistanceNorm = "euclidean"
) -> SurfaceDistances:
    """Both directed distance lists between two surfaces on the same grid (``norm`` other than
    euclidean: grid steps, the spacing is not used, as MONAI)."""
    if pred_surface.words.shape != gt_surface.words.shape or pred_surface.mode != gt_surface.mode:
        raise ValueError("surfaces must come from the same grid and surface mode")
    if norm not in _NORM_P:
        raise ValueError(f"unknown distance {norm!r}; expected one of {DISTANCE_NORMS}")
    if norm != "euclidean" and pred_surface.mode != "voxel":
        raise ValueError(f"{norm} distances are defined on voxel surfaces only")
    spacing = tuple(float(s) for s in spacing) if norm == "euclidean" else (1.0,) * len(spacing)
    p = _NORM_P[norm]
    g_d, g_w = _sorted(_directed(gt_surface, pred_surface, spacing, p), gt_surface.weights)
    p_d, p_w = _sorted(_directed(pred_surface, gt_surface, spacing, p), pred_surface.weights)
    return SurfaceDistances(g_d, g_w, p_d, p_w, pred_surface.mode)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], *, mode: SurfaceMode = "surfel",
    norm: DistanceNorm = "euclidean",
) -> SurfaceDistances:
    """Extract both surfaces and compute all directed surface distances in one pass.

    ``spacing``: mm per axis; ``mode`` as :func:`extract_surface`; ``norm``: ``"euclidean"``
    (distances in mm), ``"chessboard"`` or ``"taxicab"`` (in grid steps, as MONAI). Each list is
    sorted, one entry per surface element of the other mask. An empty mask gives an empty list
    for its own surface, and the other mask's elements are infinitely far (``inf``); the metrics
    of :mod:`segqc.metrics.binary` apply the empty-mask rules before using them."""
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"pred shape {np.shape(pred)} differs from gt shape {np.shape(gt)}")
    return distances_between(
        extract_surface(pred, spacing, mode=mode), extract_surface(gt, spacing, mode=mode), spacing, norm=norm
    )


# --- reductions of a SurfaceDistances (no empty-mask handling here: see segqc.metrics.binary) ---


def directed_percentile(distances: np.ndarray, weights: np.ndarray, percent: float, mode: str) -> float:
    """Percentile of sorted directed distances (area-weighted in surfel mode, linear in voxel mode)."""
    if distances.size == 0:
        return float("inf")
    if mode == "voxel":
        return float(np.percentile(distances, percent))
    cumulative = np.cumsum(weights) / np.sum(weights)
    idx = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(idx, distances.size - 1)])


def hausdorff(sd: SurfaceDistances, percent: float = 100.0) -> float:
    """Symmetric (percentile) Hausdorff distance: max of the two directed percentiles, mm."""
    if percent >= 100.0:
        a = sd.gt_to_pred[-1] if sd.gt_to_pred.size else np.inf
        b = sd.pred_to_gt[-1] if sd.pred_to_gt.size else np.inf
        return float(max(a, b))
    return max(
        directed_percentile(sd.gt_to_pred, sd.gt_weights, percent, sd.mode),
        directed_percentile(sd.pred_to_gt, sd.pred_weights, percent, sd.mode),
    )


def average_distances(sd: SurfaceDistances) -> tuple[float, float]:
    """Weighted mean directed distances (gt->pred, pred->gt), mm."""
    gt = float(np.sum(sd.gt_to_pred * sd.gt_weights) / np.sum(sd.gt_weights))
    pred = float(np.sum(sd.pred_to_gt * sd.pred_weights) / np.sum(sd.pred_weights))
    return gt, pred


def assd(sd: SurfaceDistances) -> float:
    """Average symmetric surface distance: weighted mean over the elements of both surfaces, mm."""
    total = np.sum(sd.gt_to_pred * sd.gt_weights) + np.sum(sd.pred_to_gt * sd.pred_weights)
    return float(total / (np.sum(sd.gt_weights) + np.sum(sd.pred_weights)))


def masd(sd: SurfaceDistances) -> float:
    """Mean of the two directed average surface distances, mm."""
    gt, pred = average_distances(sd)
    return 0.5 * (gt + pred)


def nsd(sd: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalized surface Dice: weight fraction of both surfaces within ``tolerance_mm``."""
    close = np.sum(sd.gt_weights[sd.gt_to_pred <= tolerance_mm]) + np.sum(
        sd.pred_weights[sd.pred_to_gt <= tolerance_mm]
    )
    return float(close / (np.sum(sd.gt_weights) + np.sum(sd.pred_weights)))


def pooled(sd: SurfaceDistances) -> tuple[np.ndarray, np.ndarray]:
    """Both directed distance lists as one, sorted (distances, weights)."""
    return _sorted(np.concatenate([sd.gt_to_pred, sd.pred_to_gt]), np.concatenate([sd.gt_weights, sd.pred_weights]))


def nsd_mean(sd: SurfaceDistances, tolerance_mm: float) -> float:
    """Mean of the two directed fractions of surface within ``tolerance_mm`` (GaNDLF, panoptica)."""
    gt = np.sum(sd.gt_weights[sd.gt_to_pred <= tolerance_mm]) / np.sum(sd.gt_weights)
    pred = np.sum(sd.pred_weights[sd.pred_to_gt <= tolerance_mm]) / np.sum(sd.pred_weights)
    return float(0.5 * (gt + pred))


def rms_distance(sd: SurfaceDistances) -> float:
    """Root-mean-square distance over the elements of both surfaces (weighted), mm."""
    squares = np.sum(sd.gt_to_pred**2 * sd.gt_weights) + np.sum(sd.pred_to_gt**2 * sd.pred_weights)
    return float(np.sqrt(squares / (np.sum(sd.gt_weights) + np.sum(sd.pred_weights))))


def distance_metric(sd: SurfaceDistances, name: str, percent: float, tolerance_mm: float) -> float:
    """One named distance metric of two non-empty surfaces (names of the registry's distance kind).

    Percentiles follow the surface mode (area-weighted in surfel mode, linear interpolation in
    voxel mode); ``hd95_pooled`` and ``median_sd`` take them over both directed lists pooled (as
    medpy's ``hd95`` and seg-metrics), ``hd95`` is the max of the two directed percentiles.
    """
    if name == "hd":
        return hausdorff(sd, 100.0)
    if name == "hd95":
        return hausdorff(sd, percent)
    if name == "hd95_pooled":
        return directed_percentile(*pooled(sd), percent, sd.mode)
    if name == "median_sd":
        return directed_percentile(*pooled(sd), 50.0, sd.mode)
    if name == "hd_pred_to_gt":
        return float(sd.pred_to_gt[-1])
    if name == "hd_gt_to_pred":
        return float(sd.gt_to_pred[-1])
    if name == "hd95_pred_to_gt":
        return directed_percentile(sd.pred_to_gt, sd.pred_weights, percent, sd.mode)
    if name == "hd95_gt_to_pred":
        return directed_percentile(sd.gt_to_pred, sd.gt_weights, percent, sd.mode)
    if name == "assd":
        return assd(sd)
    if name == "masd":
        return masd(sd)
    if name == "asd":
        return average_distances(sd)[1]
    if name == "asd_gt_to_pred":
        return average_distances(sd)[0]
    if name == "rmssd":
        return rms_distance(sd)
    if name == "nsd":
        return nsd(sd, tolerance_mm)
    if name == "nsd_mean":
        return nsd_mean(sd, tolerance_mm)
    raise ValueError(f"{name!r} is not a distance metric")
