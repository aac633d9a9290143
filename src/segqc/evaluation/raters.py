"""Evaluation against several raters: predicted samples and soft maps vs every rater's mask.

``evaluate_raters(PRED_DIR, RATERS_DIR, OUT)`` runs through the case engine (resumable, keyed on
every input file's content) and writes ``OUT/metrics.csv`` (one row per case and metric:
``case, metric, value, empty, n_samples, n_raters``; ``empty``: the empty-mask rule that
decided ``soft_dice`` / ``soft_dice_5``, blank otherwise) and ``OUT/summary.json`` (mean,
standard deviation and n of every metric over the cases where it is defined).

Predictions of a case ``CASE`` in ``PRED_DIR`` (what ``segqc seg predict --save
probabilities,samples`` writes):

* samples: ``samples/CASE_00.nii.gz``, ``samples/CASE_01.nii.gz``, ... (label maps); without
  them the label map ``CASE.nii.gz`` is the one sample (diversity is then undefined);
* soft map: ``probabilities/CASE_<v>.nii.gz`` for the foreground value v (one ``--label``), or
  ``soft/CASE.nii.gz``; without one, the mean of the samples.

A rater or sample marks the voxels whose label is in ``foreground`` (default: any non-zero).
Metrics (:mod:`segqc.metrics.distribution` for the conventions): ``ged2``, ``ged``, ``hm_iou``,
``diversity`` (of the samples), ``rater_diversity``, ``soft_dice`` (QUBIQ thresholds 0.1…0.9 of
the soft map and the rater mean), ``soft_dice_5`` (the consensus levels 0.1, 0.3, 0.5, 0.7, 0.9),
``ece`` / ``mce`` / ``ece_foreground`` (10 bins, against the rater mean; foreground: pixels a
rater marks or where the soft map is at least 0.05), ``volume_crps`` (mm² or
mm³; pixels where the files carry no spacing), ``dice_majority`` (Dice of the soft map ≥ 0.5
against the raters' majority ``Σ A ≥ R/2``; both empty: 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.execution.run import check_output_outside
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.geometry import Geometry, geometry_differences
from segqc.io.images import IMAGE_EXTENSIONS, Image, read_image, read_label_map
from segqc.io.raters import RaterCase, foreground_mask, read_rater_grid, scan_rater_cases
from segqc.metrics.distribution import consensus_maps, distribution_scores
from segqc.metrics.soft import soft_dice

__all__ = ["CONSENSUS_THRESHOLDS", "COLUMNS", "evaluate_raters", "prediction_files", "rater_case_scores"]

CONSENSUS_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
COLUMNS = ["case", "metric", "value", "empty", "n_samples", "n_raters"]


def _find(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        path = folder / f"{stem}{ext}"
        if path.is_file():
            return path
    return None


def prediction_files(pred_dir: Path, case: str, label: int | None) -> dict[str, tuple[Path, ...]]:
    """The files of one case's prediction by role: ``samples``, ``soft``, ``label`` (module
    docstring); roles without a file are left out. No file at all: :class:`InputError`."""
    files: dict[str, tuple[Path, ...]] = {}
    samples_dir = pred_dir / "samples"
    if samples_dir.is_dir():
        found = []
        k = 0
        while (path := _find(samples_dir, f"{case}_{k:02d}")) is not None:
            found.append(path)
            k += 1
        if found:
            files["samples"] = tuple(found)
    soft = _find(pred_dir / "probabilities", f"{case}_{label}") if label is not None else None
    soft = soft or _find(pred_dir / "soft", case)
    if soft is not None:
        files["soft"] = (soft,)
    label_map = _find(pred_dir, case)
    if label_map is not None:
        files["label"] = (label_map,)
    if "samples" not in files and "label" not in files:
        raise InputError(f"no prediction of case {case} (samples/{case}_00.*, or {case}.*)", pred_dir)
    return files


def _check_grid(image: Image, grid: Geometry, rater: Path, what: str) -> None:
    """A prediction must lie on the raters' grid: shape, spacing, direction and origin, compared
    as ``segqc evaluate`` compares a prediction with its ground truth
    (:func:`~segqc.io.geometry.geometry_differences`); else one line naming the file."""
    diffs = geometry_differences(image.geometry, grid)
    if not diffs:
        return
    if diffs[0].what == "dimension":
        raise InputError(f"{image.geometry.ndim}D {what} cannot be compared with the {grid.ndim}D rater masks "
                         f"({rater.name}: shape {grid.shape})", image.path)
    mine = ", ".join(f"{d.what} {d.pred}" for d in diffs)
    theirs = ", ".join(f"{d.what} {d.gt}" for d in diffs)
    verb = "differs" if len(diffs) == 1 else "differ"
    raise InputError(f"{what} {mine} {verb} from the rater masks' ({rater.name}: {theirs})", image.path)


EMPTY_CASE = "no rater mask and no prediction marks a voxel"
"""The case warning of a case where every rater and every prediction is empty."""


def _masks(paths: Sequence[Path], foreground: Sequence[int] | None, grid: Geometry, rater: Path) -> np.ndarray:
    out = []
    for path in paths:
        image = read_label_map(path)
        _check_grid(image, grid, rater, "prediction")
        out.append(foreground_mask(image.array, foreground))
    return np.stack(out)


def rater_case_scores(task: CaseTask, *, foreground: Sequence[int] | None = None) -> CaseResult:
    """Every metric of one case (module docstring) as tidy rows. Every prediction file must lie
    on the raters' grid (shape, spacing, direction, origin)."""
    case: RaterCase = task.payload
    raters, grid = read_rater_grid(case, foreground)
    spacing = grid.spacing
    samples = _masks(task.inputs.get("samples") or task.inputs["label"], foreground, grid, case.raters[0])
    soft_path = task.path("soft")
    if soft_path is not None:
        soft_image = read_image(soft_path, dtype=np.float64, finite=True)
        _check_grid(soft_image, grid, case.raters[0], "soft map")
        soft = soft_image.array
        if soft.min() < 0 or soft.max() > 1:
            raise InputError("soft map values must lie in [0, 1]", soft_path)
    else:
        soft = samples.astype(np.float64).mean(axis=0)
    scores = distribution_scores(samples, raters, probability=soft, voxel_volume=float(np.prod(spacing)))
    _, mean = consensus_maps(raters)
    values: dict[str, float] = scores.as_dict()
    tags = {"soft_dice": scores.soft_dice_empty}  # the empty-mask rule of the QUBIQ levels, if one applied
    five = soft_dice(soft, mean, thresholds=CONSENSUS_THRESHOLDS)
    values["soft_dice_5"], tags["soft_dice_5"] = five.value, five.empty
    majority = raters.sum(axis=0) >= raters.shape[0] / 2.0
    binary = soft >= 0.5
    total = int(majority.sum() + binary.sum())
    values["dice_majority"] = 1.0 if total == 0 else 2.0 * int((majority & binary).sum()) / total
    rows = [{"case": case.case, "metric": name, "value": value, "empty": tags.get(name, ""),
             "n_samples": len(samples), "n_raters": len(raters)} for name, value in values.items()]
    warnings = []
    if not raters.any() and not samples.any() and not soft.any():
        marked = "any non-zero label" if foreground is None else f"label(s) {', '.join(map(str, foreground))}"
        warnings.append(f"{case.case}: {EMPTY_CASE} ({marked}); scored as agreement on an empty mask")
    return CaseResult(table=pd.DataFrame(rows, columns=COLUMNS), warnings=warnings)


def _summary(table: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric, group in table.groupby("metric", sort=False):
        values = pd.to_numeric(group["value"], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
        out[str(metric)] = {"mean": float(values.mean()) if len(values) else None,
                            "std": float(values.std(ddof=0)) if len(values) else None,
                            "n": int(len(values)), "n_nan": int(len(group) - len(values))}
    return out


def evaluate_raters(pred_dir: str | Path, raters_dir: str | Path, out_dir: str | Path | None, *,
                    foreground: Sequence[int] | None = None, cases: Sequence[str] | None = None, jobs: int = 1,
                    progress: bool = False) -> tuple[pd.DataFrame, dict[str, Any], RunReport]:
    """Evaluate every case of ``raters_dir`` that has a prediction in ``pred_dir`` (module
    docstring). Returns (tidy table, summary, run report); cases without any prediction are in the
    report's ``failed``. Raises :class:`InputError` when no case has a prediction at all (the
    wrong folder, as ``segqc evaluate`` says it)."""
    pred = Path(pred_dir)
    if not pred.is_dir():
        raise InputError("prediction folder not found", pred)
    if foreground is not None and (not foreground or min(foreground) <= 0):
        raise ValueError(f"foreground labels must be positive (0 is the background), got {list(foreground)}")
    if out_dir is not None:
        check_output_outside(Path(out_dir), [Path(raters_dir), pred])
    label = foreground[0] if foreground is not None and len(foreground) == 1 else (None if foreground else 1)
    found, failed = scan_rater_cases(raters_dir, cases)
    tasks = []
    for case in found:
        try:
            inputs = prediction_files(pred, case.case, label)
        except InputError as error:
            failed[case.case] = str(error)
            continue
        tasks.append(CaseTask(case.case, {"raters": case.raters, **inputs}, payload=case))
    if not found:
        raise InputError(f"no valid case folder: {next(iter(failed.values()))}", raters_dir)
    if not tasks:
        first = found[0].case
        raise InputError(f"no prediction matches any of the {len(found)} case(s) of {raters_dir} (e.g. case "
                         f"{first}: no {first}.* and no samples/{first}_00.*)", pred)
    settings = {"format": "segqc-evaluate-raters", "rows": 2,  # 2: the empty column
                "foreground": None if foreground is None else list(foreground)}
    report = run_cases(partial(rater_case_scores, foreground=foreground), tasks, out_dir, settings=settings,
                       jobs=jobs, progress=progress, description="evaluate raters")
    report.failed.update(failed)
    table = report.table if len(report.table) else pd.DataFrame(columns=COLUMNS)
    empty = sorted(w.partition(": ")[0] for w in report.warnings if EMPTY_CASE in w)
    summary = {"format": "segqc-evaluate-raters-summary", "n_cases": int(table["case"].nunique()),
               "metrics": _summary(table), "failed": dict(report.failed), "empty_cases": empty}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(out / "metrics.csv", table)
        write_json_atomic(out / "summary.json", summary)
    return table, summary, report

