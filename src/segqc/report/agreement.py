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
