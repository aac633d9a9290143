"""How well estimates agree with the truth, per (label, metric): Pearson r, MAE, n."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def agreement(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pearson r, MAE and n per (label, metric) of a table with ``estimate`` and ``true`` columns
    (rows where either is NaN or infinite are left out; r is NaN with fewer than 3 rows or a
    constant column)."""
    out = []
    for (label, metric), group in pairs.groupby(["label", "metric"], sort=False):
        ok = group[["estimate", "true"]].replace([np.inf, -np.inf], np.nan).dropna()
        varies = len(ok) > 2 and ok["estimate"].std() > 0 and ok["true"].std() > 0
        r = float(stats.pearsonr(ok["estimate"], ok["true"])[0]) if varies else math.nan
        mae = float(np.mean(np.abs(ok["estimate"] - ok["true"]))) if len(ok) else math.nan
        out.append({"label": label, "metric": metric, "pearson_r": r, "mae": mae, "n": int(len(ok))})
    return pd.DataFrame(out, columns=["label", "metric", "pearson_r", "mae", "n"])


def cohens_kappa(first: list[str] | pd.Series, second: list[str] | pd.Series) -> float:
    """Cohen's κ of two raters' categorical decisions on the same items (paired by position):
    κ = (p_o − p_e) / (1 − p_e), p_o the observed agreement, p_e the agreement expected from
    each rater's own category frequencies (Cohen 1960). NaN for no items; 1.0 when both raters
    used one and the same category throughout (then p_e = 1 and the ratio is undefined, but the
    agreement is perfect)."""
    a = [str(x) for x in first]
    b = [str(x) for x in second]
    if len(a) != len(b):
        raise ValueError(f"the two raters have {len(a)} and {len(b)} decisions; pair them by item first")
    if not a:
        return math.nan
    categories = sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    np.add.at(table, ([index[x] for x in a], [index[x] for x in b]), 1.0)
    table /= table.sum()
    observed = float(np.trace(table))
    expected = float(table.sum(axis=1) @ table.sum(axis=0))
    if expected >= 1.0 - 1e-12:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def failure_auroc(estimate: np.ndarray | pd.Series, true: np.ndarray | pd.Series, threshold: float = 0.7) -> float:
    """Area under the ROC curve of the estimate as a detector of failures, a failure being a
    true value below ``threshold`` (QCResUNet: true Dice < 0.7): the probability that a failed
    case has a lower estimate than a good one, ties counting one half (Mann-Whitney U / (n_f n_g)).
    NaN pairs are left out; NaN when either group is empty."""
    from segqc.metrics.calibration import rank_auroc

    e = np.asarray(estimate, dtype=float)
    t = np.asarray(true, dtype=float)
    keep = np.isfinite(e) & np.isfinite(t)
    return rank_auroc(-e[keep], t[keep] < threshold)


def mae_by_bin(pairs: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """MAE and n of the estimates per (label, metric) and bin of the true value (``bins`` equal
    bins of [0, 1], the last closed; values outside [0, 1], e.g. HD95 in mm, are left out)."""
    rows = []
    for (label, metric), group in pairs.groupby(["label", "metric"], sort=False):
        ok = group[["estimate", "true"]].replace([np.inf, -np.inf], np.nan).dropna()
        ok = ok[(ok["true"] >= 0) & (ok["true"] <= 1)]
        which = np.clip(np.floor(ok["true"].to_numpy() * bins), 0, bins - 1).astype(int)
        for b in range(bins):
            part = ok[which == b]
            rows.append({"label": label, "metric": metric, "bin_low": b / bins, "bin_high": (b + 1) / bins,
                         "mae": float(np.mean(np.abs(part["estimate"] - part["true"]))) if len(part) else math.nan,
                         "n": int(len(part))})
    return pd.DataFrame(rows, columns=["label", "metric", "bin_low", "bin_high", "mae", "n"])
