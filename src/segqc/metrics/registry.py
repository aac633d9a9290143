"""What every metric is: best/worst value, bounds, unit, and how empty masks are handled.

Empty masks follow one documented policy (:class:`EmptyPolicy`). A comparison of a prediction with
a ground truth is in one of four situations: neither mask empty, both empty (``both_empty``), only
the ground truth empty (``gt_empty``) or only the prediction empty (``pred_empty``). In the three
empty situations a *comparison* metric returns the value its rule names (``nan``, ``best`` or
``worst``; unbounded distance metrics use ``worst_distance_mm``, 50 mm by default as in the
CC-Metrics thesis) and the output row says which rule applied, e.g. ``gt_empty:worst``. *Measure*
metrics (voxel counts, volumes) are always defined and carry no rule; the relative volume
difference is defined (-1) for an empty prediction and undefined (NaN, ``gt_empty:undefined``)
without a ground-truth volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class EmptyRule(str, Enum):
    """What a comparison metric returns in an empty-mask situation."""

    NAN = "nan"
    BEST = "best"
    WORST = "worst"


EMPTY_SITUATIONS = ("both_empty", "gt_empty", "pred_empty")


@dataclass(frozen=True)
class EmptyPolicy:
    """Rules for empty masks (see module docstring). Defaults: both empty -> NaN (the case says
    nothing about quality; reported and counted as ``n_nan``), one empty -> worst value."""

    both_empty: EmptyRule = EmptyRule.NAN
    gt_empty: EmptyRule = EmptyRule.WORST
    pred_empty: EmptyRule = EmptyRule.WORST
    worst_distance_mm: float = 50.0

    def __post_init__(self) -> None:
        for situation in EMPTY_SITUATIONS:
            object.__setattr__(self, situation, EmptyRule(getattr(self, situation)))
        if not (self.worst_distance_mm > 0 and math.isfinite(self.worst_distance_mm)):
            raise ValueError(f"worst_distance_mm must be positive and finite, got {self.worst_distance_mm}")

    @classmethod
    def default(cls) -> EmptyPolicy:
        return cls()

    def rule(self, situation: str) -> EmptyRule:
        return getattr(self, situation)

    def to_dict(self) -> dict:
        return {
            "both_empty": self.both_empty.value,
            "gt_empty": self.gt_empty.value,
            "pred_empty": self.pred_empty.value,
            "worst_distance_mm": self.worst_distance_mm,
        }


@dataclass(frozen=True)
class MetricInfo:
    """Declaration of one metric. ``worst`` is ``inf`` for unbounded metrics."""

    name: str
    description: str
    unit: str
    best: float
    worst: float
    higher_is_better: bool
    kind: str  # "overlap", "distance", "instance", "measure"

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.worst)

    @property
    def is_comparison(self) -> bool:
        return self.kind != "measure"

    def worst_value(self, policy: EmptyPolicy) -> float:
        """The value used for the ``worst`` rule (``policy.worst_distance_mm`` if unbounded)."""
        return self.worst if self.bounded else policy.worst_distance_mm

    def empty_value(self, situation: str, policy: EmptyPolicy) -> tuple[float, str]:
        """(value, tag) for an empty-mask situation of a comparison metric."""
        rule = policy.rule(situation)
        if rule is EmptyRule.NAN:
            value = math.nan
        elif rule is EmptyRule.BEST:
            value = self.best
        else:
            value = self.worst_value(policy)
        return value, f"{situation}:{rule.value}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "best": self.best,
            "worst": self.worst if self.bounded else None,
            "bounded": self.bounded,
            "higher_is_better": self.higher_is_better,
            "kind": self.kind,
        }


_INF = math.inf

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("dice", "Dice coefficient 2|P&G|/(|P|+|G|)", "1", 1.0, 0.0, True, "overlap"),
        MetricInfo("iou", "Jaccard index |P&G|/|P|G|", "1", 1.0, 0.0, True, "overlap"),
        MetricInfo("precision", "|P&G|/|P| (positive predictive value)", "1", 1.0, 0.0, True, "overlap"),
        MetricInfo("recall", "|P&G|/|G| (sensitivity)", "1", 1.0, 0.0, True, "overlap"),
        MetricInfo("tp", "true-positive voxels", "voxels", _INF, 0.0, True, "measure"),
        MetricInfo("fp", "false-positive voxels", "voxels", 0.0, _INF, False, "measure"),
        MetricInfo("fn", "false-negative voxels", "voxels", 0.0, _INF, False, "measure"),
        MetricInfo("volume_pred", "predicted volume", "ml", _INF, 0.0, True, "measure"),
        MetricInfo("volume_gt", "ground-truth volume", "ml", _INF, 0.0, True, "measure"),
        MetricInfo("rvd", "relative volume difference (Vp-Vg)/Vg", "1", 0.0, _INF, False, "measure"),
        MetricInfo("hd", "Hausdorff distance (max of the two directed maxima)", "mm", 0.0, _INF, False, "distance"),
        MetricInfo("hd95", "95th-percentile Hausdorff distance (max of the two directed 95th percentiles)",
                   "mm", 0.0, _INF, False, "distance"),
        MetricInfo("assd", "average symmetric surface distance (mean over both surfaces' elements)",
                   "mm", 0.0, _INF, False, "distance"),
        MetricInfo("masd", "mean of the two directed average surface distances", "mm", 0.0, _INF, False,
                   "distance"),
        MetricInfo("nsd", "normalized surface Dice at a tolerance", "1", 1.0, 0.0, True, "distance"),
        MetricInfo("pq", "panoptic quality (components matched at IoU > 0.5)", "1", 1.0, 0.0, True, "instance"),
        MetricInfo("lesion_dice", "lesion-wise Dice (BraTS 2023 style)", "1", 1.0, 0.0, True, "instance"),
        MetricInfo("soft_dice", "mean Dice over thresholds 0.1..0.9 (QUBIQ)", "1", 1.0, 0.0, True, "overlap"),
    ]
}

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "tp", "fp", "fn", "volume_pred", "volume_gt", "rvd")
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd", "nsd")
INSTANCE_METRICS = ("pq", "lesion_dice")
DEFAULT_METRICS = OVERLAP_METRICS + DISTANCE_METRICS
# Metrics that can be evaluated inside each generalized Voronoi region (reported as cc_<name>).
COMPONENT_METRICS = ("dice", "iou", "precision", "recall", "rvd") + DISTANCE_METRICS

# Component-level detection counts reported with --per-component.
DETECTION_COUNTS: dict[str, str] = {
    "gt_components": "connected components of the ground truth",
    "gt_components_hit": "ground-truth components overlapped by the prediction",
    "gt_components_missed": "ground-truth components with no predicted voxel",
    "pred_components": "connected components of the prediction",
    "pred_components_unmatched": "predicted components that touch no ground-truth component",
}


def metric_info(name: str) -> MetricInfo:
    """Info of a metric by name; ``cc_<name>`` gives the per-component variant's info."""
    base = name[3:] if name.startswith("cc_") else name
    try:
        return METRICS[base]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def parse_metric_names(text: str | None) -> tuple[str, ...]:
    """Parse a comma-separated metric list (``None`` -> defaults) and validate every name
    (``cc_<metric>`` names the per-component variant of a metric of :data:`COMPONENT_METRICS`)."""
    if text is None or not text.strip():
        return DEFAULT_METRICS
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS
               and not (n.startswith("cc_") and n[3:] in COMPONENT_METRICS)]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)} and the per-component "
                         f"{', '.join('cc_' + m for m in COMPONENT_METRICS)}")
    return names
