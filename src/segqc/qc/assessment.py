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
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.evaluation.evaluate import FolderEvaluation, evaluate_folder
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.qc.inference import QcSettings, qc_folder
from segqc.qc.model_api import QcModel
from segqc.report import agreement, rank_by_estimate, scatter_plots
from segqc.report.agreement import failure_auroc, mae_by_bin

__all__ = ["agreement", "benchmark_qc", "rank_by_estimate", "rank_models", "run_names", "true_metrics"]


def true_metrics(segs_dir: Path, gt_dir: Path, metrics: Sequence[str], tolerance_mm: float, *,
                 labels: Sequence[int] | None = None, jobs: int = 1, progress: bool = False) -> pd.DataFrame:
    """True per-label metrics plus the multi-class Dice and the subject-level NSD (label ``all``;
    :class:`~segqc.evaluation.evaluate.EvaluationConfig` ``multiclass_all``) of every segmentation,
    through :func:`~segqc.evaluation.evaluate.evaluate_folder` (same pairing, geometry checks and
    label handling as ``segqc evaluate``; a case that cannot be evaluated, e.g. a ground truth
    on another grid, has no row at all). Columns: case, label, metric, value."""
    result = evaluate_folder(segs_dir, gt_dir, metrics=tuple(metrics), tolerance_mm=tolerance_mm,
                             labels=labels, multiclass_all=True, same_folder_ok=True, jobs=jobs, progress=progress,
                             return_details=True)
    assert isinstance(result, FolderEvaluation)
    table = result.table
    truth = table[table["component"].isna()][["case", "label", "metric", "value"]].reset_index(drop=True)
    truth["label"] = truth["label"].astype(str)
    return truth


def benchmark_qc(model_dir: str | Path, images_dir: str | Path, segs_dir: str | Path, gt_dir: str | Path,
                 out_dir: str | Path, *, settings: QcSettings | None = None, jobs: int = 1,
                 scheduler: str | None = None, model: QcModel | None = None, progress: bool = False,
                 device: str = "cpu") -> pd.DataFrame:
    """Estimated vs true metrics on segmentations with a known ground truth (see module docstring)."""
    settings = settings or QcSettings()
    out_dir = Path(out_dir)
    table, _, report = qc_folder(model_dir, images_dir, segs_dir, out_dir / "qc", settings=settings, jobs=jobs,
                                 scheduler=scheduler, model=model, progress=progress, device=device)
    truth = true_metrics(Path(segs_dir), Path(gt_dir), settings.metrics, settings.tolerance_mm, jobs=jobs,
                         progress=progress)
    pairs = table.merge(truth.rename(columns={"value": "true"}), on=["case", "label", "metric"], how="inner")
    summary = agreement(pairs)
    write_csv_atomic(out_dir / "pairs.csv", pairs)
    write_csv_atomic(out_dir / "benchmark.csv", summary)
    by_bin = mae_by_bin(pairs)
    write_csv_atomic(out_dir / "benchmark_bins.csv", by_bin)
    overall = pairs[(pairs["label"] == "all") & (pairs["metric"] == "dice")]
    failures = {"threshold": FAILURE_DICE, "auroc": failure_auroc(overall["estimate"], overall["true"], FAILURE_DICE),
                "failed": int((overall["true"] < FAILURE_DICE).sum()), "n": int(len(overall))}
    sem = error_map_agreement(out_dir / "qc", Path(segs_dir), Path(gt_dir), jobs=jobs)
    if sem is not None:
        write_csv_atomic(out_dir / "error_maps.csv", sem)
    write_json_atomic(out_dir / "benchmark.json", {
        "settings": settings.to_dict(),
        "cases": {"qc": report["cases"], "failed": report["failed"], "with_truth": sorted(set(pairs["case"]))},
        "agreement": summary.replace({np.nan: None}).to_dict(orient="records"),
        "failure_detection": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in failures.items()},
        "error_maps": None if sem is None else
        sem.groupby(["label", "label_name"], sort=False)["dsc_sem"].mean().reset_index().to_dict(orient="records")})
    scatter_plots(pairs, summary, out_dir)
    return summary


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


def error_map_agreement(qc_dir: Path, segs_dir: Path, gt_dir: Path, *, jobs: int = 1) -> pd.DataFrame | None:
    """DSC_SEM (QCResUNet §3.4) of every case with an error map in ``qc_dir/errors``: per class c
    the Dice between the predicted error map (bit c-1 of the stored bitmask) and the true one
    (segmentation XOR ground truth for class c), on the input grid; 1.0 when both are empty.
    None when the QC run wrote no error maps (a pGT method)."""
    from segqc.execution import map_cases
    from segqc.io.datasets import pair_cases
    from segqc.io.json_files import read_json_object

    folder = qc_dir / "errors"
    if not folder.is_dir():
        return None
    report = read_json_object(qc_dir / "report.json", what="QC report")
    names: dict[str, str] = {}
    if isinstance(report.get("classes"), list):  # the regressor's classes, in the order of its bits
        names = {str(c["label"]): str(c["name"]) for c in report["classes"]}
        classes = tuple((str(c["label"]), tuple(int(v) for v in c["values"])) for c in report["classes"])
    else:
        qc = pd.read_csv(qc_dir / "qc.csv", dtype={"case": str, "label": str, "label_name": str})
        names = {label: name for label, name in zip(qc["label"], qc["label_name"]) if label != "all"}
        classes = tuple((str(v), (v,)) for v in sorted(int(label) for label in names))
    items = [(sid, folder / f"{sid}.nii.gz", seg, gt) for sid, _, seg, gt in pair_cases(segs_dir, gt_dir).matched
             if (folder / f"{sid}.nii.gz").is_file() and sid in set(report.get("cases", []))]
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
    (:func:`run_names`: unique even when the folders share a base name)."""
    settings = settings or QcSettings(metrics=("dice",))
    out_dir = Path(out_dir)
    rows = []
    for seg_dir, name in zip(seg_dirs, run_names(seg_dirs)):
        seg_dir = Path(seg_dir)
        table, _, _ = qc_folder(model_dir, images_dir, seg_dir, out_dir / name, settings=settings, jobs=jobs,
                                scheduler=scheduler, model=model, progress=progress, device=device)
        overall = table[(table.label == "all") & (table.metric == "dice")]
        row = {"model": name, "folder": str(seg_dir), "n_cases": int(len(overall)),
               "estimated_dice": float(overall["estimate"].mean()) if len(overall) else math.nan}
        if gt_dir is not None:
            truth = true_metrics(seg_dir, Path(gt_dir), ("dice",), settings.tolerance_mm, jobs=jobs)
            true_all = truth[(truth.label == "all") & (truth.metric == "dice")]
            row["true_dice"] = float(true_all["value"].mean()) if len(true_all) else math.nan
        rows.append(row)
    ranking, tau = rank_by_estimate(pd.DataFrame(rows))
    report: dict = {"ranking": ranking.to_dict(orient="records")}
    if tau is not None:
        report["kendall_tau"] = float(tau.statistic)
        report["kendall_p"] = float(tau.pvalue)
    write_csv_atomic(out_dir / "ranking.csv", ranking)
    write_json_atomic(out_dir / "ranking.json", report)
    return ranking, report
