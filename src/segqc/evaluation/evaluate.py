"""Evaluation with a ground truth: label maps -> tidy rows; folders -> ``metrics.csv`` + summary.

One row per (case, label or region, [component], metric) with the columns of :data:`COLUMNS`.
Per-component rows carry the component id and a ``cc_`` metric name; the per-case mean over
components has the same ``cc_`` name and an empty ``component``. Multi-class maps are evaluated one
class against the rest, each on the bounding box of that class in prediction ∪ ground truth (so
the cost of a class follows its size, not the image size), plus any user-defined regions (unions
of labels).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from segqc.errors import InputError, SegqcError
from segqc.execution import map_cases
from segqc.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from segqc.io.datasets import find_dataset_json, pair_cases
from segqc.io.images import check_same_geometry, read_label_map, resample_nearest
from segqc.metrics.binary import MetricSettings, compare_masks
from segqc.metrics.components import compare_components
from segqc.metrics.instance import instance_metrics
from segqc.metrics.multiclass import present_labels
from segqc.metrics.registry import (
    COMPONENT_METRICS,
    DEFAULT_METRICS,
    INSTANCE_METRICS,
    EmptyPolicy,
    metric_info,
)

COLUMNS = ["case", "label", "label_name", "component", "metric", "value", "empty"]


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compute. ``labels``: classes to evaluate (``None``: every non-zero label present in
    the case, or the labels of ``dataset.json``); ``regions``: name -> labels whose union is
    evaluated as one mask; ``per_component``: add CC-metrics (``cc_<metric>``) and detection counts
    for the metrics of :data:`COMPONENT_METRICS` that are requested; ``voronoi_units``: ``"mm"`` or
    ``"voxel"`` distances for the Voronoi partition; ``resample``: map a prediction whose grid
    differs onto the ground-truth grid (nearest neighbour) instead of failing."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    settings: MetricSettings = field(default_factory=MetricSettings)
    per_component: bool = False
    connectivity: int = 26
    voronoi_units: str = "mm"
    labels: tuple[int, ...] | None = None
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    label_names: Mapping[int, str] = field(default_factory=dict)
    resample: bool = False

    def __post_init__(self) -> None:
        for name in self.metrics:
            metric_info(name)
        if self.connectivity not in (4, 6, 8, 18, 26):
            raise ValueError(f"connectivity must be 6, 18 or 26 (3D) / 4 or 8 (2D), got {self.connectivity}")
        if self.voronoi_units not in ("mm", "voxel"):
            raise ValueError(f"voronoi_units must be 'mm' or 'voxel', got {self.voronoi_units!r}")

    @property
    def component_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in COMPONENT_METRICS)

    def to_dict(self) -> dict:
        return {
            "metrics": list(self.metrics),
            **self.settings.to_dict(),
            "per_component": self.per_component,
            "connectivity": self.connectivity,
            "voronoi_units": self.voronoi_units,
            "labels": None if self.labels is None else list(self.labels),
            "regions": {k: list(v) for k, v in self.regions.items()},
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "resample": self.resample,
        }

    def digest(self) -> str:
        """Short hash of the settings: finished cases are reused only under identical settings."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _bounding_boxes(array: np.ndarray) -> dict[int, tuple[slice, ...]]:
    boxes = ndimage.find_objects(array) if array.size else []
    return {i + 1: box for i, box in enumerate(boxes) if box is not None}


def _union_box(boxes: Sequence[tuple[slice, ...] | None], ndim: int) -> tuple[slice, ...] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(
        slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(ndim)
    )


def _mask_rows(pred: np.ndarray, gt: np.ndarray, spacing, config: EvaluationConfig) -> list[tuple]:
    """(component, metric, value, empty) tuples for one binary pair."""
    rows: list[tuple] = []
    plain = [m for m in config.metrics if m not in INSTANCE_METRICS]
    for r in compare_masks(pred, gt, spacing, metrics=plain, settings=config.settings):
        rows.append((None, r.metric, r.value, r.empty))
    instance = [m for m in config.metrics if m in INSTANCE_METRICS]
    if instance:
        for r in instance_metrics(pred, gt, instance, connectivity=config.connectivity, policy=config.settings.empty):
            rows.append((None, r.metric, r.value, r.empty))
    if config.per_component:
        cc = compare_components(
            pred,
            gt,
            spacing,
            metrics=config.component_metrics,
            settings=config.settings,
            connectivity=config.connectivity,
            voronoi_units=config.voronoi_units,  # type: ignore[arg-type]
        )
        for k, r in cc.per_component:
            rows.append((k, f"cc_{r.metric}", r.value, r.empty))
        for r in cc.means + cc.detection:
            rows.append((None, r.metric, r.value, r.empty))
    return rows


def evaluate_label_maps(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    config: EvaluationConfig | None = None,
    *,
    case: str = "",
) -> pd.DataFrame:
    """Tidy metric table of a multi-class prediction against its ground truth (same grid).

    Arrays are integer label maps (0 = background); ``spacing`` in mm per axis.
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
    labels = list(config.labels) if config.labels is not None else sorted(set(present_labels(gt)) | set(present_labels(pred)))
    pred_boxes, gt_boxes = _bounding_boxes(pred), _bounding_boxes(gt)
    records = []
    targets: list[tuple[object, str, tuple[int, ...]]] = [
        (label, config.label_names.get(label, str(label)), (label,)) for label in labels
    ]
    targets += [(name, name, tuple(members)) for name, members in config.regions.items()]
    for label, name, members in targets:
        box = _union_box([pred_boxes.get(m) for m in members] + [gt_boxes.get(m) for m in members], gt.ndim)
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
        for component, metric, value, empty in _mask_rows(pm, gm, spacing, config):
            records.append((case, label, name, component, metric, value, empty))
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    frame["component"] = frame["component"].astype("Int64")
    return frame


@dataclass(frozen=True)
class CaseTask:
    """One case to evaluate. ``pred_path`` is ``None`` when the prediction is missing."""

    case: str
    pred_path: Path | None
    gt_path: Path


def evaluate_case(task: CaseTask, config: EvaluationConfig) -> pd.DataFrame:
    """Read, check and evaluate one case (a missing prediction is evaluated as empty)."""
    gt = read_label_map(task.gt_path)
    if task.pred_path is None:
        pred_array = np.zeros_like(gt.array)
    else:
        pred = read_label_map(task.pred_path)
        if config.resample and pred.geometry != gt.geometry:
            try:
                check_same_geometry(pred.geometry, gt.geometry, pred_path=task.pred_path, gt_path=task.gt_path)
            except InputError:
                pred = resample_nearest(pred, gt.geometry)
        else:
            check_same_geometry(pred.geometry, gt.geometry, pred_path=task.pred_path, gt_path=task.gt_path)
        pred_array = pred.array
        if config.labels is not None:
            _check_expected_labels(pred_array, config, task.pred_path)
    if config.labels is not None:
        _check_expected_labels(gt.array, config, task.gt_path)
    return evaluate_label_maps(pred_array, gt.array, gt.geometry.spacing, config, case=task.case)


def _check_expected_labels(array: np.ndarray, config: EvaluationConfig, path: Path) -> None:
    known = set(config.labels or ()) | {m for members in config.regions.values() for m in members}
    unexpected = sorted(set(present_labels(array)) - known)
    if unexpected:
        raise InputError(
            f"unexpected label value(s) {unexpected}; expected {sorted(known)} (from dataset.json or --labels)",
            path,
        )


def _case_result_path(out_dir: Path, case: str) -> Path:
    return out_dir / "cases" / f"{case}.csv"


def _evaluate_and_store(task: CaseTask, config: EvaluationConfig, out_dir: Path | None) -> pd.DataFrame:
    frame = evaluate_case(task, config)
    if out_dir is not None:
        with atomic_path(_case_result_path(out_dir, task.case)) as tmp:
            frame.to_csv(tmp, index=False)
    return frame


def _read_case_result(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"case": str, "label": str, "label_name": str, "metric": str, "empty": str},
                        keep_default_na=False, na_values={"value": ["nan", "NaN", ""], "component": [""]})
    frame["component"] = frame["component"].astype("Int64")
    return frame


@dataclass
class FolderEvaluation:
    """Result of :func:`evaluate_folder`: the tidy table plus what happened to every case."""

    table: pd.DataFrame
    missing_pred: list[str]
    extra_pred: list[str]
    failed: dict[str, str]
    reused: list[str]
    summary: dict


def evaluate_folder(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path | None = None,
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
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
    return_details: bool = False,
) -> pd.DataFrame | FolderEvaluation:
    """Evaluate every prediction in ``pred_dir`` against ``gt_dir`` (nnU-Net layout).

    Returns the tidy table (see module docstring). With ``out_dir``, writes ``metrics.csv``,
    ``summary.json`` and per-case results under ``cases/`` (a rerun with the same settings reuses
    finished cases, so an interrupted run continues). Label names and regions come from
    ``dataset.json`` in ``gt_dir`` or its parent when present; ``labels``/``regions`` override.
    A per-case input error (unreadable file, geometry mismatch, unexpected label) is reported in
    ``failed`` and ``summary.json`` and the other cases go on.
    """
    from segqc.evaluation.aggregate import summarise

    info = find_dataset_json(gt_dir)
    label_names = {k: v for k, v in (info.labels if info else {}).items() if k != 0}
    config_labels = tuple(labels) if labels is not None else (tuple(sorted(label_names)) if label_names else None)
    config_regions = {k: tuple(v) for k, v in (regions if regions is not None else (info.regions if info else {})).items()}
    config = EvaluationConfig(
        metrics=tuple(metrics) if metrics else DEFAULT_METRICS,
        settings=MetricSettings(tolerance_mm=tolerance_mm, percentile=percentile, surface=surface,  # type: ignore[arg-type]
                                empty=empty or EmptyPolicy()),
        per_component=per_component,
        connectivity=connectivity,
        voronoi_units=voronoi_units,
        labels=config_labels,
        regions=config_regions,
        label_names=label_names,
        resample=resample,
    )
    pairing = pair_cases(pred_dir, gt_dir, file_ending=info.file_ending if info else None)
    tasks = [CaseTask(c, p, g) for c, p, g in pairing.matched] + [CaseTask(c, None, g) for c, g in pairing.missing_pred]
    tasks.sort(key=lambda t: t.case)

    out = Path(out_dir) if out_dir is not None else None
    reused: list[str] = []
    frames: dict[str, pd.DataFrame] = {}
    todo = tasks
    if out is not None:
        todo = []
        settings_path = out / "cases" / "settings.json"
        same_settings = settings_path.exists() and json.loads(settings_path.read_text()).get("digest") == config.digest()
        for task in tasks:
            path = _case_result_path(out, task.case)
            if same_settings and path.exists():
                frames[task.case] = _read_case_result(path)
                reused.append(task.case)
            else:
                todo.append(task)
        write_text_atomic(settings_path, json.dumps({"digest": config.digest(), "settings": config.to_dict()}, indent=2))

    failed: dict[str, str] = {}
    work = partial(_evaluate_and_store, config=config, out_dir=out)
    for task, result in map_cases(work, todo, jobs=jobs, scheduler=scheduler, description="evaluate", progress=progress):
        if isinstance(result, SegqcError):
            failed[task.case] = str(result)
        else:
            frames[task.case] = result
    ordered = [frames[t.case] for t in tasks if t.case in frames]
    table = pd.concat(ordered, ignore_index=True) if ordered else pd.DataFrame(columns=COLUMNS)
    table["component"] = table["component"].astype("Int64")
    table["empty"] = table["empty"].fillna("")
    table["label"] = table["label"].astype(str)

    summary = summarise(table, config.metrics)
    summary = {
        "settings": config.to_dict(),
        "cases": {
            "evaluated": sorted(frames),
            "missing_prediction": [c for c, _ in pairing.missing_pred],
            "extra_prediction": [c for c, _ in pairing.extra_pred],
            "failed": failed,
            "reused_from_previous_run": sorted(reused),
        },
        "labels": summary,
    }
    if out is not None:
        with atomic_path(out / "metrics.csv") as tmp:
            table.to_csv(tmp, index=False)
        write_json_atomic(out / "summary.json", summary)
    if return_details:
        return FolderEvaluation(
            table=table,
            missing_pred=[c for c, _ in pairing.missing_pred],
            extra_pred=[c for c, _ in pairing.extra_pred],
            failed=failed,
            reused=sorted(reused),
            summary=summary,
        )
    return table


__all__ = ["COLUMNS", "CaseTask", "EvaluationConfig", "FolderEvaluation", "evaluate_case", "evaluate_folder",
           "evaluate_label_maps"]
