"""Segmentation metrics: pure numpy/scipy kernels, no I/O, no torch.

Arguments come in the order ``pred, gt, spacing`` (spacing in mm per array axis); options are
keyword-only; inputs are never modified. Every metric is declared in :mod:`.registry` (best and
worst value, unit, empty-mask behaviour).
"""

from segqc.metrics.binary import MetricResult, MetricSettings, compare_masks, dice, hd95, nsd
from segqc.metrics.components import ComponentEvaluation, assign_regions, compare_components, label_components
from segqc.metrics.instance import (
    ComponentOverlap,
    component_overlap,
    instance_metrics,
    lesion_dice,
    panoptic_metrics,
    panoptic_quality,
)
from segqc.metrics.lesion import LesionScores, LesionSettings, froc_points, lesion_scores
from segqc.metrics.multiclass import generalized_dice
from segqc.metrics.registry import (
    COMPONENT_METRICS,
    DEFAULT_METRICS,
    METRICS,
    EmptyPolicy,
    EmptyRule,
    MetricInfo,
    metric_info,
    parse_metric_names,
)
from segqc.metrics.shape import boundary_iou, cl_dice, com_distance
from segqc.metrics.soft import soft_dice
from segqc.metrics.surface import SurfaceDistances, extract_surface, surface_distances

__all__ = [
    "LesionScores",
    "LesionSettings",
    "boundary_iou",
    "cl_dice",
    "com_distance",
    "froc_points",
    "generalized_dice",
    "lesion_scores",
    "panoptic_metrics",
    "COMPONENT_METRICS",
    "DEFAULT_METRICS",
    "METRICS",
    "ComponentEvaluation",
    "EmptyPolicy",
    "EmptyRule",
    "MetricInfo",
    "MetricResult",
    "MetricSettings",
    "SurfaceDistances",
    "assign_regions",
    "compare_components",
    "compare_masks",
    "dice",
    "extract_surface",
    "hd95",
    "instance_metrics",
    "label_components",
    "ComponentOverlap",
    "component_overlap",
    "lesion_dice",
    "metric_info",
    "nsd",
    "panoptic_quality",
    "parse_metric_names",
    "soft_dice",
    "surface_distances",
]
