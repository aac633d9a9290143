"""How good is a QC method? Agreement of estimated with true metrics, and model ranking.

``benchmark_qc``: QC a folder, evaluate the same segmentations against the real ground truth, and
report per (label, metric) the Pearson r and mean absolute error between estimates and truth
(``benchmark.csv`` + ``benchmark.json``), the paired table (``pairs.csv``) and scatter plots.

``rank_models``: QC the outputs of several segmentation models; rank the models by mean estimated
multi-class Dice; with a ground truth, also by the true mean and report Kendall's tau between the
two rankings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.evaluation.evaluate import FolderEvaluation, evaluate_folder, pair_folders
from segqc.execution import RunReport
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import find_dataset_json
from segqc.qc.inference import QcSettings, qc_folder
from segqc.qc.model_api import QcModel
from segqc.report import agreement, rank_by_estimate, scatter_plots
from segqc.report.agreement import failure_auroc, mae_by_bin

__all__ = ["agreement", "benchmark_qc", "benchmark_qc_run", "rank_by_estimate", "rank_models", "run_names",
           "true_metrics"]


def true_metrics(segs_dir: Path, gt_dir: Path, metrics: Sequence[str], tolerance_mm: float, *,
                 labels: Sequence[int] | None = None, jobs: int = 1, progress: bool = False) -> pd.DataFrame:
    """True per-label metrics plus the multi-class Dice and the subject-level NSD (label ``all``;
    :class:`~segqc.evaluation.config.EvaluationConfig` ``multiclass_all``) of every segmentation,
    through :func:`~segqc.evaluation.evaluate.evaluate_folder` (same pairing, geometry checks and
    label handling as ``segqc evaluate``; a case that cannot be evaluated, e.g. a ground truth
    on another grid, has no row at all). Columns: case, label, metric, value."""
    return _truth(segs_dir, gt_dir, metrics, tolerance_mm, labels=labels, jobs=jobs, progress=progress)[0]


def _truth(segs_dir: Path, gt_dir: Path, metrics: Sequence[str], tolerance_mm: float, *,
           labels: Sequence[int] | None = None, jobs: int = 1, progress: bool = False,
           out_dir: Path | None = None, model_labels: Sequence[int] | None = None
           ) -> tuple[pd.DataFrame, FolderEvaluation]:
    """:func:`true_metrics` and what happened to every case (failures, missing files). With
    ``out_dir`` the evaluation is an ``evaluate`` folder there, so a rerun reuses its cases. With
    ``model_labels`` (a QC model's training label values) a case whose ground truth holds another
    label value fails, naming the file: its true metrics would compare other classes than the
    estimates (a truth labelling the LV 9 for a model's 3 scored the LV as missed)."""
    result = evaluate_folder(segs_dir, gt_dir, out_dir, metrics=tuple(metrics), tolerance_mm=tolerance_mm,
                             labels=labels, multiclass_all=True, same_folder_ok=True, jobs=jobs, progress=progress,
                             return_details=True)
    assert isinstance(result, FolderEvaluation)
    table = result.table
    truth = table[table["component"].isna()][["case", "label", "metric", "value"]].reset_index(drop=True)
    truth["label"] = truth["label"].astype(str)
    if model_labels is not None:
        known = sorted({int(v) for v in model_labels})
        numeric = truth[truth["label"].str.fullmatch(r"\d+")]
        for case, values in numeric.groupby("case", sort=True)["label"]:
            unknown = sorted({int(v) for v in values} - set(known))
            if unknown:
                gt_file = result.report.inputs.get(str(case), {}).get("gt", [gt_dir])[0]
                result.failed[str(case)] = (f"{gt_file}: label value(s) {unknown} were not in the QC model's "
                                            f"training labels {known}")
        truth = truth[~truth["case"].isin(result.failed)].reset_index(drop=True)
    return truth, result


def _check_ground_truths(segs_dir: Path, gt_dir: Path) -> None:
    """The checks of the ground-truth folder that need no QC (a folder without label files, no
    segmentation matching a ground truth: :func:`~segqc.evaluation.evaluate.pair_folders`), made
    before the QC runs: otherwise the run could not start only after all of its work."""
    info = find_dataset_json(gt_dir)
    pair_folders(segs_dir, gt_dir, file_ending=info.file_ending if info else None)


def _case_report(qc: RunReport, evaluation: FolderEvaluation | None, prefix: str = "") -> RunReport:
    """The QC run's report with the cases whose ground truth could not be compared (e.g. a ground
    truth on another grid) moved from ``done`` to ``failed``; case ids get ``prefix``. A case
    that failed in both keeps its QC error only (the same file is usually at fault)."""
    truth_failed = evaluation.failed if evaluation is not None else {}
    failed = {prefix + case: why for case, why in qc.failed.items()}
    kinds = {prefix + case: kind for case, kind in qc.failure_kinds.items()}
    for case in qc.done:
        if case in truth_failed:
            failed[prefix + case] = truth_failed[case]
            kinds[prefix + case] = "InputError"  # no --resample here: its hint would mislead
    warnings = qc.warnings + (evaluation.report.warnings if evaluation is not None else [])
    return RunReport(table=qc.table, extra=qc.extra,
                     done=[prefix + c for c in qc.done if c not in truth_failed], failed=failed,
                     skipped={prefix + c: why for c, why in qc.skipped.items()},
                     reused=[prefix + c for c in qc.reused if c not in truth_failed],
                     warnings=list(dict.fromkeys(warnings)), failure_kinds=kinds,
                     inputs={prefix + c: files for c, files in qc.inputs.items()})


def _merged(runs: Sequence[RunReport]) -> RunReport:
    """One report of several runs whose case ids are already distinct (``<name>/<case>``)."""
    merged = RunReport(table=pd.DataFrame())
    for run in runs:
        merged.done += run.done
        merged.failed.update(run.failed)
        merged.failure_kinds.update(run.failure_kinds)
        merged.skipped.update(run.skipped)
        merged.reused += run.reused
        merged.warnings += [w for w in run.warnings if w not in merged.warnings]
        merged.inputs.update(run.inputs)
    return merged


def _missing_image_notes(report: dict, images_dir: str | Path, segs_dir: str | Path) -> list[str]:
    return [f"{case} in {segs_dir}: segmentation without an image in {images_dir}; skipped"
            for case in report["missing_image"]]


def benchmark_qc(model_dir: str | Path, images_dir: str | Path, segs_dir: str | Path, gt_dir: str | Path,
                 out_dir: str | Path, *, settings: QcSettings | None = None, jobs: int = 1,
                 scheduler: str | None = None, model: QcModel | None = None, progress: bool = False,
                 device: str = "cpu") -> pd.DataFrame:
    """Estimated vs true metrics on segmentations with a known ground truth (see module docstring);
    returns the agreement table. What happened to every case: :func:`benchmark_qc_run`."""
    return benchmark_qc_run(model_dir, images_dir, segs_dir, gt_dir, out_dir, settings=settings, jobs=jobs,
                            scheduler=scheduler, model=model, progress=progress, device=device)[0]


def benchmark_qc_run(model_dir: str | Path, images_dir: str | Path, segs_dir: str | Path, gt_dir: str | Path,
                     out_dir: str | Path, *, settings: QcSettings | None = None, jobs: int = 1,
                     scheduler: str | None = None, model: QcModel | None = None, progress: bool = False,
                     device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """:func:`benchmark_qc` and a dict: ``run`` (the :class:`~segqc.execution.RunReport` of the
    cases: a case fails when its QC fails or its ground truth cannot be compared with it) and
    ``notes`` (warnings of the run as a whole: ignored files, segmentations without an image or a
    ground truth). A ground-truth folder without label files, or without a case of the
    segmentations, is an :class:`InputError` before any QC runs."""
    settings = settings or QcSettings()
    out_dir = Path(out_dir)
    _check_ground_truths(Path(segs_dir), Path(gt_dir))
    table, _, report = qc_folder(model_dir, images_dir, segs_dir, out_dir / "qc", settings=settings, jobs=jobs,
                                 scheduler=scheduler, model=model, progress=progress, device=device)
    tolerance = report["settings"]["tolerance_mm"]  # the run's: a regressor's training tolerance if open
    truth, evaluation = _truth(Path(segs_dir), Path(gt_dir), settings.metrics, tolerance, jobs=jobs,
                               progress=progress, out_dir=out_dir / "truth", model_labels=report["labels"])
    run = _case_report(report["run"], evaluation)
    without_truth = [case for case in evaluation.extra_pred if case in report["cases"]]
    notes = _missing_image_notes(report, images_dir, segs_dir) + report["notes"] + [
        f"{case}: no ground truth in {gt_dir}; left out of the agreement" for case in without_truth]
    pairs = table.merge(truth.rename(columns={"value": "true"}), on=["case", "label", "metric"], how="inner")
    summary = agreement(pairs)
    write_csv_atomic(out_dir / "pairs.csv", pairs)
    write_csv_atomic(out_dir / "benchmark.csv", summary)
    by_bin = mae_by_bin(pairs)
    write_csv_atomic(out_dir / "benchmark_bins.csv", by_bin)
    overall = pairs[(pairs["label"] == "all") & (pairs["metric"] == "dice")]
    failures = {"threshold": FAILURE_DICE, "auroc": failure_auroc(overall["estimate"], overall["true"], FAILURE_DICE),
                "failed": int((overall["true"] < FAILURE_DICE).sum()), "n": int(len(overall))}
    sem = error_map_agreement(out_dir / "qc", Path(segs_dir), Path(gt_dir), jobs=jobs, cases=run.done)
    if sem is not None:
        write_csv_atomic(out_dir / "error_maps.csv", sem)
    else:
        (out_dir / "error_maps.csv").unlink(missing_ok=True)  # an earlier run's, with another model
    write_json_atomic(out_dir / "benchmark.json", {
        "settings": report["settings"],  # with the tolerance the run used
        "cases": {"qc": report["cases"], "failed": run.failed, "with_truth": sorted(set(pairs["case"])),
                  "without_truth": without_truth},
        "agreement": summary.replace({np.nan: None}).to_dict(orient="records"),
        "failure_detection": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in failures.items()},
        "error_maps": None if sem is None else
        sem.groupby(["label", "label_name"], sort=False)["dsc_sem"].mean().reset_index().to_dict(orient="records")})
    scatter_plots(pairs, summary, out_dir)
    return summary, {"run": run, "notes": notes}


FAILURE_DICE = 0.7
"""A segmentation whose true multi-class Dice is below this failed (QCResUNet's threshold)."""


def _case_error_maps(item: tuple[str, Path, Path, Path], classes: tuple[tuple[str, tuple[int, ...]], ...]
                     ) -> list[dict]:
    from segqc.io.images import read_label_map

    case, errors_path, seg_path, gt_path = item
    errors = read_label_map(errors_path).array
    seg, gt = read_label_map(seg_path).array, read_label_map(gt_path).array
    rows = []
    for bit, (label, members) in enumerate(classes):
        predicted = (errors >> bit) & 1 > 0
        true = np.isin(seg, members) ^ np.isin(gt, members)
        total = int(predicted.sum() + true.sum())
        dice = 1.0 if total == 0 else 2.0 * float((predicted & true).sum()) / total
        rows.append({"case": case, "label": label, "dsc_sem": dice, "true_voxels": int(true.sum()),
                     "predicted_voxels": int(predicted.sum())})
    return rows


def error_map_agreement(qc_dir: Path, segs_dir: Path, gt_dir: Path, *, jobs: int = 1,
                        cases: Sequence[str] | None = None) -> pd.DataFrame | None:
    """DSC_SEM (QCResUNet §3.4) of every case with an error map in ``qc_dir/errors``: per class c
    the Dice between the predicted error map (bit c-1 of the stored bitmask) and the true one
    (segmentation XOR ground truth for class c), on the input grid; 1.0 when both are empty.
    None when the QC run wrote no error maps (a pGT method): only maps that the run recorded in
    ``qc_dir/report.json`` (``maps``, ``cases``) are scored, never files an earlier run left.
    ``cases``: score only these (the benchmark's: those whose ground truth was compared with the
    segmentation on its full grid; a ground truth on another grid is no truth of the error map)."""
    from segqc.execution import map_cases
    from segqc.io.datasets import pair_cases
    from segqc.io.json_files import read_json_object

    folder = qc_dir / "errors"
    if not folder.is_dir():
        return None
    report = read_json_object(qc_dir / "report.json", what="QC report")
    if "errors" not in report.get("maps", ["errors"]):  # maps of an earlier run with another model
        return None
    names: dict[str, str] = {}
    if isinstance(report.get("classes"), list):  # the regressor's classes, in the order of its bits
        names = {str(c["label"]): str(c["name"]) for c in report["classes"]}
        classes = tuple((str(c["label"]), tuple(int(v) for v in c["values"])) for c in report["classes"])
    else:
        qc = pd.read_csv(qc_dir / "qc.csv", dtype={"case": str, "label": str, "label_name": str})
        names = {label: name for label, name in zip(qc["label"], qc["label_name"]) if label != "all"}
        classes = tuple((str(v), (v,)) for v in sorted(int(label) for label in names))
    wanted = set(report.get("cases", [])) if cases is None else set(report.get("cases", [])) & set(cases)
    items = [(sid, folder / f"{sid}.nii.gz", seg, gt) for sid, _, seg, gt in pair_cases(segs_dir, gt_dir).matched
             if (folder / f"{sid}.nii.gz").is_file() and sid in wanted]
    rows: list[dict] = []
    for _, result in map_cases(partial(_case_error_maps, classes=classes), items, jobs=jobs, description="error maps",
                               progress=False):
        if isinstance(result, Exception):
            raise result
        rows += result
    table = pd.DataFrame(rows, columns=["case", "label", "dsc_sem", "true_voxels", "predicted_voxels"])
    table.insert(2, "label_name", table["label"].map(names))
    return table.sort_values(["case", "label"], kind="stable").reset_index(drop=True)


def run_names(folders: Sequence[str | Path]) -> list[str]:
    """One output-folder name per segmentation folder, unique and safe: the folders' paths
    relative to their common parent, path separators replaced by ``__``
    (``runA/preds``, ``runB/preds`` -> ``runA__preds``, ``runB__preds``). The same folder
    twice is an :class:`InputError`."""
    resolved = [Path(f).resolve() for f in folders]
    seen: dict[Path, str] = {}
    for original, path in zip(folders, resolved):
        if path in seen:
            raise InputError(f"is given twice (also as {seen[path]})", original)
        seen[path] = str(original)
    parts_list: list[tuple[str, ...]]
    if len(resolved) == 1:
        parts_list = [(resolved[0].name,)]
    else:
        common = _common_parent(resolved)
        parts_list = [r.relative_to(common).parts for r in resolved]
    names = []
    for parts in parts_list:
        name = "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", part) for part in parts) or "root"
        names.append(name.lstrip(".") or "root")
    return names


def _common_parent(paths: Sequence[Path]) -> Path:
    common = Path(paths[0].anchor)
    for parts in zip(*[p.parts for p in paths]):
        if len(set(parts)) != 1:
            break
        common = common / parts[0]
    if any(p == common for p in paths):  # one folder inside another: keep the last common level
        common = common.parent
    return common


def rank_models(model_dir: str | Path, images_dir: str | Path, seg_dirs: Sequence[str | Path],
                out_dir: str | Path, *, gt_dir: str | Path | None = None, settings: QcSettings | None = None,
                jobs: int = 1, scheduler: str | None = None, model: QcModel | None = None,
                progress: bool = False, device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """Rank segmentation models (one folder each) by mean estimated multi-class Dice; with a GT,
    compare with the true ranking (Kendall's tau). Each folder's QC goes to ``out_dir/<name>``
    (:func:`run_names`: unique even when the folders share a base name).

    Every model is scored on the same cases: those with an estimate in every folder (with a GT,
    also a true value in every folder), so a folder whose hard cases failed or are missing does
    not rank higher for it, and its estimated and true means cover the same cases. The returned
    report (and ``ranking.json``) names the ``cases`` used and the cases ``left_out`` (case ->
    why); ``notes`` holds the warning lines, ``run`` the :class:`~segqc.execution.RunReport` of
    every folder's cases (ids ``<name>/<case>``; a case whose QC fails or whose ground truth
    cannot be compared with it failed). Raises :class:`InputError` when no case is in every
    folder although none failed (folders of different cases), and, before any QC runs, for a
    ``gt_dir`` without label files or without a case of a folder."""
    settings = settings or QcSettings(metrics=("dice",))
    out_dir = Path(out_dir)
    if gt_dir is not None:
        for seg_dir in seg_dirs:
            _check_ground_truths(Path(seg_dir), Path(gt_dir))
    folders: list[_Folder] = []
    runs: list[RunReport] = []
    notes: list[str] = []
    for seg_dir, name in zip(seg_dirs, run_names(seg_dirs)):
        seg_dir = Path(seg_dir)
        table, _, qc = qc_folder(model_dir, images_dir, seg_dir, out_dir / name, settings=settings, jobs=jobs,
                                 scheduler=scheduler, model=model, progress=progress, device=device)
        notes += _missing_image_notes(qc, images_dir, seg_dir) + qc["notes"]
        overall = table[(table.label == "all") & (table.metric == "dice")]
        folder = _Folder(name, seg_dir, estimates=_by_case(overall, "estimate"),
                         tasks=set(qc["run"].done) | set(qc["run"].failed) | set(qc["run"].skipped),
                         failed=set(qc["failed"]))
        evaluation = None
        if gt_dir is not None:
            values, evaluation = _truth(seg_dir, Path(gt_dir), ("dice",), qc["settings"]["tolerance_mm"],
                                        jobs=jobs, out_dir=out_dir / "truth" / name, model_labels=qc["labels"])
            folder.truth = _by_case(values[(values.label == "all") & (values.metric == "dice")], "value")
            folder.failed |= set(evaluation.failed) & set(qc["cases"])
            folder.without_truth = set(evaluation.extra_pred)
        runs.append(_case_report(qc["run"], evaluation, prefix=f"{name}/"))
        folders.append(folder)
    cases, left_out = _common_cases(folders)
    if not cases and not any(run.failed for run in runs):
        what = "an estimate and a ground truth" if gt_dir is not None else "an estimate"
        raise InputError(f"no case has {what} in every segmentation folder: nothing to rank the models on",
                         Path(seg_dirs[0]))
    rows = []
    for folder in folders:
        row = {"model": folder.name, "folder": str(folder.folder), "n_cases": len(cases),
               "estimated_dice": folder.mean(folder.estimates, cases)}
        if gt_dir is not None:
            row["true_dice"] = folder.mean(folder.truth, cases)
        rows.append(row)
    what = "an estimate and a true value" if gt_dir is not None else "an estimate"
    if left_out:
        shown = "; ".join(f"{case} ({why})" for case, why in list(left_out.items())[:5])
        more = f"; {len(left_out) - 5} more in ranking.json" if len(left_out) > 5 else ""
        notes.append(f"{len(left_out)} case(s) left out of every model's ranking, which covers the {len(cases)} "
                     f"case(s) with {what} in every folder: {shown}{more}")
    if cases:
        ranking, tau = rank_by_estimate(pd.DataFrame(rows))
    else:  # every case failed somewhere (the failures are in the run report): nothing to order by
        notes.append(f"no case has {what} in every folder: the models are not ranked")
        ranking, tau = pd.DataFrame(rows), None
        ranking.insert(0, "rank", None)
    report: dict = {"ranking": ranking.to_dict(orient="records"), "cases": cases, "left_out": left_out}
    if tau is not None:
        report["kendall_tau"] = float(tau.statistic)
        report["kendall_p"] = float(tau.pvalue)
    write_csv_atomic(out_dir / "ranking.csv", ranking)
    write_json_atomic(out_dir / "ranking.json", report)
    report["run"] = _merged(runs)  # not in ranking.json
    report["notes"] = list(dict.fromkeys(notes))
    return ranking, report


def _by_case(rows: pd.DataFrame, column: str) -> pd.Series:
    return pd.Series(rows[column].to_numpy(dtype=float), index=rows["case"].astype(str).to_numpy())


@dataclass
class _Folder:
    """One segmentation folder of a ranking: its estimates (case -> multi-class Dice), true
    values, the cases it has (``tasks``), those that failed and those without a ground truth."""

    name: str
    folder: Path
    estimates: pd.Series
    tasks: set[str]
    failed: set[str]
    truth: pd.Series | None = None
    without_truth: set[str] = field(default_factory=set)

    def usable(self) -> set[str]:
        usable = set(self.estimates.index) - self.failed
        return usable if self.truth is None else usable & set(self.truth.index)

    @staticmethod
    def mean(values: pd.Series | None, cases: Sequence[str]) -> float:
        return float(values.reindex(list(cases)).mean()) if values is not None and len(cases) else math.nan


def _common_cases(folders: Sequence[_Folder]) -> tuple[list[str], dict[str, str]]:
    """The cases every folder can be scored on, and why each other case is left out."""
    usable = [folder.usable() for folder in folders]  # once per folder, not once per case
    common = set.intersection(*usable)
    left_out: dict[str, str] = {}
    for case in sorted(set().union(*(folder.tasks for folder in folders)) - common):
        reasons = []
        for folder, scored in zip(folders, usable):
            if case in folder.failed:
                reasons.append(f"failed in {folder.name}")
            elif case not in folder.tasks:
                reasons.append(f"no segmentation in {folder.name}")
            elif case in folder.without_truth:
                reasons.append("no ground truth")
            elif case not in scored:
                reasons.append(f"no estimate in {folder.name}")
        left_out[case] = ", ".join(dict.fromkeys(reasons))
    return sorted(common), left_out
