"""How good is a QC method? Agreement of estimated with true metrics, and model ranking.

``benchmark_qc``: QC a folder, evaluate the same segmentations against the real ground truth, and
report per (label, metric) the Pearson r and mean absolute error between estimates and truth
(``benchmark.csv`` + ``benchmark.json``), the paired table (``pairs.csv``) and scatter plots.

``rank_models``: QC the outputs of several segmentation models; rank the models by mean estimated
multi-class Dice; with a ground truth, also by the true mean and report Kendall's tau between the
two rankings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from segqc.evaluation.evaluate import evaluate_folder
from segqc.io.atomic import atomic_path, write_text_atomic
from segqc.metrics.multiclass import multiclass_dice
from segqc.io.datasets import pair_cases
from segqc.io.images import read_label_map
from segqc.qc.inference import QcSettings, qc_folder
from segqc.qc.model_api import QcModel


def true_metrics(segs_dir: Path, gt_dir: Path, metrics: Sequence[str], tolerance_mm: float) -> pd.DataFrame:
    """True per-label metrics plus the multi-class Dice (label ``all``) of every segmentation."""
    table = evaluate_folder(segs_dir, gt_dir, metrics=tuple(metrics), tolerance_mm=tolerance_mm)
    rows = []
    for case, seg_path, gt_path in pair_cases(segs_dir, gt_dir).matched:
        result = multiclass_dice(read_label_map(seg_path).array, read_label_map(gt_path).array)
        rows.append({"case": case, "label": "all", "metric": "dice", "value": result.value})
    truth = pd.concat([table[["case", "label", "metric", "value"]], pd.DataFrame(rows)], ignore_index=True)
    truth["label"] = truth["label"].astype(str)
    return truth


def agreement(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pearson r, MAE and n per (label, metric) of a table with ``estimate`` and ``true`` columns
    (rows where either is NaN are left out)."""
    out = []
    for (label, metric), group in pairs.groupby(["label", "metric"], sort=False):
        ok = group[["estimate", "true"]].replace([np.inf, -np.inf], np.nan).dropna()
        r = float(stats.pearsonr(ok["estimate"], ok["true"])[0]) if len(ok) > 2 and ok["estimate"].std() > 0 and ok["true"].std() > 0 else math.nan
        mae = float(np.mean(np.abs(ok["estimate"] - ok["true"]))) if len(ok) else math.nan
        out.append({"label": label, "metric": metric, "pearson_r": r, "mae": mae, "n": int(len(ok))})
    return pd.DataFrame(out)


def _scatter_plots(pairs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (label, metric), group in pairs.groupby(["label", "metric"], sort=False):
        row = summary[(summary.label == label) & (summary.metric == metric)].iloc[0]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(group["true"], group["estimate"], s=10, alpha=0.7)
        finite = group[["true", "estimate"]].replace([np.inf, -np.inf], np.nan).dropna().to_numpy()
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"true {metric}")
        ax.set_ylabel(f"estimated {metric}")
        ax.set_title(f"label {label}: r={row.pearson_r:.3f}, MAE={row.mae:.3g}")
        fig.tight_layout()
        path = out_dir / "plots" / f"scatter_{label}_{metric}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def benchmark_qc(model_dir: str | Path, images_dir: str | Path, segs_dir: str | Path, gt_dir: str | Path,
                 out_dir: str | Path, *, settings: QcSettings | None = None, jobs: int = 1,
                 model: QcModel | None = None, progress: bool = False) -> pd.DataFrame:
    """Estimated vs true metrics on segmentations with a known ground truth (see module docstring)."""
    settings = settings or QcSettings()
    out_dir = Path(out_dir)
    table, _, _ = qc_folder(model_dir, images_dir, segs_dir, out_dir / "qc", settings=settings, jobs=jobs,
                            model=model, progress=progress)
    truth = true_metrics(Path(segs_dir), Path(gt_dir), settings.metrics, settings.tolerance_mm)
    pairs = table.merge(truth.rename(columns={"value": "true"}), on=["case", "label", "metric"], how="inner")
    summary = agreement(pairs)
    with atomic_path(out_dir / "pairs.csv") as tmp:
        pairs.to_csv(tmp, index=False)
    with atomic_path(out_dir / "benchmark.csv") as tmp:
        summary.to_csv(tmp, index=False)
    write_text_atomic(out_dir / "benchmark.json", json.dumps(
        {"settings": {k: v for k, v in settings.__dict__.items()},
         "agreement": summary.replace({np.nan: None}).to_dict(orient="records")}, indent=2))
    _scatter_plots(pairs, summary, out_dir)
    return summary


def rank_by_estimate(table: pd.DataFrame):
    """Rows (one per segmentation model, column ``estimated_dice``, optionally ``true_dice``)
    sorted from the best estimate, with ``rank``; with true values for more than one model also
    ``true_rank`` and Kendall's tau between the two orders (scipy result, else None)."""
    ranking = table.sort_values("estimated_dice", ascending=False).reset_index(drop=True)
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    if "true_dice" not in ranking or len(ranking) < 2:
        return ranking, None
    ranking["true_rank"] = ranking["true_dice"].rank(ascending=False, method="min").astype(int)
    return ranking, stats.kendalltau(ranking["estimated_dice"], ranking["true_dice"])


def rank_models(model_dir: str | Path, images_dir: str | Path, seg_dirs: Sequence[str | Path],
                out_dir: str | Path, *, gt_dir: str | Path | None = None, settings: QcSettings | None = None,
                jobs: int = 1, model: QcModel | None = None, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Rank segmentation models (one folder each) by mean estimated multi-class Dice; with a GT,
    compare with the true ranking (Kendall's tau)."""
    settings = settings or QcSettings(metrics=("dice",))
    out_dir = Path(out_dir)
    rows = []
    for seg_dir in seg_dirs:
        seg_dir = Path(seg_dir)
        name = seg_dir.name
        table, _, _ = qc_folder(model_dir, images_dir, seg_dir, out_dir / name, settings=settings, jobs=jobs,
                                model=model, progress=progress)
        overall = table[(table.label == "all") & (table.metric == "dice")]
        row = {"model": name, "folder": str(seg_dir), "n_cases": int(len(overall)),
               "estimated_dice": float(overall["estimate"].mean())}
        if gt_dir is not None:
            truth = true_metrics(seg_dir, Path(gt_dir), ("dice",), settings.tolerance_mm)
            true_all = truth[(truth.label == "all") & (truth.metric == "dice")]
            row["true_dice"] = float(true_all["value"].mean())
        rows.append(row)
    ranking, tau = rank_by_estimate(pd.DataFrame(rows))
    report: dict = {"ranking": ranking.to_dict(orient="records")}
    if tau is not None:
        report["kendall_tau"] = float(tau.statistic)
        report["kendall_p"] = float(tau.pvalue)
    with atomic_path(out_dir / "ranking.csv") as tmp:
        ranking.to_csv(tmp, index=False)
    write_text_atomic(out_dir / "ranking.json", json.dumps(report, indent=2, default=float))
    return ranking, report
