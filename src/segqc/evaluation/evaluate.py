"""Evaluation with a ground truth: label maps -> tidy rows; folders -> ``metrics.csv`` + summary.

One row per (case, label or region, [component], metric) with the columns of :data:`COLUMNS`.
Per-component rows carry the component id and a ``cc_`` metric name; the per-case mean over
components has the same ``cc_`` name and an empty ``component``. Multi-class maps are evaluated one
class against the rest, each on the bounding box of that class in prediction ∪ ground truth (so
the cost of a class follows its size, not the image size), plus any user-defined regions (unions
of labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from segqc.config import ConfigBase, register_presets
from segqc.errors import InputError
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import DatasetInfo, Pairing, find_dataset_json, pair_cases
from segqc.io.geometry import check_same_geometry
from segqc.io.images import Image, read_label_map, resample_nearest
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricResult, MetricSettings, compare_masks
from segqc.metrics.components import compare_components
from segqc.metrics.instance import instance_metrics
from segqc.metrics.lesion import LesionSettings, detection_counts, froc_points, lesion_scores
from segqc.metrics.masks import label_boxes, union_box
from segqc.metrics.multiclass import generalized_dice, multiclass_dice
from segqc.metrics.registry import (
    COMPONENT_METRICS,
    DEFAULT_METRICS,
    INSTANCE_METRICS,
    LESION_METRICS,
    METRICS,
    MULTICLASS_METRICS,
    EmptyPolicy,
    empty_situation,
    metric_info,
)
from segqc.metrics.shape import check_band_width
from segqc.metrics.soft import soft_dice

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


@dataclass(frozen=True)
class EvaluationConfig(ConfigBase):
    """What to compute. ``label_set``: the classes, regions and ignore label
    (:class:`~segqc.io.labels.LabelSet`; default: every non-zero value present in the case);
    ``per_component``: add CC-metrics (``cc_<metric>``) and detection counts for the metrics of
    :data:`COMPONENT_METRICS` that are requested (``cc_<metric>`` names in ``metrics`` imply
    it); ``voronoi_units``: ``"mm"`` or ``"voxel"`` distances for the Voronoi partition;
    ``resample``: map a prediction whose grid differs onto the ground-truth grid (nearest
    neighbour, in physical space) instead of failing; ``multiclass_all``: add the subject-level
    multi-class Dice (QCResUNet appendix A) as label ``all`` and, when ``nsd`` is computed, the
    subject-level NSD: the mean over the classes present in either map (what QCResUNet predicts;
    regions are not counted); ``spacing``: pixel spacing (mm) of
    files that carry none (PNG/TIFF); ``soft``: prediction and ground truth are maps in [0, 1]
    (probabilities, fractions of raters), not label maps — only ``soft_dice`` is defined then,
    one row per case with label ``soft``; ``class_tolerances``: NSD tolerance (mm) per class value or
    name (MONAI's ``class_thresholds``); ``class_mean``: add label ``mean``, the per-case mean over
    the classes of every metric (NaN left out); ``lesion``: the lesion-wise metrics' parameters
    (BraTS 2023 GLI by default); ``instances``: the maps are instance maps (every non-zero value one
    object, touching objects stay apart), evaluated as one label ``instances`` (PQ/SQ/RQ on the
    instances, the other metrics on the foreground). On the config base (``to_dict``/``from_dict``, JSON,
    digest; the one preset is ``default``)."""

    KIND: ClassVar[str] = "evaluation"

    metrics: tuple[str, ...] = DEFAULT_METRICS
    settings: MetricSettings = field(default_factory=MetricSettings)
    per_component: bool = False
    connectivity: int = 26
    voronoi_units: str = "mm"
    label_set: LabelSet = field(default_factory=LabelSet)
    resample: bool = False
    multiclass_all: bool = False
    spacing: tuple[float, ...] | None = None
    soft: bool = False
    class_tolerances: tuple[tuple[str, float], ...] = ()
    class_mean: bool = False
    lesion: LesionSettings = field(default_factory=LesionSettings)
    instances: bool = False
    froc_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # the lesion metrics use the NSD tolerance and percentile of the metric settings; keep the
        # recorded settings true to that
        object.__setattr__(self, "lesion", replace(self.lesion, tolerance_mm=self.settings.tolerance_mm,
                                                   percentile=self.settings.percentile))
        tolerances = self.class_tolerances
        items = tolerances.items() if isinstance(tolerances, Mapping) else tolerances
        checked = []
        for key, mm in items:
            mm = float(mm)
            if not (mm >= 0 and np.isfinite(mm)):
                raise ValueError(f"the NSD tolerance of class {key} must be >= 0 mm, got {mm}")
            checked.append((str(key), mm))
        object.__setattr__(self, "class_tolerances", tuple(checked))
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)  # one name, not letters
        wanted_cc = tuple(m[3:] for m in metrics if m.startswith("cc_"))
        for name in metrics:
            metric_info(name)
        for name in wanted_cc:
            if name not in COMPONENT_METRICS:
                raise ValueError(f"cc_{name} is not defined; per-component metrics: "
                                 + ", ".join(f"cc_{m}" for m in COMPONENT_METRICS))
        if wanted_cc:  # cc_dice asks for the per-component evaluation of dice
            metrics = tuple(dict.fromkeys([m for m in metrics if not m.startswith("cc_")] + list(wanted_cc)))
            object.__setattr__(self, "per_component", True)
        object.__setattr__(self, "metrics", metrics)
        if self.soft and set(metrics) != {"soft_dice"}:
            raise ValueError("soft maps (--soft) have one metric, soft_dice; other metrics need label maps")
        thresholds = tuple(float(t) for t in self.froc_thresholds)
        if thresholds and not self.soft:
            raise ValueError("FROC points need probability maps: use them with --soft")
        if any(not 0 < t <= 1 for t in thresholds):
            raise ValueError(f"FROC thresholds must be in (0, 1], got {thresholds}")
        object.__setattr__(self, "froc_thresholds", tuple(sorted(set(thresholds))))
        if self.connectivity not in (4, 6, 8, 18, 26):
            raise ValueError(f"connectivity must be 6, 18 or 26 (3D) / 4 or 8 (2D), got {self.connectivity}")
        if self.voronoi_units not in ("mm", "voxel"):
            raise ValueError(f"voronoi_units must be 'mm' or 'voxel', got {self.voronoi_units!r}")
        if self.spacing is not None:
            spacing = tuple(float(v) for v in self.spacing)
            if not spacing or not all(np.isfinite(spacing)) or min(spacing) <= 0:
                raise ValueError(f"spacing must be positive numbers (mm), got {self.spacing}")
            object.__setattr__(self, "spacing", spacing)

    @property
    def component_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in COMPONENT_METRICS)

    def settings_for(self, label: int | str, name: str) -> MetricSettings:
        """The metric settings of one class or region: its own NSD tolerance when
        ``class_tolerances`` names its value or its name (as MONAI's ``class_thresholds``)."""
        for key, mm in self.class_tolerances:
            if key in (str(label), name):
                return replace(self.settings, tolerance_mm=mm)
        return self.settings

    def to_dict(self) -> dict:
        return {
            "metrics": list(self.metrics),
            **self.settings.to_dict(),
            "per_component": self.per_component,
            "connectivity": self.connectivity,
            "voronoi_units": self.voronoi_units,
            "labels": self.label_set.to_dict(),
            "resample": self.resample,
            "multiclass_all": self.multiclass_all,
            "spacing": None if self.spacing is None else list(self.spacing),
            "soft": self.soft,
            "class_tolerances": dict(self.class_tolerances),
            "class_mean": self.class_mean,
            "lesion": asdict(self.lesion),
            "instances": self.instances,
            "froc_thresholds": list(self.froc_thresholds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys or bad values
        are an :class:`InputError`."""
        values = {k: v for k, v in data.items() if k != "format"}
        try:
            settings = MetricSettings.pop_from(values)
            label_set = LabelSet.from_dict(values.pop("labels", {}))
            if "lesion" in values:
                values["lesion"] = LesionSettings(**values["lesion"])
            unknown = sorted(set(values) - cls.field_names())
            if unknown:
                raise InputError(f"unknown evaluation config field(s): {', '.join(unknown)}")
            return cls(settings=settings, label_set=label_set, **values)
        except (TypeError, ValueError, AttributeError) as error:
            raise InputError(f"invalid evaluation config: {error}") from None


register_presets(EvaluationConfig, {"default": EvaluationConfig()})




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
    pred, gt = np.asarray(pred), np.asarray(gt)
    pred = pred.astype(np.uint8) if pred.dtype == bool else pred
    gt = gt.astype(np.uint8) if gt.dtype == bool else gt
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    for name, array in (("prediction", pred), ("ground truth", gt)):
        if array.dtype.kind not in "iub":
            raise ValueError(f"{name} must be an integer label map, got dtype {array.dtype}")
        if array.dtype.kind == "i" and array.size and array.min() < 0:
            raise ValueError(f"{name} has negative label values")
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


def _read_checked(path: Path, config: EvaluationConfig, warnings: list[str]):
    image = read_label_map(path, spacing=config.spacing)
    if not config.instances:  # instance maps hold many values by nature
        warnings += config.label_set.check(image.array, path)
    return image


def _check_assumed_spacing(pred: Image, gt: Image) -> None:
    """A PNG/TIFF file (no stored spacing, 1 mm assumed) beside a file that carries another
    spacing: one line that says so and how to give it (``--spacing``), before a geometry check
    would quote the assumed 1 mm as if it were stored, or a resampling would map a grid of
    unknown size."""
    if pred.spacing_known == gt.spacing_known or pred.geometry.ndim != gt.geometry.ndim:
        return
    known, plain = (pred, gt) if pred.spacing_known else (gt, pred)
    if np.allclose(known.geometry.spacing, plain.geometry.spacing, rtol=1e-3, atol=0.0):
        return
    shown = ",".join(f"{v:g}" for v in known.geometry.spacing)
    other = "prediction" if known is pred else "ground truth"
    raise InputError(
        f"a PNG/TIFF file stores no spacing, but the {other} {known.path} has spacing {shown} mm; "
        f"pass --spacing {shown} to give the PNG/TIFF files theirs",
        plain.path,
    )


def _read_soft(path: Path, config: EvaluationConfig):
    from segqc.io.images import read_image

    image = read_image(path, dtype=np.float64, spacing=config.spacing, finite=True)
    values = image.array
    if values.size and (values.min() < 0 or values.max() > 1):
        raise InputError(f"--soft needs maps with values in [0, 1]; found [{values.min():.4g}, {values.max():.4g}]",
                         path)
    return image


def _evaluate_soft_case(task: CaseTask, config: EvaluationConfig) -> CaseResult:
    gt_path, pred_path = task.path("gt"), task.path("pred")
    assert gt_path is not None
    gt = _read_soft(gt_path, config)
    if pred_path is None:
        pred_array = np.zeros_like(gt.array)
    else:
        pred = _read_soft(pred_path, config)
        _check_assumed_spacing(pred, gt)
        check_same_geometry(pred.geometry, gt.geometry, pred_path=pred_path, gt_path=gt_path)
        pred_array = pred.array
    r = soft_dice(pred_array, gt.array, empty=config.settings.empty)
    records = [(task.case, "soft", "soft", None, r.metric, r.value, r.empty, "1")]
    if config.froc_thresholds:  # lesion detection at every threshold; the GT is binarised at 0.5
        counts = detection_counts(pred_array, gt.array >= 0.5, config.froc_thresholds, config.lesion,
                                  spacing=gt.geometry.spacing)
        for t, (tp, fn, fp) in zip(config.froc_thresholds, counts):
            records += [(task.case, "soft", "soft", None, f"{kind}@{t:g}", float(v), "", "count")
                        for kind, v in (("lesion_tp", tp), ("lesion_fn", fn), ("lesion_fp", fp))]
    table = pd.DataFrame(records, columns=COLUMNS)
    table["component"] = table["component"].astype("Int64")
    table["value"] = table["value"].astype(float)
    return CaseResult(table=table)


def evaluate_case(task: CaseTask, config: EvaluationConfig) -> CaseResult:
    """Read, check and evaluate one case (a missing prediction is evaluated as empty; with
    ``config.soft`` both files are maps in [0, 1] and the row is their soft Dice).

    Task inputs: ``gt`` (one file) and ``pred`` (one file, or none). The prediction must lie on
    the ground truth's grid (shape, spacing, direction and origin; see
    :func:`~segqc.io.geometry.check_same_geometry`) unless ``config.resample``.
    """
    if config.soft:
        return _evaluate_soft_case(task, config)
    warnings: list[str] = []
    gt_path, pred_path = task.path("gt"), task.path("pred")
    assert gt_path is not None
    gt = _read_checked(gt_path, config, warnings)
    if pred_path is None:
        pred_array = np.zeros_like(gt.array)
    else:
        pred = _read_checked(pred_path, config, warnings)
        _check_assumed_spacing(pred, gt)
        if config.resample and not pred.geometry.same_grid(gt.geometry):
            if pred.geometry.ndim != gt.geometry.ndim:
                check_same_geometry(pred.geometry, gt.geometry, pred_path=pred_path, gt_path=gt_path)
            had_foreground = bool(pred.array.any())
            pred = resample_nearest(pred, gt.geometry)
            if had_foreground and not pred.array.any():
                warnings.append(f"{task.case}: none of the prediction's foreground lies on the ground-truth grid after "
                                f"resampling (do the two grids overlap?); evaluated as an empty prediction")
        else:
            check_same_geometry(pred.geometry, gt.geometry, pred_path=pred_path, gt_path=gt_path)
        pred_array = pred.array
    if "boundary_iou" in config.metrics:
        try:
            check_band_width(config.settings.boundary_width_mm, gt.geometry.spacing,
                             config.settings.boundary_definition)
        except ValueError:
            smallest = min(gt.geometry.spacing)
            raise InputError(f"boundary_iou: --boundary-width {config.settings.boundary_width_mm:g} mm is below the "
                             f"smallest voxel spacing {smallest:g} mm, so its band holds no voxel; give "
                             f"--boundary-width {smallest:g} or more, or --boundary-definition metricsreloaded",
                             gt_path) from None
    table = evaluate_label_maps(pred_array, gt.array, gt.geometry.spacing, config, case=task.case,
                                spacing_known=gt.spacing_known)
    return CaseResult(table=table, warnings=warnings)


def froc_summary(table: pd.DataFrame, thresholds: Sequence[float]) -> list[dict]:
    """FROC points pooled over the cases of a soft evaluation: per threshold, lesion sensitivity
    ΣTP/Σ(TP+FN) and false positives per case (ΣFP / number of cases)."""
    counts = []
    for _, group in table.groupby("case", sort=True):
        values = dict(zip(group["metric"], group["value"]))
        if f"lesion_tp@{thresholds[0]:g}" not in values:
            continue
        counts.append(np.array([[values[f"{k}@{t:g}"] for k in ("lesion_tp", "lesion_fn", "lesion_fp")]
                                for t in thresholds], dtype=np.int64))
    if not counts:
        return []
    return [{"threshold": t, "sensitivity": sens, "fp_per_case": fp}
            for t, sens, fp in froc_points(counts, thresholds)]


@dataclass
class FolderEvaluation:
    """Result of :func:`evaluate_folder`: the tidy table plus what happened to every case.
    ``report``: the engine's :class:`~segqc.execution.RunReport`."""

    table: pd.DataFrame
    missing_pred: list[str]
    extra_pred: list[str]
    failed: dict[str, str]
    reused: list[str]
    summary: dict
    report: RunReport
    warnings: list[str]
    notes: list[str] = field(default_factory=list)  # the folder-level warnings (ignored files)


def _label_set(info: DatasetInfo | None, labels: Sequence[int] | None,
               regions: Mapping[str, Sequence[int]] | None) -> LabelSet:
    label_set = LabelSet.from_dataset_info(info)
    if labels is not None:
        label_set = label_set.restricted_to(labels)
    if regions is not None:
        label_set = label_set.with_regions(regions)
    return label_set


def _check_names_against_labels(config: EvaluationConfig) -> None:
    """With a complete label list (``dataset.json``), a region naming a label that is not a class
    of it, or a ``class_tolerances`` key that is no class value, class name or region name, is a
    ValueError naming it (a typo would otherwise change nothing, silently)."""
    label_set = config.label_set
    if not label_set.known:
        return
    classes = set(label_set.names)
    for region, members in label_set.regions.items():
        unknown = sorted(set(members) - classes - ({label_set.ignore} if label_set.ignore is not None else set()))
        if unknown:
            raise ValueError(f"region {region} names label(s) {', '.join(map(str, unknown))}, which are not classes "
                             f"of dataset.json ({', '.join(map(str, sorted(classes)))})")
    keys = {str(v) for v in classes} | set(label_set.names.values()) | set(label_set.regions)
    for key, _ in config.class_tolerances:
        if key not in keys:
            raise ValueError(f"class tolerance {key}: no class value, class name or region of that name "
                             f"(classes: {', '.join(f'{v}={n}' for v, n in label_set.names.items())})")


def _one_sided_labels(table: pd.DataFrame) -> list[str]:
    """A warning when, with the classes taken from the maps, some label values occur only in the
    predictions and others only in the ground truths: the two folders likely store one class
    under different values (e.g. masks saved as 0/255 against 0/1)."""
    if not len(table):
        return []
    tagged = table[table["empty"].astype(str) != ""]  # counts and volumes carry no tag
    # the empty-mask situation of each (class, case); untagged: both maps hold the class
    situation = {(str(label), case): str(tag).partition(":")[0]
                 for label, case, tag in zip(tagged["label"], tagged["case"], tagged["empty"], strict=True)}
    cases = table.groupby(table["label"].astype(str))["case"].unique()
    only_pred, only_gt = [], []
    for label, label_cases in cases.items():
        seen = [situation.get((label, case), "") for case in label_cases]
        if "gt_empty" in seen and set(seen) <= {"gt_empty", "both_empty"}:
            only_pred.append(str(label))
        if "pred_empty" in seen and set(seen) <= {"pred_empty", "both_empty"}:
            only_gt.append(str(label))
    if not (only_pred and only_gt):
        return []
    return [f"label value(s) {', '.join(only_pred)} occur only in the predictions and {', '.join(only_gt)} only in the "
            "ground truths: do both folders store the classes under the same values (e.g. not 0/255 against 0/1)? "
            "Give --labels or a dataset.json to say which classes to expect"]


def _unused_class_tolerances(config: EvaluationConfig, table: pd.DataFrame) -> list[str]:
    """One note per ``class_tolerances`` key that matched no evaluated class or region."""
    if not config.class_tolerances or not len(table):
        return []
    seen = set(table["label"].astype(str)) | set(table["label_name"].astype(str))
    return [f"class tolerance {key}: no evaluated class or region has that value or name; it was not used"
            for key, _ in config.class_tolerances if key not in seen]


def pair_folders(pred_dir: Path, gt_dir: Path, *, file_ending: str | None) -> Pairing:
    """:func:`~segqc.io.datasets.pair_cases` of a prediction and a ground-truth folder; an
    :class:`InputError` naming ``pred_dir`` when no prediction matches a ground truth (and, from
    ``pair_cases``, naming ``gt_dir`` when it holds no label file). Cheap: file names only, so a
    command that evaluates after long work (``qc benchmark``) checks its folders first."""
    pairing = pair_cases(pred_dir, gt_dir, file_ending=file_ending)
    if not pairing.matched:
        found = [sid for sid, _ in pairing.extra]
        example = f", e.g. '{found[0]}'" if found else ""
        raise InputError(f"no prediction matches a ground-truth case of {gt_dir} ({len(found)} prediction file(s)"
                         f"{example}; {len(pairing.missing)} ground truth(s), e.g. '{pairing.missing[0][0]}')",
                         pred_dir)
    return pairing


def evaluate_folder(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path | None = None,
    config: EvaluationConfig | None = None,
    *,
    metrics: Sequence[str] | None = None,
    tolerance_mm: float = 1.0,
    percentile: float = 95.0,
    surface: str = "surfel",
    empty: EmptyPolicy | None = None,
    per_component: bool = False,
    connectivity: int = 26,
    voronoi_units: str = "mm",
    labels: Sequence[int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    resample: bool = False,
    spacing: Sequence[float] | None = None,
    multiclass_all: bool = False,
    soft: bool = False,
    same_folder_ok: bool = False,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
    return_details: bool = False,
) -> pd.DataFrame | FolderEvaluation:
    """Evaluate every prediction in ``pred_dir`` against ``gt_dir`` (nnU-Net layout).

    Returns the tidy table (see module docstring). With ``out_dir``, writes ``metrics.csv``,
    ``summary.json`` and per-case Parquet parts under ``cases/`` (a rerun reuses a case only if
    the settings and the content of both its files are unchanged, so an interrupted run
    continues and a changed input is recomputed). Label names, regions and the ignore label come
    from ``dataset.json`` in ``gt_dir`` or its parent; ``labels`` restricts the evaluation to
    those classes (not 0, the background; other values are then allowed in the maps); ``regions`` replaces the regions.
    A ``manifest.csv`` in ``pred_dir`` or its parent (``segqc degrade`` output) maps each
    prediction file to the case it segments. A per-case input error (unreadable file, geometry
    mismatch, unexpected label) is reported in ``failed`` and ``summary.json`` and the other cases
    go on (when every case fails, the first failure is raised as an :class:`InputError`, unless
    ``return_details``). ``config``: an :class:`EvaluationConfig` to use as it is instead of the keyword
    settings (its label set, when left at the default, comes from ``dataset.json``). Raises
    :class:`InputError` when no prediction matches a ground truth or both folders
    are the same (unless ``same_folder_ok``: e.g. QC benchmarks of the ground truths themselves).
    ``soft``: both folders hold maps in [0, 1] (:class:`EvaluationConfig`); ``metrics`` is then
    ``soft_dice``.

    Keyword settings (the CLI options of ``segqc evaluate``): ``metrics`` (names of the metric
    registry, a bare string is one; default :data:`DEFAULT_METRICS`), ``tolerance_mm`` (NSD
    tolerance, mm), ``percentile`` (of ``hd95``), ``surface`` (``"surfel"`` or ``"voxel"``),
    ``empty`` (the :class:`EmptyPolicy`: both empty -> NaN, one empty -> worst, by default),
    ``per_component`` (CC-metrics, ``cc_`` rows), ``connectivity`` (6/18/26; 4/8 in 2D) and
    ``voronoi_units`` (``"mm"`` or ``"voxel"``) of the components, ``resample`` (predictions on
    another grid are mapped onto the ground truth's, nearest neighbour), ``spacing`` (mm per
    axis for PNG/TIFF files, which store none), ``multiclass_all`` (adds label ``all``: the
    multi-class Dice), ``jobs`` (worker processes; 0 = one per core), ``scheduler`` (a Dask
    distributed address), ``progress`` (a progress bar), ``return_details`` (a
    :class:`FolderEvaluation` with the summary and the run report instead of the table).
    """
    from segqc.evaluation.aggregate import summarise

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if pred_dir.resolve() == gt_dir.resolve() and not same_folder_ok:
        raise InputError("is given as both the prediction and the ground-truth folder", pred_dir)
    info = find_dataset_json(gt_dir)
    ending = info.file_ending if info else None
    if config is not None:
        if config.label_set == LabelSet():
            config = replace(config, label_set=_label_set(info, labels, regions))
    else:
        config = EvaluationConfig(
            metrics=((metrics,) if isinstance(metrics, str) else tuple(metrics)) if metrics else DEFAULT_METRICS,
            settings=MetricSettings(tolerance_mm=tolerance_mm, percentile=percentile, surface=surface,  # type: ignore[arg-type]
                                    empty=empty or EmptyPolicy()),
            per_component=per_component,
            connectivity=connectivity,
            voronoi_units=voronoi_units,
            label_set=_label_set(info, labels, regions),
            resample=resample,
            multiclass_all=multiclass_all,
            spacing=tuple(spacing) if spacing is not None else None,
            soft=soft,
        )
    _check_names_against_labels(config)
    pairing = pair_folders(pred_dir, gt_dir, file_ending=ending)
    tasks = [CaseTask(sid, {"pred": (p,), "gt": (g,)}) for sid, _, p, g in pairing.matched]
    matched = {t.case for t in tasks}
    tasks += [CaseTask(case, {"pred": (), "gt": (g,)}) for case, g in pairing.missing if case not in matched]
    tasks.sort(key=lambda t: t.case)

    report = run_cases(partial(evaluate_case, config=config), tasks, out_dir, settings=config, jobs=jobs,
                       scheduler=scheduler, progress=progress, description="evaluate",
                       extra_digest=f"rows-{ROWS_REVISION}")
    table = report.table if len(report.table) else pd.DataFrame(columns=COLUMNS)
    table = table[COLUMNS].copy()
    table["component"] = table["component"].astype("Int64")
    table["empty"] = table["empty"].fillna("")
    table["label"] = table["label"].astype(str)

    notes = [f"{path}: ignored ({why})" for path, why in pairing.ignored]
    notes += _unused_class_tolerances(config, table)
    if report.done and not len(table):
        notes.append(f"no class is present in any prediction or ground truth of the {len(report.done)} case(s), "
                     "and no class list (dataset.json or labels) says which to expect: nothing was evaluated")
    elif not config.label_set.known:
        rowless = sorted(set(report.done) - set(table["case"]))
        if rowless:
            shown = ", ".join(rowless[:3]) + (", ..." if len(rowless) > 3 else "")
            notes.append(f"{len(rowless)} case(s) have no class in either map and no class list (dataset.json or "
                         f"labels) says which to expect, so they have no rows ({shown}); give the labels to score "
                         "them by the empty-mask rules")
    if not config.label_set.known:
        notes += _one_sided_labels(table)
    warnings = notes + report.warnings
    units = sorted(set(table["unit"]) - {"1", "voxels", "count"}) if len(table) else []
    summary = {
        "settings": config.to_dict(),
        "units": units,
        "cases": {
            "evaluated": sorted(report.done),
            "missing_prediction": [c for c, _ in pairing.missing],
            "extra_prediction": [c for c, _ in pairing.extra],
            "ignored_files": [str(p) for p, _ in pairing.ignored],
            **report.cases_dict(),
            "warnings": warnings,
        },
        "labels": summarise(table, config.metrics),
        **({"froc": froc_summary(table, config.froc_thresholds)} if config.froc_thresholds else {}),
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_csv_atomic(out / "metrics.csv", table)
        write_json_atomic(out / "summary.json", summary)
    if not return_details and report.failed and not report.done:  # an empty table would hide why
        raise InputError(f"{next(iter(report.failed.values()))} (all {len(report.failed)} case(s) failed)")
    if return_details:
        return FolderEvaluation(
            table=table,
            missing_pred=[c for c, _ in pairing.missing],
            extra_pred=[c for c, _ in pairing.extra],
            failed=report.failed,
            reused=sorted(report.reused),
            summary=summary,
            report=report,
            warnings=warnings,
            notes=notes,
        )
    return table


__all__ = ["COLUMNS", "EvaluationConfig", "FolderEvaluation", "evaluate_case", "evaluate_folder", "evaluate_label_maps"]
