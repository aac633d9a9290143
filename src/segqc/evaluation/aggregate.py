"""Summaries derived from the tidy metric table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def summarise(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> dict:
    """Per label and metric: mean, median, std, n (cases with a value), n_nan, and the empty rules
    that applied. Per-component rows enter only through their per-case means (``cc_*``, CC-Metrics'
    ``patient`` reduction) and through ``overall`` of each ``cc_*`` entry: the mean, median and
    count of all components of all cases pooled, every component weighing the same (CC-Metrics'
    ``overall`` reduction).

    NaN values (both-empty cases under the default policy, undefined ratios) are excluded from the
    statistics and counted in ``n_nan``.
    """
    if table.empty:
        return {}
    per_case = table[table["component"].isna()]
    per_component = table[table["component"].notna()]
    out: dict = {}
    for (label, metric), group in per_case.groupby(["label", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=float)
        finite = values[~np.isnan(values)]
        rules = group["empty"].fillna("")
        entry = {
            "label_name": str(group["label_name"].iloc[0]),
            "mean": float(finite.mean()) if finite.size else None,
            "median": float(np.median(finite)) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "n": int(finite.size),
            "n_nan": int(values.size - finite.size),
            "empty_rules": {k: int(v) for k, v in rules[rules != ""].value_counts().items()},
        }
        out.setdefault(str(label), {})[str(metric)] = entry
    for (label, metric), group in per_component.groupby(["label", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=float)
        finite = values[~np.isnan(values)]
        entry = out.setdefault(str(label), {}).setdefault(str(metric), {"label_name": str(group["label_name"].iloc[0])})
        entry["overall"] = {
            "mean": float(finite.mean()) if finite.size else None,
            "median": float(np.median(finite)) if finite.size else None,
            "n_components": int(finite.size),
            "n_nan": int(values.size - finite.size),
        }
    return out
