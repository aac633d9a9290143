"""Label maps -> tidy metric rows, one pair of arrays at a time (no I/O).

One row per (case, label or region, [component], metric) with the columns of :data:`COLUMNS`.
Per-component rows carry the component id and a ``cc_`` metric name; the per-case mean over
components has the same ``cc_`` name and an empty ``component``. Multi-class maps are evaluated one
class against the rest, each on the bounding box of that class in prediction ∪ ground truth (so
the cost of a class follows its size, not the image size), plus any user-defined regions (unions
of labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from segqc.evaluation.config import EvaluationConfig
from segqc.metrics.binary import MetricResult, MetricSettings, compare_masks
from segqc.metrics.components import compare_components
from segqc.metrics.instance import instance_metrics
from segqc.metrics.lesion import lesion_scores
from segqc.metrics.masks import label_boxes, union_box
from segqc.metrics.multiclass import check_label_maps, generalized_dice, multiclass_dice
from segqc.metrics.registry import (
    INSTANCE_METRICS,
    LESION_METRICS,
    METRICS,
    MULTICLASS_METRICS,
    empty_situation,
    metric_info,
)
from segqc.metrics.soft import soft_dice

__all__ = ["CLASS_MEAN_LABEL", "COLUMNS", "ROWS_REVISION", "evaluate_label_maps"]

#: Label of the per-case mean over classes (``class_mean``).
CLASS_MEAN_LABEL = "mean"

COLUMNS = ["case", "label", "label_name", "component", "metric", "value", "empty", "unit"]

#: Raised whenever the same inputs and settings give other rows (2: the volumes of 2D grids became
#: areas in mm²), so that a rerun recomputes the cases an older segqc finished instead of mixing both.
ROWS_REVISION = 2

#: Unit of a metric's values when the image carries no physical spacing (PNG/TIFF without
#: ``spacing``): distances are in pixels and volumes in thousands of pixels (voxel volume 1; the
#: areas of a 2D grid in pixels, see :func:`_unit`).
_PIXEL_UNITS = {"mm": "pixel", "ml": "1000 pixels"}


def _mask_rows(pred: np.ndarray, gt: np.ndarray, spacing, config: EvaluationConfig, settings: MetricSettings,
               n_total: int) -> list[tuple]:
    """(component, metric, value, empty) tuples for one binary pair (a crop of an image of
    ``n_total`` voxels)."""
    rows: list[tuple] = []
    plain = [m for m in config.metrics if m not in INSTANCE_METRICS and m not in MULTICLASS_METRICS
             and m not in LESION_METRICS and m != "soft_dice"]
    for r in compare_masks(pred, gt, spacing, metrics=plain, settings=settings, n_total=n_total):
        rows.append((None, r.metric, r.value, r.empty))
    if "soft_dice" in config.metrics:  # on label maps: the binary masks as {0, 1} probability maps
        r = soft_dice(pred.astype(np.float32), gt.astype(np.float32), empty=config.settings.empty)
        rows.append((None, r.metric, r.value, r.empty))
    instance = [m for m in config.metrics if m in INSTANCE_METRICS]
    if instance:
        for r in instance_metrics(pred, gt, instance, connectivity=config.connectivity, settings=settings):
            rows.append((None, r.metric, r.value, r.empty))
    if config.per_component:
        cc = compare_components(
            pred,
            gt,
            spacing,
            metrics=config.component_metrics,
            settings=settings,
            connectivity=config.connectivity,
            voronoi_units=config.voronoi_units,  # type: ignore[arg-type]
        )
        for k, r in cc.per_component:
            rows.append((k, f"cc_{r.metric}", r.value, r.empty))
        for r in cc.means + cc.detection:
            rows.append((None, r.metric, r.value, r.empty))
    return rows


_LESION_FIELDS = {"lesionwise_dice": "lesion_dice", "lesionwise_hd95": "lesion_hd95", "lesionwise_nsd": "lesion_nsd",
                  "lesion_tpr": "lesion_tpr", "lesion_f1": "lesion_f1", "lesion_fp": "n_fp", "lesion_gt": "n_gt",
                  "lesion_detected": "n_detected"}


def _lesion_rows(pred: np.ndarray, gt: np.ndarray, spacing, config: EvaluationConfig, settings: MetricSettings,
                 names: Sequence[str]) -> list[tuple]:
    """BraTS-2023 / MIST lesion-wise rows; the NSD tolerance and percentile come from the metric
    settings, everything else (the surfel surfaces BraTS and MIST use, whatever ``--surface``
    says) from ``config.lesion``. Empty cases follow BraTS's own conventions (tag
    ``<situation>:lesion``), not the empty-mask policy."""
    lesion_settings = replace(config.lesion, tolerance_mm=settings.tolerance_mm, percentile=settings.percentile)
    scores = lesion_scores(pred, gt, spacing, lesion_settings).to_dict()
    situation = empty_situation(bool(pred.any()), bool(gt.any()))
    tag = f"{situation}:lesion" if situation else ""
    rows = []
    for name in names:
        value = float(scores[_LESION_FIELDS[name]])
        # the detection rate of no ground-truth lesion (all below the minimum volume) is undefined
        rows.append((None, name, value, tag or ("no_gt_lesion:undefined" if np.isnan(value) else "")))
    return rows


def _unit(metric: str, spacing_known: bool, settings: MetricSettings | None = None, ndim: int = 3) -> str:
    """The unit column of a metric's rows: the registry's unit, grid steps for chessboard / taxicab
    distances, mm² for the volumes of a 2D grid (:func:`~segqc.metrics.binary.voxel_volume`), and
    pixels where the files store no spacing."""
    name = metric.removeprefix("cc_")
    unit = METRICS[name].unit if name in METRICS else "count"
    if unit == "mm" and settings is not None and settings.distance != "euclidean" and METRICS[name].kind == "distance":
        return "voxel"  # chessboard / taxicab distances are in grid steps (MONAI)
    if unit == "ml" and ndim == 2:
        return "mm²" if spacing_known else "pixels"
    return unit if spacing_known else _PIXEL_UNITS.get(unit, unit)


def _class_mean_records(records: list[tuple], class_labels: set[str], case: str) -> list[tuple]:
    """Per metric, the mean over the classes of one case (NaN values left out, as MONAI's
    ``mean`` reduction); NaN with tag ``all_nan`` when no class has a value."""
    by_metric: dict[str, list[tuple]] = {}
    for record in records:
        if record[1] in class_labels and record[3] is None:
            by_metric.setdefault(record[4], []).append(record)
    out = []
    for metric, rows in by_metric.items():
        values = np.array([r[5] for r in rows], dtype=float)
        finite = values[~np.isnan(values)]
        value, tag = (float(finite.mean()), "") if finite.size else (float("nan"), "all_nan")
        out.append((case, CLASS_MEAN_LABEL, CLASS_MEAN_LABEL, None, metric, value, tag, rows[0][7]))
    return out


def _subject_nsd_record(records: list[tuple], class_labels: set[str], case: str, overall: MetricResult) -> tuple:
    """Label ``all`` of the NSD: the per-case class mean (:func:`_class_mean_records`) of the
    classes' NSD (unitless, 0-1) over the classes present in either map (a class in only one map
    counts with its ``gt_empty`` / ``pred_empty`` value, default 0). Every class absent from both
    maps: the two maps are all background and the multi-class Dice's both-empty rule
    (``overall``) applies."""
    present = [r for r in records if r[4] == "nsd" and not str(r[6]).startswith("both_empty")]
    means = _class_mean_records(present, class_labels, case)
    value, tag = (means[0][5], means[0][6]) if means else (overall.value, overall.empty)
    return (case, "all", "all", None, "nsd", value, tag, "1")


def evaluate_label_maps(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    config: EvaluationConfig | None = None,
    *,
    case: str = "",
    spacing_known: bool = True,
) -> pd.DataFrame:
    """Tidy metric table of a multi-class prediction against its ground truth (same grid).

    Arrays are integer label maps (0 = background); ``spacing`` in mm per axis
    (``spacing_known`` False: the grid has no physical spacing, units say "pixel"). Voxels
    whose ground truth is the label set's ignore label are removed from both maps first.
    Empty masks: every row says in ``empty`` which rule of ``config.settings.empty`` applied.
    """
    config = config or EvaluationConfig()
    pred, gt = check_label_maps(pred, gt)
    pred = pred.astype(np.uint8) if pred.dtype == bool else pred
    gt = gt.astype(np.uint8) if gt.dtype == bool else gt
    if config.instances:
        return _evaluate_instance_maps(pred, gt, spacing, config, case=case, spacing_known=spacing_known)
    labels = config.label_set
    n_total = gt.size - (int(np.count_nonzero(gt == labels.ignore)) if labels.ignore is not None else 0)
    pred, gt = labels.apply_ignore(pred, gt)
    classes = labels.classes_of(pred, gt)
    pred_boxes, gt_boxes = label_boxes(pred), label_boxes(gt)
    lesion_names = [m for m in config.metrics if m in LESION_METRICS]
    records = []
    for label, name, members in labels.targets(classes):
        box = union_box([pred_boxes.get(m) for m in members] + [gt_boxes.get(m) for m in members], gt.ndim)
        if box is None:  # absent from both: a zero-size crop gives the both-empty rules
            box = tuple(slice(0, 0) for _ in range(gt.ndim))
        p, g = pred[box], gt[box]
        if len(members) == 1:
            pm, gm = p == members[0], g == members[0]
        else:
            pm, gm = np.isin(p, members), np.isin(g, members)
        if pm.size == 0:  # metrics need a non-empty grid; one empty voxel is equivalent
            pm = np.zeros((1,) * gt.ndim, dtype=bool)
            gm = np.zeros((1,) * gt.ndim, dtype=bool)
        settings = config.settings_for(label, name)
        rows = _mask_rows(pm, gm, spacing, config, settings, n_total)
        if lesion_names:  # on the whole image: dilations and MIST's image diagonal must not see a crop
            full = (pred == members[0], gt == members[0]) if len(members) == 1 else (
                np.isin(pred, members), np.isin(gt, members))
            rows += _lesion_rows(full[0], full[1], spacing, config, settings, lesion_names)
        for component, metric, value, empty in rows:
            records.append((case, str(label), name, component, metric, value, empty,
                            _unit(metric, spacing_known, settings, gt.ndim)))
    if config.class_mean:
        records += _class_mean_records(records, {str(c) for c in classes}, case)
    if config.multiclass_all:
        if labels.restricted:  # only the chosen classes take part
            keep = np.isin(pred, classes), np.isin(gt, classes)
            pred, gt = np.where(keep[0], pred, 0), np.where(keep[1], gt, 0)
        overall = multiclass_dice(pred, gt, empty=config.settings.empty)
        records.append((case, "all", "all", None, "dice", overall.value, overall.empty, "1"))
        if "nsd" in config.metrics:
            records.append(_subject_nsd_record(records, {str(c) for c in classes}, case, overall))
    if "generalized_dice" in config.metrics:
        if classes:
            gd = generalized_dice(pred, gt, classes, empty=config.settings.empty)
            value, tag = gd.value, gd.empty
        else:  # no class in either map: the both-empty rule
            value, tag = metric_info("generalized_dice").empty_value("both_empty", config.settings.empty)
        records.append((case, "all", "all", None, "generalized_dice", value, tag, "1"))
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    frame["component"] = frame["component"].astype("Int64")
    frame["value"] = frame["value"].astype(float)
    return frame


def _evaluate_instance_maps(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], config: EvaluationConfig,
                            *, case: str, spacing_known: bool) -> pd.DataFrame:
    """Rows of label ``instances``: PQ/SQ/RQ (and lesion Dice) of the instance maps as they are, the
    other metrics of the foreground masks."""
    label = "instances"
    pm, gm = pred != 0, gt != 0
    settings = config.settings
    rows = _mask_rows(pm, gm, spacing, replace(config, metrics=tuple(m for m in config.metrics
                                                                      if m not in INSTANCE_METRICS)),
                      settings, gt.size)
    instance = [m for m in config.metrics if m in INSTANCE_METRICS]
    if instance:
        rows += [(None, r.metric, r.value, r.empty)
                 for r in instance_metrics(pred, gt, instance, settings=settings, instance_maps=True)]
    lesion_names = [m for m in config.metrics if m in LESION_METRICS]
    if lesion_names:
        rows += _lesion_rows(pm, gm, spacing, config, settings, lesion_names)
    records = [(case, label, label, component, metric, value, empty,
                _unit(metric, spacing_known, settings, gt.ndim)) for component, metric, value, empty in rows]
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    frame["component"] = frame["component"].astype("Int64")
    frame["value"] = frame["value"].astype(float)
    return frame
