"""summary.json's statistics against pandas and the statistics module on hand-made tidy tables."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest

from segqc.evaluation.aggregate import summarise
from segqc.evaluation.evaluate import COLUMNS


def _table(rows: list[tuple]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["component"] = table["component"].astype("Int64")
    return table


def test_mean_median_sample_std_and_empty_rules_per_label_and_metric():
    values = [0.91, 0.35, 0.78, np.nan, 0.6]
    tags = ["", "", "gt_empty:worst", "both_empty:nan", "gt_empty:worst"]
    table = _table([(f"c{i}", "1", "lv", None, "dice", v, t, "1") for i, (v, t) in enumerate(zip(values, tags))])
    entry = summarise(table)["1"]["dice"]
    finite = pd.Series([v for v in values if not np.isnan(v)])
    assert entry["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert entry["median"] == pytest.approx(statistics.median(finite), rel=1e-12)
    assert entry["std"] == pytest.approx(statistics.stdev(finite), rel=1e-12)  # the sample SD (n - 1)
    assert (entry["n"], entry["n_nan"]) == (4, 1)
    assert entry["empty_rules"] == {"gt_empty:worst": 2, "both_empty:nan": 1}


def test_the_overall_median_of_components_pools_every_component_of_every_case():
    """CC-Metrics' ``overall`` reduction: components of all cases weigh the same; a skewed set
    tells the median from the mean."""
    components = {"a": [0.1, 0.2, 0.95], "b": [0.9, 0.92]}
    rows = []
    for case, values in components.items():
        rows += [(case, "1", "lesion", k + 1, "cc_dice", v, "", "1") for k, v in enumerate(values)]
        rows.append((case, "1", "lesion", None, "cc_dice", float(np.mean(values)), "", "1"))
    overall = summarise(_table(rows))["1"]["cc_dice"]["overall"]
    pooled = [v for values in components.values() for v in values]
    assert overall["median"] == pytest.approx(statistics.median(pooled), rel=1e-12)
    assert overall["mean"] == pytest.approx(statistics.fmean(pooled), rel=1e-12)
    assert overall["n_components"] == 5
