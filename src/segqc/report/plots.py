"""Plots of estimates against the truth (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segqc.io.atomic import atomic_path


def scatter_plots(pairs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One ``plots/scatter_<label>_<metric>.png`` per (label, metric): estimate vs truth with the
    identity line and r / MAE in the title."""
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
