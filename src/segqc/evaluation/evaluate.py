"""Evaluation with a ground truth, on files: one case read and checked (:func:`evaluate_case`),
a folder of predictions against a folder of ground truths -> ``metrics.csv`` + ``summary.json``
(:func:`evaluate_folder`, through the case engine: resumable, parallel).

The settings are :class:`~segqc.evaluation.config.EvaluationConfig`; the rows of one pair of
label maps, and their columns, come from :mod:`segqc.evaluation.label_maps`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.evaluation.config import EvaluationConfig
from segqc.evaluation.label_maps import CLASS_MEAN_LABEL, COLUMNS, ROWS_REVISION, evaluate_label_maps
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import DatasetInfo, Pairing, find_dataset_json, pair_cases
from segqc.io.geometry import check_same_geometry
from segqc.io.images import Image, read_label_map, resample_nearest
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings
from segqc.metrics.lesion import detection_counts, froc_points
from segqc.metrics.registry import DEFAULT_METRICS, EmptyPolicy
from segqc.metrics.shape import check_band_width
from segqc.metrics.soft import soft_dice


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


__all__ = ["CLASS_MEAN_LABEL", "COLUMNS", "EvaluationConfig", "FolderEvaluation", "evaluate_case", "evaluate_folder",
           "evaluate_label_maps"]
