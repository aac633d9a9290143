"""GT-free QC evidence on the held-out ACDC patients: estimated vs true metrics and model ranking.

    python benchmarks/qc_acdc/evidence.py --dataset ../shared/data/acdc --split SPLIT.json \
        --degraded DEGRADE_OUT --zoo ZOO_PREDICT_OUT --out RESULTS \
        --model nnqc=MODEL_DIR --model position=MODEL_DIR --model image=MODEL_DIR --model cae=MODEL_DIR \
        [--steps 20] [--jobs 2] [--zoo-sources unet_e001,unet_e002,...] [--metrics dice,hd95] [--sets degraded,zoo]

(``--zoo`` may be left out with ``--sets degraded``; QCResUNet models want ``--metrics dice,nsd``.)

Inputs: a patient-level split (``segqc zoo train`` writes one; the QC models must be trained on its
``train`` side only), ``segqc degrade DATASET/labelsTr -o DEGRADE_OUT --per-case 5`` (the five
nnQC Dice bins) and ``segqc zoo predict ZOO DATASET -o ZOO_PREDICT_OUT`` (the zoo predicts the
holdout cases). Only holdout cases are used. Besides r and MAE, the summary holds per model and
set the failure-detection AUROC (true multi-class Dice < 0.7) and, for models with error maps,
the mean DSC_SEM per class. For every QC model the script runs
``segqc.qc.assessment.benchmark_qc`` (what ``segqc qc benchmark`` runs) on the degraded set and on
the zoo set (Dice and HD95, per label and the multi-class ``all``), and ranks the zoo sources by
their mean estimated multi-class Dice from the same run (what ``segqc qc rank --gt`` computes),
with Kendall's tau against the true order. Writes ``OUT/<model>/<set>/`` (the benchmark
outputs; ``zoo/ranking.csv`` and ``zoo/per_source.csv``: r and MAE of the multi-class Dice per zoo
source), ``OUT/summary.csv`` and ``OUT/summary.md``; per-case results are kept, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(os.path.abspath(target), link)


def build_sets(dataset: Path, holdout: set[str], degraded: Path, zoo: Path | None, out: Path,
               sources: list[str] | None) -> tuple[dict[str, tuple[Path, Path, Path]], list[Path]]:
    """(images, segs, gt) folders of the 'degraded' and 'zoo' sets, with one name per segmentation,
    and the zoo source folders (for ranking)."""
    sets = {}
    manifest = pd.read_csv(degraded / "manifest.csv")
    manifest = manifest[manifest["case"].isin(holdout)]
    root = out / "sets"
    for row in manifest.itertuples():
        name = Path(row.file).name[: -len(".nii.gz")]
        _link(dataset / "imagesTr" / f"{row.case}_0000.nii.gz", root / "degraded_images" / f"{name}_0000.nii.gz")
        _link(degraded / row.file, root / "degraded_segs" / f"{name}.nii.gz")
        _link(dataset / "labelsTr" / f"{row.case}.nii.gz", root / "degraded_gt" / f"{name}.nii.gz")
    sets["degraded"] = (root / "degraded_images", root / "degraded_segs", root / "degraded_gt")
    if zoo is None:
        return sets, []
    zoo_manifest = pd.read_csv(zoo / "manifest.csv")
    zoo_manifest = zoo_manifest[zoo_manifest["case"].isin(holdout)]
    if sources:
        zoo_manifest = zoo_manifest[zoo_manifest["source"].isin(sources)]
    for row in zoo_manifest.itertuples():
        name = f"{row.case}__{row.source}"
        _link(dataset / "imagesTr" / f"{row.case}_0000.nii.gz", root / "zoo_images" / f"{name}_0000.nii.gz")
        _link(zoo / row.file, root / "zoo_segs" / f"{name}.nii.gz")
        _link(dataset / "labelsTr" / f"{row.case}.nii.gz", root / "zoo_gt" / f"{name}.nii.gz")
    sets["zoo"] = (root / "zoo_images", root / "zoo_segs", root / "zoo_gt")
    source_dirs = [zoo / s for s in sorted(zoo_manifest["source"].unique())]
    return sets, source_dirs


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table of a frame with a (set, metric, label) row index and (measure, model) columns."""
    header = [" / ".join(map(str, frame.index.names))] + [" ".join(map(str, c)) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " / ".join(map(str, index)) + " | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)


def _overall_dice_by_source(pairs: pd.DataFrame) -> pd.DataFrame:
    """The multi-class Dice rows of a benchmark's pairs, with the zoo source (``CASE__SOURCE``)."""
    overall = pairs[(pairs["label"] == "all") & (pairs["metric"] == "dice")].copy()
    overall["source"] = overall["case"].str.split("__").str[-1]
    return overall


def rank_from_pairs(pairs: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Zoo sources ranked by mean estimated multi-class Dice (as ``segqc qc rank``), with the true
    mean and Kendall's tau between the two orders."""
    from segqc.report import rank_by_estimate

    overall = _overall_dice_by_source(pairs)
    means = overall.groupby("source")[["estimate", "true"]].mean().reset_index()
    ranking, tau = rank_by_estimate(means.rename(columns={"estimate": "estimated_dice", "true": "true_dice"}))
    return ranking, float(tau.statistic)


def per_source(pairs: pd.DataFrame) -> pd.DataFrame:
    """Multi-class Dice per zoo source: n, mean true and estimated Dice, Pearson r and MAE (e.g. to
    compare sources a QC model saw in training, ``segqc qc train --extra-segs``, with unseen ones)."""
    rows = []
    for source, group in _overall_dice_by_source(pairs).groupby("source"):
        error = (group["estimate"] - group["true"]).abs()
        rows.append({"source": source, "n": len(group), "true_mean": group["true"].mean(),
                     "estimate_mean": group["estimate"].mean(), "pearson_r": group["estimate"].corr(group["true"]),
                     "mae": error.mean()})
    return pd.DataFrame(rows)


def main() -> None:
    from segqc.io.split import Split
    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--degraded", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, default=None)
    parser.add_argument("--metrics", default="dice,hd95")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--zoo-sources", default="")
    parser.add_argument("--sets", default="degraded,zoo")
    args = parser.parse_args()
    split = Split.load(args.split)
    sources = [s for s in args.zoo_sources.split(",") if s] or None
    sets, source_dirs = build_sets(args.dataset, set(split.holdout), args.degraded, args.zoo, args.out, sources)
    wanted = args.sets.split(",")
    rows, timing = [], {}
    for item in args.model:
        name, _, model_dir = item.partition("=")
        settings = QcSettings(metrics=tuple(args.metrics.split(",")), steps=args.steps)
        for set_name in [s for s in ("degraded", "zoo") if s in wanted]:
            images, segs, gt = sets[set_name]
            began = time.perf_counter()
            summary = benchmark_qc(model_dir, images, segs, gt, args.out / name / set_name, settings=settings,
                                   jobs=args.jobs)
            timing[f"{name}/{set_name}"] = round(time.perf_counter() - began, 1)
            for row in summary.itertuples():
                rows.append({"model": name, "set": set_name, "label": row.label, "metric": row.metric,
                             "pearson_r": row.pearson_r, "mae": row.mae, "n": row.n})
            extra = json.loads((args.out / name / set_name / "benchmark.json").read_text())
            failure = extra.get("failure_detection") or {}
            rows.append({"model": name, "set": set_name, "label": "all", "metric": "failure_auroc",
                         "pearson_r": failure.get("auroc"), "mae": None, "n": failure.get("n")})
            for item in extra.get("error_maps") or []:
                rows.append({"model": name, "set": set_name, "label": item["label"], "metric": "dsc_sem",
                             "pearson_r": item["dsc_sem"], "mae": None, "n": None})
        pairs = (pd.read_csv(args.out / name / "zoo" / "pairs.csv", dtype={"label": str}) if "zoo" in wanted
                 else pd.DataFrame())
        if len(pairs):  # ranking of the zoo sources from the same QC run (none: a model without Dice heads)
            ranking, tau = rank_from_pairs(pairs)
            ranking.to_csv(args.out / name / "zoo" / "ranking.csv", index=False)
            per_source(pairs).to_csv(args.out / name / "zoo" / "per_source.csv", index=False)
            rows.append({"model": name, "set": "rank", "label": "all", "metric": "kendall_tau",
                         "pearson_r": tau, "mae": None, "n": len(ranking)})
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "summary.csv", index=False)
    (args.out / "timing.json").write_text(json.dumps(timing, indent=2))
    scores = table[table.metric.isin(["failure_auroc", "dsc_sem"])]
    if len(scores):
        print(scores.to_string(index=False))
    table = table[~table.metric.isin(["failure_auroc", "dsc_sem"])] if len(scores) else table
    (args.out / "scores.csv").write_text(scores.to_csv(index=False))
    estimates = table[table.metric != "kendall_tau"]
    if estimates.empty:  # error maps only (--set regression=false)
        print(json.dumps(timing))
        return
    wide = estimates.pivot_table(index=["set", "metric", "label"], columns="model", values=["pearson_r", "mae"])
    (args.out / "summary.md").write_text(markdown(wide.round(3)) + "\n")
    print(wide.round(3).to_string())
    print(table[table.metric == "kendall_tau"].to_string(index=False))
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
