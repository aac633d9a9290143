"""Ranking segmentation models by an estimate, and how the ranking agrees with the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


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
