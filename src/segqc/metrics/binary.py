"""All standard metrics of one binary prediction against one binary ground truth.

``compare_masks`` computes any subset of the registered overlap, volume and surface-distance
metrics from one set of voxel counts and ONE surface-distance pass, applying the empty-mask policy
of :mod:`segqc.metrics.registry`. The single-metric functions (``dice``, ``hd95``, ...) are thin
conveniences over it. Pure numpy: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from segqc.metrics import surface as _surface
from segqc.metrics.masks import check_spacing, mask_pair
from segqc.metrics.registry import (
    COUNT_METRICS,
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    SHAPE_METRICS,
    EmptyPolicy,
    check_metric_names,
    empty_situation,
    metric_info,
)
from segqc.metrics.surface import DISTANCE_NORMS, DistanceNorm, SurfaceDistances, SurfaceMode

#: What :func:`compare_masks` computes (instance, lesion, multi-class and soft metrics have their own functions).
MASK_METRICS = COUNT_METRICS + DISTANCE_METRICS + SHAPE_METRICS


@dataclass(frozen=True)
class MetricResult:
    """One metric value; ``empty`` names the empty-mask rule that produced it ("" if none)."""

    metric: str
    value: float
    empty: str = ""


@dataclass(frozen=True)
class MetricSettings:
    """Options shared by all metrics.

    tolerance_mm: NSD tolerance in mm. percentile: of the percentile Hausdorff distances (``hd95``,
    ``hd95_pooled`` and the directed ``hd95_*``), 0-100. surface: ``"surfel"`` (DeepMind
    surface-distance definition) or ``"voxel"`` (MONAI, medpy). distance: ``"euclidean"`` (mm), or
    MONAI's ``"chessboard"`` / ``"taxicab"`` (voxel surfaces only; in grid steps, spacing not used, as
    MONAI). beta: of ``fbeta``. boundary_width_mm, boundary_definition: band width and definition
    of ``boundary_iou`` (``distance``: mask voxels within the width of the background, exact
    Euclidean in mm; ``metricsreloaded``: MetricsReloaded's erosion-border band, see
    :mod:`segqc.metrics.shape`). match_threshold,
    match_inclusive, match_criterion, match_method: how instances are matched for ``pq``/``sq``/``rq``
    (criterion ``iou`` or ``dice`` above the threshold, ``>=`` when inclusive; ``hungarian``
    maximises the total criterion among the eligible pairs, ``unique`` needs a threshold of at least
    0.5 IoU, ``monai`` assigns over all overlapping pairs and then applies the threshold, as MONAI).
    empty: the empty-mask policy.
    """

    tolerance_mm: float = 1.0
    percentile: float = 95.0
    surface: SurfaceMode = "surfel"
    distance: DistanceNorm = "euclidean"
    beta: float = 1.0
    boundary_width_mm: float = 1.0
    boundary_definition: str = "distance"
    match_threshold: float = 0.5
    match_inclusive: bool = False
    match_criterion: str = "iou"
    match_method: str = "hungarian"
    empty: EmptyPolicy = field(default_factory=EmptyPolicy)

    def __post_init__(self) -> None:
        if not (self.tolerance_mm >= 0 and math.isfinite(self.tolerance_mm)):
            raise ValueError(f"tolerance_mm must be >= 0, got {self.tolerance_mm}")
        if not 0 <= self.percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {self.percentile}")
        if self.surface not in _surface.SURFACE_MODES:
            raise ValueError(f"surface must be one of {_surface.SURFACE_MODES}, got {self.surface!r}")
        if self.distance not in DISTANCE_NORMS:
            raise ValueError(f"distance must be one of {DISTANCE_NORMS}, got {self.distance!r}")
        if self.distance != "euclidean" and self.surface != "voxel":
            raise ValueError(f"{self.distance} distances are defined on voxel surfaces (MONAI): use surface 'voxel'")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not (self.boundary_width_mm > 0 and math.isfinite(self.boundary_width_mm)):
            raise ValueError(f"boundary_width_mm must be positive, got {self.boundary_width_mm}")
        if self.boundary_definition not in ("distance", "metricsreloaded"):
            raise ValueError(f"boundary_definition must be 'distance' or 'metricsreloaded', got "
                             f"{self.boundary_definition!r}")
        if not 0 <= self.match_threshold <= 1:
            raise ValueError(f"match_threshold must be in [0, 1], got {self.match_threshold}")
        if self.match_criterion not in ("iou", "dice"):
            raise ValueError(f"match_criterion must be 'iou' or 'dice', got {self.match_criterion!r}")
        if self.match_method not in ("hungarian", "unique", "monai"):
            raise ValueError(f"match_method must be 'hungarian', 'unique' or 'monai', got {self.match_method!r}")

    def to_dict(self) -> dict:
        return {
            "tolerance_mm": self.tolerance_mm,
            "percentile": self.percentile,
            "surface": self.surface,
            "distance": self.distance,
            "beta": self.beta,
            "boundary_width_mm": self.boundary_width_mm,
            "boundary_definition": self.boundary_definition,
            "match_threshold": self.match_threshold,
            "match_inclusive": self.match_inclusive,
            "match_criterion": self.match_criterion,
            "match_method": self.match_method,
            "empty": self.empty.to_dict(),
        }

    @classmethod
    def pop_from(cls, values: dict) -> MetricSettings:
        """The settings whose keys (as :meth:`to_dict` writes them) are in ``values``; those keys are
        removed from ``values``."""
        defaults = cls()
        kwargs = {name: values.pop(name) for name in list(defaults.to_dict()) if name != "empty" and name in values}
        return cls(empty=EmptyPolicy(**values.pop("empty", {})), **kwargs)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _confusion_value(name: str, tp: int, fp: int, fn: int, tn: int) -> float:
    """A metric of the confusion matrix over the image; NaN where its denominator is zero."""
    n = tp + fp + fn + tn
    if name == "specificity":
        return _ratio(tn, tn + fp)
    if name == "npv":
        return _ratio(tn, tn + fn)
    if name == "fpr":
        return _ratio(fp, fp + tn)
    if name == "accuracy":
        return _ratio(tp + tn, n)
    if name == "balanced_accuracy":
        return 0.5 * (_ratio(tp, tp + fn) + _ratio(tn, tn + fp))
    if name == "mcc":  # products in floats: counts of whole-body CT overflow int64 when multiplied
        denominator = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
        return _ratio(float(tp) * tn - float(fp) * fn, denominator)
    if name == "kappa":
        observed = _ratio(tp + tn, n)
        expected = _ratio(float(tp + fp) * (tp + fn) + float(tn + fn) * (tn + fp), float(n) * n)
        return _ratio(observed - expected, 1.0 - expected)
    raise ValueError(f"{name!r} is not a confusion-matrix metric")


def voxel_volume(spacing: Sequence[float]) -> float:
    """What one voxel adds to ``volume_pred`` / ``volume_gt``: its volume in ml for a 3D grid
    (mm³ / 1000), its area in mm² for a 2D grid (an area in ml would read 1000 times too small)."""
    size = float(np.prod(spacing))
    return size if len(spacing) == 2 else size / 1000.0


def counts_metrics(
    tp: int,
    n_pred: int,
    n_gt: int,
    voxel_volume_ml: float,
    metrics: Iterable[str],
    policy: EmptyPolicy,
    *,
    n_total: int | None = None,
    beta: float = 1.0,
) -> list[MetricResult]:
    """Overlap, confusion-matrix and volume metrics from voxel counts (TP, |P|, |G| and, for the
    metrics that need true negatives, ``n_total`` = voxels of the image that count)."""
    situation = empty_situation(n_pred, n_gt)
    fp, fn = n_pred - tp, n_gt - tp
    out = []
    for name in metrics:
        info = metric_info(name)
        if info.kind == "confusion" or name == "tn":
            if n_total is None:
                raise ValueError(f"{name} needs the number of image voxels (n_total)")
            tn = n_total - n_pred - n_gt + tp
            if tn < 0:
                raise ValueError(f"n_total {n_total} is smaller than the union of the masks")
            if name == "tn":
                out.append(MetricResult(name, float(tn)))
                continue
            value = _confusion_value(name, tp, fp, fn, tn)
            tag = "undefined" if math.isnan(value) else "natural"
            out.append(MetricResult(name, value, f"{situation}:{tag}" if situation else tag.replace("natural", "")))
        elif name == "tp":
            out.append(MetricResult(name, float(tp)))
        elif name == "fp":
            out.append(MetricResult(name, float(fp)))
        elif name == "fn":
            out.append(MetricResult(name, float(fn)))
        elif name == "volume_pred":
            out.append(MetricResult(name, n_pred * voxel_volume_ml))
        elif name == "volume_gt":
            out.append(MetricResult(name, n_gt * voxel_volume_ml))
        elif name in ("rvd", "abs_rvd"):
            if n_gt == 0:
                out.append(MetricResult(name, math.nan, f"{situation}:undefined"))
            else:
                rvd = (n_pred - n_gt) / n_gt
                out.append(MetricResult(name, rvd if name == "rvd" else abs(rvd), situation and f"{situation}:natural"))
        elif situation:
            value, tag = info.empty_value(situation, policy)
            out.append(MetricResult(name, value, tag))
        elif name == "dice":
            out.append(MetricResult(name, 2.0 * tp / (n_pred + n_gt)))
        elif name == "iou":
            out.append(MetricResult(name, tp / (n_pred + n_gt - tp)))
        elif name == "precision":
            out.append(MetricResult(name, tp / n_pred))
        elif name == "recall":
            out.append(MetricResult(name, tp / n_gt))
        elif name == "fnr":
            out.append(MetricResult(name, fn / n_gt))
        elif name == "fbeta":
            b2 = beta * beta
            out.append(MetricResult(name, (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)))
        elif name == "vs":
            out.append(MetricResult(name, 1.0 - abs(n_pred - n_gt) / (n_pred + n_gt)))
        else:
            raise ValueError(f"{name!r} is not an overlap metric")
    return out


def distance_metrics(
    sd: SurfaceDistances, metrics: Iterable[str], settings: MetricSettings
) -> list[MetricResult]:
    """Surface-distance metrics from one :class:`SurfaceDistances` (empty policy applied)."""
    situation = empty_situation(sd.pred_weights.size, sd.gt_weights.size)
    out = []
    for name in metrics:
        if situation:
            value, tag = metric_info(name).empty_value(situation, settings.empty)
            out.append(MetricResult(name, value, tag))
        else:
            out.append(MetricResult(name, _surface.distance_metric(sd, name, settings.percentile,
                                                                    settings.tolerance_mm)))
    return out


def shape_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], metrics: Iterable[str], settings: MetricSettings
) -> list[MetricResult]:
    """Boundary IoU, clDice and centre-of-mass distance (:mod:`segqc.metrics.shape`), empty policy
    applied."""
    from segqc.metrics import shape

    situation = empty_situation(int(np.count_nonzero(pred)), int(np.count_nonzero(gt)))
    out = []
    for name in metrics:
        if situation:
            value, tag = metric_info(name).empty_value(situation, settings.empty)
            out.append(MetricResult(name, value, tag))
        elif name == "boundary_iou":
            out.append(MetricResult(name, shape.boundary_iou(pred, gt, spacing, settings.boundary_width_mm,
                                                             definition=settings.boundary_definition)))  # type: ignore[arg-type]
        elif name == "cldice":
            out.append(MetricResult(name, shape.cl_dice(pred, gt)))
        elif name == "com_distance":
            out.append(MetricResult(name, shape.com_distance(pred, gt, spacing)))
        else:
            raise ValueError(f"{name!r} is not a shape metric")
    return out


def compare_masks(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    settings: MetricSettings | None = None,
    n_total: int | None = None,
) -> list[MetricResult]:
    """Every requested metric of a binary prediction against a binary ground truth.

    ``pred`` and ``gt``: same-shape 2D/3D arrays (non-zero = foreground; count metrics alone take
    arrays of any dimension, distance and shape metrics need 2D/3D); ``spacing`` in mm per
    axis (positive, finite); ``metrics``: names of :data:`MASK_METRICS` (a bare string is one
    name). Distances are in mm (grid steps for ``settings.distance`` chessboard/taxicab), volumes in
    ml (areas in mm² on a 2D grid, :func:`voxel_volume`). ``n_total``: voxels of the whole image
    when the arrays are a crop of it (true negatives count the voxels outside both masks; default:
    the arrays' size). Results come in the order of
    ``metrics``; empty-mask situations follow ``settings.empty`` and are tagged in
    ``MetricResult.empty``; confusion-matrix metrics (specificity, MCC, ...) are computed as they
    come and are NaN (tag ``undefined``) where a denominator is zero.
    """
    settings = settings or MetricSettings()
    metrics = check_metric_names(metrics, MASK_METRICS, "compare_masks")
    counted = [m for m in metrics if m in COUNT_METRICS]
    distance = [m for m in metrics if m in DISTANCE_METRICS]
    shaped = [m for m in metrics if m in SHAPE_METRICS]
    ndims = (2, 3) if distance or shaped else None  # voxel counts are defined on any grid, surfaces on 2D/3D
    pred, gt = mask_pair(pred, gt, ndims=ndims)
    spacing = check_spacing(spacing, pred.ndim)
    results: dict[str, MetricResult] = {}
    if counted:
        n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
        tp = int(np.count_nonzero(pred & gt)) if n_pred and n_gt else 0
        total = pred.size if n_total is None else int(n_total)
        for r in counts_metrics(tp, n_pred, n_gt, voxel_volume(spacing), counted, settings.empty, n_total=total,
                                beta=settings.beta):
            results[r.metric] = r
    if distance:
        sd = _surface.surface_distances(pred, gt, spacing, mode=settings.surface, norm=settings.distance)
        for r in distance_metrics(sd, distance, settings):
            results[r.metric] = r
    if shaped:
        for r in shape_metrics(pred, gt, spacing, shaped, settings):
            results[r.metric] = r
    return [results[m] for m in metrics]


def _single(name: str, pred, gt, spacing, settings: MetricSettings) -> MetricResult:
    return compare_masks(pred, gt, spacing, metrics=(name,), settings=settings)[0]


def dice(pred: np.ndarray, gt: np.ndarray, *, empty: EmptyPolicy | None = None) -> MetricResult:
    """Dice coefficient. Empty masks: both empty -> ``empty.both_empty`` (default NaN), one empty
    -> ``empty.gt_empty``/``empty.pred_empty`` (default worst, 0)."""
    spacing = (1.0,) * np.ndim(gt)
    return _single("dice", pred, gt, spacing, MetricSettings(empty=empty or EmptyPolicy()))


def hd95(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    empty: EmptyPolicy | None = None,
    surface: SurfaceMode = "surfel",
) -> MetricResult:
    """95th-percentile Hausdorff distance in mm (max of the two directed percentiles, surface
    elements weighted by area). ``spacing``: mm per axis; ``surface``: ``"surfel"`` (the
    boundary between foreground and background voxels, weighted by its area, as DeepMind's
    surface-distance) or ``"voxel"`` (the foreground voxels next to the background, unweighted, as
    MONAI). Empty masks: both empty -> ``empty.both_empty`` (default NaN), one empty -> worst
    (``empty.worst_distance_mm``, default 50 mm)."""
    return _single("hd95", pred, gt, spacing, MetricSettings(empty=empty or EmptyPolicy(), surface=surface))


def nsd(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    tolerance_mm: float = 1.0,
    empty: EmptyPolicy | None = None,
    surface: SurfaceMode = "surfel",
) -> MetricResult:
    """Normalized surface Dice: the fraction (in [0, 1], best 1) of both surfaces that lies
    within ``tolerance_mm`` (mm) of the other. ``spacing`` and ``surface`` as :func:`hd95`. Empty
    masks: both empty -> ``empty.both_empty`` (default NaN), one empty -> worst, 0."""
    settings = MetricSettings(tolerance_mm=tolerance_mm, empty=empty or EmptyPolicy(), surface=surface)
    return _single("nsd", pred, gt, spacing, settings)
