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
