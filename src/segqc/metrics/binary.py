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
from segqc.metrics.registry import (
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    EmptyPolicy,
    metric_info,
)
from segqc.metrics.surface import SurfaceDistances, SurfaceMode


@dataclass(frozen=True)
class MetricResult:
    """One metric value; ``empty`` names the empty-mask rule that produced it ("" if none)."""

    metric: str
    value: float
    empty: str = ""


@dataclass(frozen=True)
class MetricSettings:
    """Options shared by all metrics.

    tolerance_mm: NSD tolerance in mm. percentile: of the robust Hausdorff distance (hd95).
    surface: ``"surfel"`` (DeepMind surface-distance definition) or ``"voxel"`` (MONAI).
    empty: the empty-mask policy.
    """

    tolerance_mm: float = 1.0
    percentile: float = 95.0
    surface: SurfaceMode = "surfel"
    empty: EmptyPolicy = field(default_factory=EmptyPolicy)

    def __post_init__(self) -> None:
        if not (self.tolerance_mm >= 0 and math.isfinite(self.tolerance_mm)):
            raise ValueError(f"tolerance_mm must be >= 0, got {self.tolerance_mm}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.surface not in _surface.SURFACE_MODES:
            raise ValueError(f"surface must be one of {_surface.SURFACE_MODES}, got {self.surface!r}")

    def to_dict(self) -> dict:
        return {
            "tolerance_mm": self.tolerance_mm,
            "percentile": self.percentile,
            "surface": self.surface,
            "empty": self.empty.to_dict(),
        }


def _situation(n_pred: int, n_gt: int) -> str:
    if n_pred == 0 and n_gt == 0:
        return "both_empty"
    if n_gt == 0:
        return "gt_empty"
    if n_pred == 0:
        return "pred_empty"
    return ""


def counts_metrics(
    tp: int,
    n_pred: int,
    n_gt: int,
    voxel_volume_ml: float,
    metrics: Iterable[str],
    policy: EmptyPolicy,
) -> list[MetricResult]:
    """Overlap and volume metrics from voxel counts (TP, |P|, |G|)."""
    situation = _situation(n_pred, n_gt)
    fp, fn = n_pred - tp, n_gt - tp
    out = []
    for name in metrics:
        if name == "tp":
            out.append(MetricResult(name, float(tp)))
        elif name == "fp":
            out.append(MetricResult(name, float(fp)))
        elif name == "fn":
            out.append(MetricResult(name, float(fn)))
        elif name == "volume_pred":
            out.append(MetricResult(name, n_pred * voxel_volume_ml))
        elif name == "volume_gt":
            out.append(MetricResult(name, n_gt * voxel_volume_ml))
        elif name == "rvd":
            if n_gt == 0:
                out.append(MetricResult(name, math.nan, f"{situation}:undefined"))
            else:
                out.append(MetricResult(name, (n_pred - n_gt) / n_gt, situation and f"{situation}:natural"))
        elif situation:
            value, tag = metric_info(name).empty_value(situation, policy)
            out.append(MetricResult(name, value, tag))
        elif name == "dice":
            out.append(MetricResult(name, 2.0 * tp / (n_pred + n_gt)))
        elif name == "iou":
            out.append(MetricResult(name, tp / (n_pred + n_gt - tp)))
        elif name == "precision":
            out.append(MetricResult(name, tp / n_pred))
        elif name == "recall":
            out.append(MetricResult(name, tp / n_gt))
        else:
            raise ValueError(f"{name!r} is not an overlap metric")
    return out


def distance_metrics(
    sd: SurfaceDistances, metrics: Iterable[str], settings: MetricSettings
) -> list[MetricResult]:
    """Surface-distance metrics from one :class:`SurfaceDistances` (empty policy applied)."""
    situation = _situation(sd.pred_weights.size, sd.gt_weights.size)
    out = []
    for name in metrics:
        if situation:
            value, tag = metric_info(name).empty_value(situation, settings.empty)
            out.append(MetricResult(name, value, tag))
        elif name == "hd":
            out.append(MetricResult(name, _surface.hausdorff(sd, 100.0)))
        elif name == "hd95":
            out.append(MetricResult(name, _surface.hausdorff(sd, settings.percentile)))
        elif name == "assd":
            out.append(MetricResult(name, _surface.assd(sd)))
        elif name == "masd":
            out.append(MetricResult(name, _surface.masd(sd)))
        elif name == "nsd":
            out.append(MetricResult(name, _surface.nsd(sd, settings.tolerance_mm)))
        else:
            raise ValueError(f"{name!r} is not a distance metric")
    return out


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return mask != 0


def compare_masks(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    settings: MetricSettings | None = None,
) -> list[MetricResult]:
    """Every requested metric of a binary prediction against a binary ground truth.

    ``pred`` and ``gt``: same-shape 2D/3D arrays (non-zero = foreground); ``spacing`` in mm per
    axis. Distances are in mm, volumes in ml. Results come in the order of ``metrics``; empty-mask
    situations follow ``settings.empty`` and are tagged in ``MetricResult.empty``.
    """
    settings = settings or MetricSettings()
    pred = _as_bool(pred, "pred")
    gt = _as_bool(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {pred.ndim}D mask")
    for name in metrics:
        metric_info(name)
    overlap = [m for m in metrics if m not in DISTANCE_METRICS]
    distance = [m for m in metrics if m in DISTANCE_METRICS]
    results: dict[str, MetricResult] = {}
    if overlap:
        n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
        tp = int(np.count_nonzero(pred & gt)) if n_pred and n_gt else 0
        voxel_ml = float(np.prod(spacing)) / 1000.0
        for r in counts_metrics(tp, n_pred, n_gt, voxel_ml, overlap, settings.empty):
            results[r.metric] = r
    if distance:
        sd = _surface.surface_distances(pred, gt, spacing, mode=settings.surface)
        for r in distance_metrics(sd, distance, settings):
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
    elements weighted by area). Empty masks: both empty -> ``empty.both_empty`` (default NaN),
    one empty -> worst (``empty.worst_distance_mm``, default 50 mm)."""
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
    """Normalized surface Dice at ``tolerance_mm``. Empty masks as :func:`hd95` (worst = 0)."""
    settings = MetricSettings(tolerance_mm=tolerance_mm, empty=empty or EmptyPolicy(), surface=surface)
    return _single("nsd", pred, gt, spacing, settings)
