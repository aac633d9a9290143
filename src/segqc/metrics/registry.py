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
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum


class EmptyRule(str, Enum):
    """What a comparison metric returns in an empty-mask situation. ``inf``: +inf for unbounded
    distance metrics (what MONAI and medpy return), the worst value for bounded ones."""

    NAN = "nan"
    BEST = "best"
    WORST = "worst"
    INF = "inf"


EMPTY_SITUATIONS = ("both_empty", "gt_empty", "pred_empty")


def empty_situation(n_pred: float, n_gt: float) -> str:
    """Which empty-mask situation a comparison is in, from the sizes of the prediction and the
    ground truth (voxels, instances, any count): ``both_empty``, ``gt_empty``, ``pred_empty``, or
    ``""`` when neither is empty."""
    if not n_pred and not n_gt:
        return "both_empty"
    if not n_gt:
        return "gt_empty"
    if not n_pred:
        return "pred_empty"
    return ""


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
            value = getattr(self, situation)
            try:
                object.__setattr__(self, situation, EmptyRule(value))
            except ValueError:
                choices = ", ".join(rule.value for rule in EmptyRule)
                raise ValueError(f"{situation}: {value!r} is not one of {choices}") from None
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


def resolve_empty(empty: EmptyPolicy | None, policy: EmptyPolicy | None, where: str) -> EmptyPolicy:
    """The empty-mask policy a metric function was given: ``empty=`` (the keyword every metric
    takes), or the older ``policy=`` keyword with a :class:`DeprecationWarning`; the default policy
    when neither is given. Both at once is a :class:`TypeError`."""
    if policy is not None:
        if empty is not None:
            raise TypeError(f"{where}: give the empty-mask policy once, as empty= (policy= is its old name)")
        warnings.warn(f"{where}: the keyword policy= is renamed empty=", DeprecationWarning, stacklevel=3)
        empty = policy
    return empty or EmptyPolicy()


@dataclass(frozen=True)
class MetricInfo:
    """Declaration of one metric. ``worst`` is ``inf`` for unbounded metrics."""

    name: str
    description: str
    unit: str
    best: float
    worst: float
    higher_is_better: bool
    kind: str  # "overlap", "confusion", "distance", "shape", "instance", "measure"
    peers: str = ""  # the peers that define the metric this way (docs and the README table)

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
        elif rule is EmptyRule.INF and not self.bounded:
            value = math.inf
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
            "peers": self.peers,
        }


_INF = math.inf

_SD = "DeepMind surface-distance, MONAI, MetricsReloaded"

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        # overlap: from the voxel counts; the empty-mask policy applies
        MetricInfo("dice", "Dice coefficient 2|P&G|/(|P|+|G|)", "1", 1.0, 0.0, True, "overlap", "all"),
        MetricInfo("iou", "Jaccard index |P&G|/|P|G|", "1", 1.0, 0.0, True, "overlap", "all"),
        MetricInfo("precision", "|P&G|/|P| (positive predictive value)", "1", 1.0, 0.0, True, "overlap", "all"),
        MetricInfo("recall", "|P&G|/|G| (sensitivity, true-positive rate)", "1", 1.0, 0.0, True, "overlap", "all"),
        MetricInfo("fnr", "false-negative rate FN/(TP+FN) = 1 - recall", "1", 0.0, 1.0, False, "overlap",
                   "MetricsReloaded, MONAI"),
        MetricInfo("fbeta", "F-beta score (1+b^2)TP/((1+b^2)TP+b^2 FN+FP); beta from the settings (1 = Dice)",
                   "1", 1.0, 0.0, True, "overlap", "MetricsReloaded"),
        MetricInfo("vs", "volume similarity 1-|(|P|-|G|)|/(|P|+|G|)", "1", 1.0, 0.0, True, "overlap",
                   "EvaluateSegmentation (Taha & Hanbury 2015)"),
        # confusion: need true negatives (voxels of the image outside both masks); computed as they
        # come, NaN ("undefined") where a denominator is zero; no empty-mask policy
        MetricInfo("tn", "true-negative voxels (image voxels outside both masks, ignored voxels excluded)",
                   "voxels", _INF, 0.0, True, "measure", "MONAI, MetricsReloaded"),
        MetricInfo("specificity", "TN/(TN+FP) (true-negative rate)", "1", 1.0, 0.0, True, "confusion",
                   "MONAI, MetricsReloaded, medpy"),
        MetricInfo("npv", "negative predictive value TN/(TN+FN)", "1", 1.0, 0.0, True, "confusion",
                   "MONAI, MetricsReloaded"),
        MetricInfo("fpr", "false-positive rate FP/(FP+TN) = 1 - specificity", "1", 0.0, 1.0, False, "confusion",
                   "MONAI, MetricsReloaded"),
        MetricInfo("accuracy", "(TP+TN)/N over the image", "1", 1.0, 0.0, True, "confusion",
                   "MONAI, MetricsReloaded"),
        MetricInfo("balanced_accuracy", "(recall + specificity)/2", "1", 1.0, 0.0, True, "confusion",
                   "MONAI, MetricsReloaded"),
        MetricInfo("mcc", "Matthews correlation (TP TN - FP FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))", "1", 1.0,
                   -1.0, True, "confusion", "MONAI, MetricsReloaded"),
        MetricInfo("kappa", "Cohen's kappa of the two binary maps over the image (po - pe)/(1 - pe)", "1", 1.0,
                   -1.0, True, "confusion", "MetricsReloaded, EvaluateSegmentation"),
        MetricInfo("tp", "true-positive voxels", "voxels", _INF, 0.0, True, "measure"),
        MetricInfo("fp", "false-positive voxels", "voxels", 0.0, _INF, False, "measure"),
        MetricInfo("fn", "false-negative voxels", "voxels", 0.0, _INF, False, "measure"),
        MetricInfo("volume_pred", "predicted volume", "ml", _INF, 0.0, True, "measure"),
        MetricInfo("volume_gt", "ground-truth volume", "ml", _INF, 0.0, True, "measure"),
        MetricInfo("rvd", "relative volume difference (Vp-Vg)/Vg", "1", 0.0, _INF, False, "measure", "medpy ravd"),
        MetricInfo("abs_rvd", "absolute relative volume difference |Vp-Vg|/Vg", "1", 0.0, _INF, False, "measure",
                   "MetricsReloaded, medpy |ravd|"),
        # distance: one surface-distance pass; units mm (grid steps for chessboard/taxicab)
        MetricInfo("hd", "Hausdorff distance (max of the two directed maxima)", "mm", 0.0, _INF, False, "distance",
                   _SD + ", medpy"),
        MetricInfo("hd95", "percentile Hausdorff distance: max of the two directed percentiles (95th by default)",
                   "mm", 0.0, _INF, False, "distance", _SD),
        MetricInfo("hd95_pooled", "percentile (95th by default) of both directed distance sets pooled",
                   "mm", 0.0, _INF, False, "distance", "medpy hd95, panoptica, GaNDLF, seg-metrics (own contour)"),
        MetricInfo("hd_pred_to_gt", "directed Hausdorff distance, prediction surface to GT surface", "mm", 0.0, _INF,
                   False, "distance", "MONAI directed, scipy directed_hausdorff"),
        MetricInfo("hd_gt_to_pred", "directed Hausdorff distance, GT surface to prediction surface", "mm", 0.0, _INF,
                   False, "distance", "MONAI directed"),
        MetricInfo("hd95_pred_to_gt", "directed percentile distance, prediction to GT (95th by default)", "mm", 0.0,
                   _INF, False, "distance", "MONAI directed"),
        MetricInfo("hd95_gt_to_pred", "directed percentile distance, GT to prediction (95th by default)", "mm", 0.0,
                   _INF, False, "distance", "MONAI directed"),
        MetricInfo("assd", "average symmetric surface distance (mean over both surfaces' elements)",
                   "mm", 0.0, _INF, False, "distance",
                   "medpy assd, MONAI symmetric, MetricsReloaded assd, panoptica, seg-metrics msd (own contour)"),
        MetricInfo("masd", "mean of the two directed average surface distances", "mm", 0.0, _INF, False,
                   "distance", "MetricsReloaded masd"),
        MetricInfo("asd", "average surface distance from the prediction to the GT (directed)", "mm", 0.0, _INF,
                   False, "distance", "medpy asd, MONAI non-symmetric"),
        MetricInfo("asd_gt_to_pred", "average surface distance from the GT to the prediction (directed)", "mm", 0.0,
                   _INF, False, "distance", "medpy asd(reference, result)"),
        MetricInfo("rmssd", "root-mean-square surface distance over both surfaces' elements", "mm", 0.0, _INF,
                   False, "distance", "SLIVER07, EvaluateSegmentation"),
        MetricInfo("median_sd", "median surface distance over both surfaces' elements", "mm", 0.0, _INF, False,
                   "distance", "seg-metrics mdsd (own contour)"),
        MetricInfo("nsd", "normalized surface Dice: fraction of both surfaces (pooled) within the tolerance", "1",
                   1.0, 0.0, True, "distance", _SD),
        MetricInfo("nsd_mean", "mean of the two directed fractions of surface within the tolerance", "1", 1.0, 0.0,
                   True, "distance", "GaNDLF, panoptica"),
        # shape
        MetricInfo("boundary_iou", "boundary IoU: IoU of the mask bands within the boundary width of each contour",
                   "1", 1.0, 0.0, True, "shape",
                   "Cheng et al. 2021, MetricsReloaded (--boundary-definition)"),
        MetricInfo("cldice", "centreline Dice of the skeletons (scikit-image)", "1", 1.0, 0.0, True, "shape",
                   "Shit et al. 2021, MetricsReloaded, panoptica"),
        MetricInfo("com_distance", "distance between the centres of mass", "mm", 0.0, _INF, False, "shape",
                   "MetricsReloaded, panoptica"),
        # instances: components of a mask, or the instances of an instance map
        MetricInfo("pq", "panoptic quality SQ x RQ (instances matched by IoU, threshold from the settings)", "1",
                   1.0, 0.0, True, "instance", "MONAI, panoptica"),
        MetricInfo("sq", "segmentation quality: mean IoU of the matched instances", "1", 1.0, 0.0, True, "instance",
                   "MONAI, panoptica"),
        MetricInfo("rq", "recognition quality TP/(TP + FP/2 + FN/2) of the instance matching", "1", 1.0, 0.0, True,
                   "instance", "MONAI, panoptica"),
        MetricInfo("lesion_dice", "lesion-wise Dice, hyper-parameter free (thesis eq. 16)", "1", 1.0, 0.0, True,
                   "instance", "CC-Metrics thesis"),
        # lesion-wise (BraTS 2023 / MIST): settings in LesionSettings; their own empty-case conventions
        MetricInfo("lesionwise_dice", "BraTS 2023 lesion-wise Dice: per GT lesion (dilation-merged, small ones "
                   "ignored) vs its matched components, FPs score 0, mean over lesions + FPs", "1", 1.0, 0.0, True,
                   "lesion", "BraTS 2023, MIST"),
        MetricInfo("lesionwise_hd95", "BraTS 2023 lesion-wise HD95; missed lesions and FPs count 374 mm", "mm", 0.0,
                   _INF, False, "lesion", "BraTS 2023, MIST"),
        MetricInfo("lesionwise_nsd", "lesion-wise NSD at the tolerance; missed lesions and FPs count 0", "1", 1.0,
                   0.0, True, "lesion", "MIST"),
        MetricInfo("lesion_tpr", "detected GT lesions / GT lesions (lesion sensitivity)", "1", 1.0, 0.0, True,
                   "lesion", "BraTS 2023, MIST"),
        MetricInfo("lesion_f1", "lesion detection F1 2TP/(2TP+FP+FN)", "1", 1.0, 0.0, True, "lesion", "MIST"),
        MetricInfo("lesion_fp", "false-positive predicted components (per case; the mean is FP per case)", "count",
                   0.0, _INF, False, "lesion", "BraTS 2023, MIST, FROC"),
        MetricInfo("lesion_gt", "GT lesions counted (after merging and the volume threshold)", "count", _INF, 0.0,
                   True, "measure", "BraTS 2023"),
        MetricInfo("lesion_detected", "GT lesions with a matched predicted component", "count", _INF, 0.0, True,
                   "measure", "BraTS 2023"),
        MetricInfo("generalized_dice", "generalized Dice of all classes, weights 1/|G_c|^2 by default (label 'all')",
                   "1", 1.0, 0.0, True, "multiclass", "MONAI GeneralizedDiceScore"),
        MetricInfo("soft_dice", "mean Dice over thresholds 0.1..0.9 (QUBIQ)", "1", 1.0, 0.0, True, "overlap",
                   "QUBIQ"),
    ]
}

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "tp", "fp", "fn", "volume_pred", "volume_gt", "rvd")
#: Metrics computed from the voxel counts (TP, |P|, |G| and the image size).
COUNT_METRICS = OVERLAP_METRICS + ("fnr", "fbeta", "vs", "tn", "specificity", "npv", "fpr", "accuracy",
                                   "balanced_accuracy", "mcc", "kappa", "abs_rvd")
DEFAULT_DISTANCE_METRICS = ("hd", "hd95", "assd", "masd", "nsd")
DISTANCE_METRICS = DEFAULT_DISTANCE_METRICS + (
    "hd95_pooled", "hd_pred_to_gt", "hd_gt_to_pred", "hd95_pred_to_gt", "hd95_gt_to_pred", "asd", "asd_gt_to_pred",
    "rmssd", "median_sd", "nsd_mean")
SHAPE_METRICS = ("boundary_iou", "cldice", "com_distance")
INSTANCE_METRICS = ("pq", "sq", "rq", "lesion_dice")
LESION_METRICS = ("lesionwise_dice", "lesionwise_hd95", "lesionwise_nsd", "lesion_tpr", "lesion_f1", "lesion_fp",
                  "lesion_gt", "lesion_detected")
#: Metrics of the whole label map, reported on the label ``all``.
MULTICLASS_METRICS = ("generalized_dice",)
DEFAULT_METRICS = OVERLAP_METRICS + DEFAULT_DISTANCE_METRICS
# Metrics that can be evaluated inside each generalized Voronoi region (reported as cc_<name>).
COMPONENT_METRICS = ("dice", "iou", "precision", "recall", "rvd") + DEFAULT_DISTANCE_METRICS

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


def check_metric_names(metrics: str | Iterable[str], supported: Sequence[str], where: str) -> tuple[str, ...]:
    """The metric names a function ``where`` is asked for, as a tuple (a bare string is one name).
    ``TypeError`` for a name that is not a string; ``ValueError`` for an unknown name (listing every
    metric) or one ``where`` does not compute (listing ``supported``)."""
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{where}: metric names must be strings, got {name!r}")
        if name not in supported:
            metric_info(name)
            raise ValueError(f"{where} does not compute {name}; supported: {', '.join(supported)}")
    return names


def parse_metric_names(text: str | None) -> tuple[str, ...]:
    """Parse a comma-separated metric list (``None`` -> defaults) and validate every name
    (``cc_<metric>`` names the per-component variant of a metric of :data:`COMPONENT_METRICS`)."""
    if text is None:
        return DEFAULT_METRICS
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError(f"the metric list {text!r} names no metric; known: {', '.join(METRICS)}")
    unknown = [n for n in names if n not in METRICS
               and not (n.startswith("cc_") and n[3:] in COMPONENT_METRICS)]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)} and the per-component "
                         f"{', '.join('cc_' + m for m in COMPONENT_METRICS)}")
    return names
