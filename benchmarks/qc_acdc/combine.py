"""Combine the estimates of two (or more) GT-free QC methods on the same segmentations: does the
combination beat each method alone?

    python benchmarks/qc_acdc/combine.py --pairs nnqc=RESULTS/nnqc/degraded/pairs.csv \
        --pairs qcresunet=RESULTS/qcresunet/degraded/pairs.csv --out OUT [--metric dice]

Each ``pairs.csv`` is what ``segqc qc benchmark`` writes (``case, label, metric, estimate,
true``). Only segmentations, labels and metrics present in every file are compared. Two
combinations:

* ``mean`` — the plain mean of the methods' estimates (nothing fitted);
* ``blend`` — a least-squares line ``true ≈ a + Σ b_k · estimate_k`` per label, fitted by
  leave-one-patient-out cross-validation: every patient's segmentations are estimated by a blend
  fitted on the *other* patients only (the patient is the first group of ``--group``, default
  ``(patient[0-9]+)``), clipped to [0, 1]. A blend fitted on the training split is not possible
  without bias here: both QC models have seen the training patients.
* ``<method>_line`` — the same leave-one-patient-out line of each method *alone* (a
  recalibration): the blend helps only where it beats these too.

Writes ``OUT/combined_pairs.csv`` (every estimate, long form), ``OUT/combined_summary.csv`` (per
label and method: Pearson r, MAE, n, failure-detection AUROC for true Dice < 0.7),
``OUT/combined_bins.csv`` (MAE per bin of the true value) and prints the summary.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from segqc.report.agreement import agreement, failure_auroc, mae_by_bin


def read_pairs(named: list[str], metric: str) -> pd.DataFrame:
    """Wide table: one row per (case, label), a column ``true`` and one column per method."""
    wide: pd.DataFrame | None = None
    for item in named:
        name, _, path = item.partition("=")
        table = pd.read_csv(path, dtype={"label": str})
        table = table[table["metric"] == metric][["case", "label", "estimate", "true"]]
        table = table.rename(columns={"estimate": name, "true": f"true_{name}"})
        wide = table if wide is None else wide.merge(table, on=["case", "label"], how="inner")
    assert wide is not None
    trues = [c for c in wide.columns if c.startswith("true_")]
    spread = (wide[trues].max(axis=1) - wide[trues].min(axis=1)).max()
    if spread > 1e-6:
        raise SystemExit(f"the pairs files disagree on the true values (by up to {spread:.3g}): "
                         "not the same segmentations")
    wide["true"] = wide[trues[0]]
    return wide.drop(columns=trues).dropna()


def loo_blend(wide: pd.DataFrame, methods: list[str], groups: pd.Series) -> np.ndarray:
    """Leave-one-group-out least-squares blend of the methods' estimates, clipped to [0, 1]."""
    out = np.full(len(wide), np.nan)
    design = np.column_stack([np.ones(len(wide)), wide[methods].to_numpy(float)])
    target = wide["true"].to_numpy(float)
    for group in groups.unique():
        test = (groups == group).to_numpy()
        coef, *_ = np.linalg.lstsq(design[~test], target[~test], rcond=None)
        out[test] = design[test] @ coef
    return np.clip(out, 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", action="append", required=True, help="NAME=pairs.csv (two or more)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metric", default="dice")
    parser.add_argument("--group", default=r"(patient[0-9]+)", help="regex; group 1 = patient of a case id")
    args = parser.parse_args()
    if len(args.pairs) < 2:
        raise SystemExit("need at least two --pairs NAME=CSV")
    methods = [item.partition("=")[0] for item in args.pairs]
    wide = read_pairs(args.pairs, args.metric)
    pattern = re.compile(args.group)
    patients = wide["case"].map(lambda c: (m.group(1) if (m := pattern.search(str(c))) else str(c)))
    wide["mean"] = wide[methods].mean(axis=1)
    lines = [f"{m}_line" for m in methods]
    for column in ["blend", *lines]:
        wide[column] = np.nan
    for _label, index in wide.groupby("label").groups.items():
        part = wide.loc[index]
        wide.loc[index, "blend"] = loo_blend(part, methods, patients.loc[index])
        for method, column in zip(methods, lines):
            wide.loc[index, column] = loo_blend(part, [method], patients.loc[index])
    candidates = [*methods, *lines, "mean", "blend"]
    long = wide.melt(id_vars=["case", "label", "true"], value_vars=candidates, var_name="method",
                     value_name="estimate")
    long["metric"] = args.metric
    rows = []
    for method in candidates:
        part = long[long["method"] == method]
        for row in agreement(part).itertuples():
            auroc = np.nan
            if row.label == "all" and args.metric == "dice":
                sub = part[part["label"] == "all"]
                auroc = failure_auroc(sub["estimate"], sub["true"])
            rows.append({"label": row.label, "method": method, "pearson_r": row.pearson_r, "mae": row.mae,
                         "n": row.n, "failure_auroc": auroc})
    summary = pd.DataFrame(rows)
    bins = pd.concat([mae_by_bin(long[long["method"] == m]).assign(method=m) for m in candidates])
    args.out.mkdir(parents=True, exist_ok=True)
    long.to_csv(args.out / "combined_pairs.csv", index=False)
    summary.to_csv(args.out / "combined_summary.csv", index=False)
    bins.to_csv(args.out / "combined_bins.csv", index=False)
    table = summary.pivot(index="label", columns="method", values=["pearson_r", "mae"])
    print(f"{len(wide[wide['label'] == 'all'])} segmentations of {patients.nunique()} patients, metric {args.metric}")
    print(table.round(3).to_string())
    print(summary[summary["label"] == "all"][["method", "failure_auroc"]].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
