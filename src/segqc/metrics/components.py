"""Per-component (CC) metrics via generalized Voronoi regions of the ground-truth components.

CC-Metrics (thesis ch. 5): the image is partitioned into the generalized Voronoi regions of the
ground-truth connected components (every voxel belongs to its nearest component); any metric is
evaluated inside each region, between the prediction restricted to that region and the component,
and averaged over components, so that every lesion weighs the same regardless of its size.

Only voxels of prediction ∪ ground truth ever need a region: ground-truth voxels belong to their
own component, and each predicted voxel outside the ground truth is assigned to the component of
its nearest ground-truth voxel, found with a k-d tree over the ground truth's boundary voxels. The
cost is therefore driven by the number of foreground voxels, not by the number of components
(no distance transform per component, nor of the whole volume).

Distances for the assignment are Euclidean in mm by default (``voronoi_units="mm"``);
``voronoi_units="voxel"`` measures them in voxel units as the reference implementations
(``ccmetrics``, MONAI ``DiceMetric(per_component=True)``) do. Voxels exactly equidistant from two
components may be assigned to either (the references take the first hit of scipy's feature
transform, we take the k-d tree's); this only happens on the Voronoi boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cc3d
import numpy as np

from segqc.metrics import surface as _surface
from segqc.metrics.binary import MetricResult, MetricSettings, counts_metrics, distance_metrics, voxel_volume
from segqc.metrics.masks import as_mask, check_spacing, mask_pair
from segqc.metrics.registry import COMPONENT_METRICS, DISTANCE_METRICS, check_metric_names, empty_situation, metric_info

VoronoiUnits = Literal["mm", "voxel"]
CONNECTIVITIES_3D = (6, 18, 26)
#: The connectivities cc3d accepts.
Cc3dConnectivity = Literal[4, 6, 8, 18, 26]


#: 3D connectivities given for 2D input mean their in-plane restriction: 6 (faces) -> 4 (edges),
#: 18 and 26 (edges / corners) -> 8 (edges and corners); 4 and 8 are taken as they are.
CONNECTIVITY_2D: dict[int, Literal[4, 8]] = {4: 4, 6: 4, 8: 8, 18: 8, 26: 8}


def _cc3d_connectivity(connectivity: int, ndim: int) -> Cc3dConnectivity:
    if ndim == 3:
        if connectivity not in CONNECTIVITIES_3D:
            raise ValueError(f"3D connectivity must be one of {CONNECTIVITIES_3D}, got {connectivity}")
        return cast(Cc3dConnectivity, connectivity)  # checked just above
    if ndim != 2:
        raise ValueError(f"connected components need a 2D or 3D mask, got {ndim}D")
    if connectivity not in CONNECTIVITY_2D:
        raise ValueError(f"2D connectivity must be 4 or 8 (or 6/18/26), got {connectivity}")
    return CONNECTIVITY_2D[connectivity]


def label_components(mask: np.ndarray, *, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of a binary 2D/3D mask: (labels 1..n, 0 = background; n).

    ``connectivity`` is 6, 18 or 26 for 3D masks; for 2D masks 4 or 8, and a 3D value is mapped
    to its in-plane restriction (:data:`CONNECTIVITY_2D`: 6 -> 4, 18 -> 8, 26 -> 8), so the
    default 26 means 8-connectivity in 2D.
    """
    mask = as_mask(mask, ndims=None)
    if not mask.flags.writeable:  # cc3d takes a writable buffer only (a read-only or memory-mapped mask)
        mask = mask.copy()
    # cc3d is handed uint8 (a view of the bool buffer, no copy): its 2D 8-connected labelling of
    # *bool* arrays is wrong (cc3d 4.1.1: labels beyond n, labelled background pixels, merged or
    # split components), while uint8 input gives the same components as scipy.ndimage.label.
    labels, n = cc3d.connected_components(
        mask.view(np.uint8), connectivity=_cc3d_connectivity(connectivity, mask.ndim), return_N=True
    )
    return labels, int(n)


@dataclass(frozen=True)
class RegionAssignment:
    """Generalized Voronoi assignment of the foreground voxels.

    ``gt_labels``: ground-truth components (1..n_gt). ``pred_index``: flat indices of all predicted
    voxels; ``pred_region``: the region (component id) of each of them.
    """

    gt_labels: np.ndarray
    n_gt: int
    pred_index: np.ndarray
    pred_region: np.ndarray

    @property
    def pred_inside_gt(self) -> np.ndarray:
        return self.gt_labels.reshape(-1)[self.pred_index] > 0


def _checked_pair(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred, gt = mask_pair(pred, gt)
    return pred, gt, check_spacing(spacing, gt.ndim)


def assign_regions(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    connectivity: int = 26,
    voronoi_units: VoronoiUnits = "mm",
    gt_labels: tuple[np.ndarray, int] | None = None,
) -> RegionAssignment:
    """Assign every predicted voxel to the generalized Voronoi region of a ground-truth component.

    ``pred``, ``gt``: same-shape 2D/3D masks; ``spacing``: mm per axis; ``connectivity``: of the
    ground-truth components (as :func:`label_components`); ``voronoi_units``: the distances that
    decide the nearest component, ``"mm"`` (with ``spacing``) or ``"voxel"`` (grid steps, as
    CC-Metrics); ``gt_labels``: the components of ``gt`` (labels, n) when the caller has them
    already. Returns a :class:`RegionAssignment`: each predicted voxel's region is the component
    it lies in, else the nearest one. An empty ground truth has no region: ``n_gt`` 0 and every
    predicted voxel in region 0; an empty prediction assigns nothing."""
    if voronoi_units not in ("mm", "voxel"):
        raise ValueError(f"voronoi_units must be 'mm' or 'voxel', got {voronoi_units!r}")
    pred, gt, spacing = _checked_pair(pred, gt, spacing)
    labels, n_gt = gt_labels if gt_labels is not None else label_components(gt, connectivity=connectivity)
    if labels.shape != gt.shape:
        raise ValueError(f"gt_labels shape {labels.shape} differs from gt shape {gt.shape}")
    pred_index = np.flatnonzero(pred)
    region = labels.reshape(-1)[pred_index].astype(np.int64)
    outside = np.flatnonzero(region == 0)
    if outside.size and n_gt:
        scale = np.asarray(spacing, dtype=np.float64) if voronoi_units == "mm" else np.ones(gt.ndim)
        boundary = _surface.extract_surface(gt, (1.0,) * gt.ndim, mode="voxel")  # nearest GT voxel is a boundary voxel
        coords = boundary.coordinates()
        site_label = labels[tuple(coords.T)].astype(np.int64)
        tree = _surface.kdtree(coords * scale)
        query = np.stack(np.unravel_index(pred_index[outside], gt.shape), axis=1) * scale
        nearest = tree.query(query, k=1, workers=_surface._query_workers(len(query)))[1]
        region[outside] = site_label[nearest]
    return RegionAssignment(labels, n_gt, pred_index, region)


@dataclass(frozen=True)
class ComponentEvaluation:
    """CC-metrics of one (prediction, ground truth) pair.

    ``per_component``: (component id, result) for every ground-truth component and metric.
    ``means``: ``cc_<metric>`` = mean over components (NaN values, from a ``nan`` empty rule, are
    left out of the mean). ``detection``: component-level detection counts.
    """

    per_component: list[tuple[int, MetricResult]]
    means: list[MetricResult]
    detection: list[MetricResult]


def _bounding_boxes(coords: np.ndarray, labels: np.ndarray, n: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full((n + 1, ndim), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((n + 1, ndim), -1, dtype=np.int64)
    for axis in range(ndim):
        np.minimum.at(lo[:, axis], labels, coords[:, axis])
        np.maximum.at(hi[:, axis], labels, coords[:, axis])
    return lo, hi


def compare_components(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    metrics: Sequence[str] = ("dice", "hd95", "nsd"),
    settings: MetricSettings | None = None,
    connectivity: int = 26,
    voronoi_units: VoronoiUnits = "mm",
) -> ComponentEvaluation:
    """Per-component metrics, their per-case means (``cc_<metric>``) and detection counts.

    ``metrics`` may be any of dice, iou, precision, recall, rvd, hd, hd95, assd, masd, nsd
    (:data:`~segqc.metrics.registry.COMPONENT_METRICS`; a bare string is one name).
    ``connectivity`` as in :func:`label_components` (for 2D masks 26/18 mean 8 and 6 means 4).
    Empty ground truth (no component): every ``cc_`` mean follows the empty policy
    (``both_empty`` / ``gt_empty``). A component whose region holds no predicted voxel follows the
    ``pred_empty`` rule (default worst).
    """
    settings = settings or MetricSettings()
    metrics = check_metric_names(metrics, COMPONENT_METRICS, "compare_components")
    if settings.distance != "euclidean":
        raise ValueError("per-component metrics use Euclidean distances; distance must be 'euclidean'")
    pred, gt, spacing = _checked_pair(pred, gt, spacing)
    assignment = assign_regions(pred, gt, spacing, connectivity=connectivity, voronoi_units=voronoi_units)
    labels, n = assignment.gt_labels, assignment.n_gt
    pred_labels, n_pred_cc = label_components(pred, connectivity=connectivity)
    inside = assignment.pred_inside_gt
    matched_pred_cc = np.unique(pred_labels.reshape(-1)[assignment.pred_index[inside]])
    gt_sizes = np.bincount(labels.reshape(-1)[np.flatnonzero(gt)], minlength=n + 1)
    tp = np.bincount(assignment.pred_region[inside], minlength=n + 1)
    n_pred_region = np.bincount(assignment.pred_region, minlength=n + 1)
    hit = int(np.count_nonzero(tp[1:])) if n else 0
    detection = [
        MetricResult("gt_components", float(n)),
        MetricResult("gt_components_hit", float(hit)),
        MetricResult("gt_components_missed", float(n - hit)),
        MetricResult("pred_components", float(n_pred_cc)),
        MetricResult("pred_components_unmatched", float(n_pred_cc - matched_pred_cc.size)),
    ]
    if n == 0:
        situation = empty_situation(n_pred_cc, 0)
        means = []
        for name in metrics:
            if name == "rvd":
                means.append(MetricResult(f"cc_{name}", math.nan, f"{situation}:undefined"))
            else:
                value, tag = metric_info(name).empty_value(situation, settings.empty)
                means.append(MetricResult(f"cc_{name}", value, tag))
        return ComponentEvaluation([], means, detection)

    overlap = [m for m in metrics if m not in DISTANCE_METRICS]
    distance = [m for m in metrics if m in DISTANCE_METRICS]
    per_component: list[tuple[int, MetricResult]] = []
    table: dict[str, list[float]] = {m: [] for m in metrics}
    rows_by_component: list[list[MetricResult]] = [[] for _ in range(n + 1)]
    for k in range(1, n + 1):
        if overlap:
            rows_by_component[k].extend(
                counts_metrics(int(tp[k]), int(n_pred_region[k]), int(gt_sizes[k]), voxel_volume(spacing), overlap,
                               settings.empty)
            )
    if distance:
        for k, sd in _component_surface_distances(pred, assignment, spacing, settings):
            rows_by_component[k].extend(distance_metrics(sd, distance, settings))
    for k in range(1, n + 1):
        by_name = {r.metric: r for r in rows_by_component[k]}
        for name in metrics:
            per_component.append((k, by_name[name]))
            table[name].append(by_name[name].value)
    means = []
    for name in metrics:
        values = np.asarray(table[name], dtype=float)
        finite = values[~np.isnan(values)]
        tags: dict[str, int] = {}
        for _k, r in per_component:
            if r.metric == name and r.empty:
                tags[r.empty] = tags.get(r.empty, 0) + 1
        # the mean says how many components an empty-mask rule scored, e.g. "pred_empty:worst x3"
        tag = "; ".join(f"{t} x{c}" for t, c in sorted(tags.items()))
        means.append(MetricResult(f"cc_{name}", float(finite.mean()) if finite.size else math.nan,
                                  tag if finite.size else f"all_components:nan ({tag})"))
    return ComponentEvaluation(per_component, means, detection)


# Offset that separates components in the batched k-d tree (mm).
_COMPONENT_SEPARATION_MM = 1.0e7


def _atlas_groups(sizes: np.ndarray, gap: int) -> list[np.ndarray]:
    """Split components (crop sizes ``(n, ndim)``, leading axis first) into atlas groups.

    Crops are stacked along axis 0 with ``gap`` empty planes between them, each padded to the
    group's largest cross-section; components are taken by decreasing cross-section and a group
    closes when padding would more than double its volume, so the atlases stay within about twice
    the crops' total volume.
    """
    cross = np.prod(sizes[:, 1:], axis=1)
    order = np.argsort(-cross, kind="stable")
    groups: list[np.ndarray] = []
    current: list[int] = []
    depth, volume = 0, 0
    for k in order:
        if current:
            box = np.max(sizes[current + [k], 1:], axis=0)
            padded = (depth + sizes[k, 0] + gap) * int(np.prod(box))
            if padded > 2 * (volume + int(np.prod(sizes[k]))) + 32768:
                groups.append(np.asarray(current))
                current, depth, volume = [], 0, 0
        current.append(int(k))
        depth += int(sizes[k, 0]) + gap
        volume += int(np.prod(sizes[k]))
    if current:
        groups.append(np.asarray(current))
    return groups


def _far_distances(source, source_comp, target, target_comp, spacing) -> np.ndarray:
    """Distances from source points to the nearest target point of the SAME component (``inf``
    where that component has no target point), with one k-d tree for all components: points are
    lifted into a 4th coordinate ``component * separation``, which differs by exactly 0 within a
    component, so the distances are exact."""
    distances = np.full(source.shape[0], np.inf)
    n = max(int(source_comp.max(initial=0)), int(target_comp.max(initial=0))) + 1
    has_target = np.zeros(n, dtype=bool)
    has_target[target_comp] = True
    todo = np.flatnonzero(has_target[source_comp])
    if todo.size == 0:
        return distances
    wanted = np.zeros(n, dtype=bool)
    wanted[source_comp[todo]] = True
    used = wanted[target_comp]  # only components with queries need their points in the tree
    scale = np.asarray(spacing, dtype=np.float64)

    def lifted(coords, comp):
        return np.concatenate([coords * scale, comp[:, None] * _COMPONENT_SEPARATION_MM], axis=1)

    target_used = target[used]
    tree = _surface.kdtree(lifted(target_used, target_comp[used]))
    nearest = tree.query(lifted(source[todo], source_comp[todo]), k=1, workers=_surface._query_workers(todo.size))[1]
    # exact distances from integer grid offsets (see surface._grid_distance)
    distances[todo] = _surface._grid_distance(target_used[nearest] - source[todo], tuple(scale), 2.0)
    return distances


def _component_surface_distances(
    pred: np.ndarray, assignment: RegionAssignment, spacing: tuple[float, ...], settings: MetricSettings
):
    """Yield (component id, SurfaceDistances of prediction ∩ region vs component).

    Batched, so that the cost follows the number of surface points, not of components: the crops
    of all components (prediction ∩ region, component) are laid side by side in a few "atlas"
    volumes, separated by empty planes wider than the neighbourhood-search radius. Surfaces are
    extracted with one call per atlas, near distances found by the word-parallel ring search over
    the whole atlas, and the remaining far points with one k-d tree for all components.
    """
    labels, n = assignment.gt_labels, assignment.n_gt
    ndim = pred.ndim
    gt_index = np.flatnonzero(labels)
    gt_coords = np.stack(np.unravel_index(gt_index, labels.shape), axis=1)
    gt_lab = labels.reshape(-1)[gt_index].astype(np.int64)
    pred_coords = np.stack(np.unravel_index(assignment.pred_index, labels.shape), axis=1)
    lo, hi = _bounding_boxes(
        np.concatenate([gt_coords, pred_coords]), np.concatenate([gt_lab, assignment.pred_region]), n, ndim
    )
    sizes = (hi - lo + 1)[1:]  # component k at row k-1
    gap = _surface.ring_reach(spacing)[0] + 2  # no ring-search offset reaches the next crop
    parts: dict[str, list] = {"gt": [], "pred": []}  # per atlas: points in crop, owner, weights, distance
    for group in _atlas_groups(sizes, gap):
        comps = group + 1
        depth = sizes[group, 0] + gap
        start = np.zeros(n + 1, dtype=np.int64)
        start[comps] = np.concatenate([[0], np.cumsum(depth)[:-1]])
        shape = (int(depth.sum()),) + tuple(int(v) for v in sizes[group, 1:].max(axis=0))
        in_group = np.zeros(n + 1, dtype=bool)
        in_group[comps] = True
        starts_sorted = start[comps]
        surfaces = {}
        for name, coords, comp in (("gt", gt_coords, gt_lab), ("pred", pred_coords, assignment.pred_region)):
            keep = in_group[comp]
            local = coords[keep] - lo[comp[keep]]
            local[:, 0] += start[comp[keep]]
            atlas = np.zeros(shape, dtype=bool)
            atlas[tuple(local.T)] = True
            surfaces[name] = _surface.extract_surface(atlas, spacing, mode=settings.surface)
        for name, other in (("gt", "pred"), ("pred", "gt")):
            source, target = surfaces[name], surfaces[other]
            points = source.coordinates()
            owner = comps[np.searchsorted(starts_sorted, points[:, 0], side="right") - 1]
            points[:, 0] -= start[owner]
            near = _surface.near_distances(source, target, spacing)
            parts[name].append((points, owner, source.weights, near))
    merged = {name: [np.concatenate(column) for column in zip(*parts[name])] for name in parts}
    for name, other in (("gt", "pred"), ("pred", "gt")):
        points, owner, _, distances = merged[name]
        far = np.flatnonzero(np.isinf(distances))
        if far.size:
            distances[far] = _far_distances(points[far], owner[far], merged[other][0], merged[other][1], spacing)
    (_, gt_owner, gt_weights, gt_to_pred), (_, pred_owner, pred_weights, pred_to_gt) = merged["gt"], merged["pred"]
    gt_order = np.lexsort((gt_weights, gt_to_pred, gt_owner))
    pred_order = np.lexsort((pred_weights, pred_to_gt, pred_owner))
    gt_bounds = np.searchsorted(gt_owner[gt_order], np.arange(n + 2))
    pred_bounds = np.searchsorted(pred_owner[pred_order], np.arange(n + 2))
    for k in range(1, n + 1):
        g = gt_order[gt_bounds[k]: gt_bounds[k + 1]]
        p = pred_order[pred_bounds[k]: pred_bounds[k + 1]]
        yield k, _surface.SurfaceDistances(
            gt_to_pred[g], gt_weights[g], pred_to_gt[p], pred_weights[p], settings.surface
        )
