"""Segmentation evidence on held-out cases: accuracy, head circumference and uncertainty quality.

    python benchmarks/seg/seg_evidence.py --dataset ../shared/data/hc18 --split RUN/split.json \
        --model ldseg=RUN/model [--model other=DIR] --out RESULTS [--samples 8] [--steps 2] \
        [--hc ../shared/data/hc18/head_circumference.csv] [--limit N]

For each model, every ``holdout`` case of the split is segmented in this process through the
method's own array API (:func:`segqc.seg.inference.segment_case`: the same code as ``segqc seg
predict``), keeping the mean class probabilities. Written to ``OUT/<model>/``:

* ``segs/CASE.nii.gz`` and ``evaluation/`` — ``segqc evaluate`` of the label maps against the
  ground truth (Dice, HD95 in mm per class);
* ``cases.csv`` — per case the multi-class Dice, the uncertainty score (mean entropy in the predicted
  foreground, as ``cases.csv`` of ``seg predict``) and, with ``--hc``, the head circumference of
  the moment ellipse of the predicted mask (:func:`segqc.metrics.ellipse.head_circumference`) next
  to the challenge's value;
* ``summary.json`` — means; top-label ECE / MCE of the mean probabilities over all pixels and over
  the pixels where prediction or truth is foreground (10 bins); AUROC of the per-pixel entropy for
  the misclassified pixels; Spearman ρ of the per-case uncertainty score with the Dice (a good
  score is high where the Dice is low: ρ < 0); HC absolute error mean / median (mm).

``OUT/summary.csv`` has one row per model. Pixels are pooled over all cases at the input grid.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from held_out import held_out_cases, held_out_parser
from scipy import stats

from segqc.evaluation.evaluate import evaluate_folder
from segqc.io.datasets import Dataset
from segqc.io.images import read_image, read_label_map, write_image
from segqc.metrics.calibration import rank_auroc, top_label_calibration
from segqc.metrics.ellipse import head_circumference
from segqc.metrics.multiclass import multiclass_dice


def run_model(name: str, model_dir: Path, dataset: Dataset, cases: list[str], out: Path, *, samples: int,
              steps: int, hc: pd.Series | None) -> dict:
    from segqc.seg.inference import case_uncertainty, load_seg_model, segment_case

    model, predict_slices = load_seg_model(model_dir)
    root = out / name
    rows, confidence, correct, entropy, foreground = [], [], [], [], []
    start = time.perf_counter()
    for case in cases:
        channels = [read_image(p) for p in dataset.image_files[case]]
        truth = read_label_map(dataset.label_files[case])
        result = segment_case(model, predict_slices, [c.array for c in channels], samples=samples, steps=steps,
                              spacing=channels[0].geometry.spacing)
        label = result["label"]
        write_image(root / "segs" / f"{case}.nii.gz", label, truth.geometry)
        mean = np.asarray(result["mean"], dtype=np.float32)
        confidence.append(mean.max(axis=0).ravel())
        correct.append((label == truth.array).ravel())
        entropy.append(result["entropy"].ravel())
        foreground.append(((label > 0) | (truth.array > 0)).ravel())
        score, region, _ = case_uncertainty(label, result["entropy"])
        row: dict[str, object] = {"case": case, "dice_all": multiclass_dice(label, truth.array).value,
                                  "uncertainty": score, "region": region}
        if hc is not None and case in hc.index:
            predicted, true = head_circumference(label > 0, truth.geometry.spacing), float(hc[case])
            row.update(hc_pred_mm=predicted, hc_true_mm=true, hc_abs_error_mm=abs(predicted - true))
        rows.append(row)
    seconds = time.perf_counter() - start
    table = pd.DataFrame(rows)
    table.to_csv(root / "cases.csv", index=False)
    conf, ok, ent, fg = (np.concatenate(x) for x in (confidence, correct, entropy, foreground))
    # top-label calibration of the pooled pixels: probabilities (2, n) of [confidence, 1 - confidence]
    # reproduce "confidence vs correct" exactly, whatever the number of classes
    pooled = np.stack([conf, 1 - conf]).astype(np.float64)
    truth_index = np.where(ok, 0, 1)
    ece, mce = top_label_calibration(pooled, truth_index)
    ece_fg, mce_fg = top_label_calibration(pooled, truth_index, mask=fg)
    gt_dir = root / "gt"
    for case in cases:
        link = gt_dir / Path(dataset.label_files[case]).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.abspath(dataset.label_files[case]), link)
    evaluation = pd.DataFrame(evaluate_folder(root / "segs", gt_dir, root / "evaluation", metrics=("dice", "hd95")))
    if "component" in evaluation:
        evaluation = evaluation[evaluation["component"].isna()]
    per_class = evaluation.groupby(["label", "metric"])["value"].mean()
    rho = stats.spearmanr(table["uncertainty"], table["dice_all"])[0] if len(table) > 2 else math.nan
    summary = {
        "model": name, "cases": len(cases), "samples": samples, "steps": steps,
        "seconds_per_case": seconds / max(len(cases), 1),
        "dice_all_mean": float(table["dice_all"].mean()),
        "ece": ece, "mce": mce, "ece_foreground": ece_fg, "mce_foreground": mce_fg,
        "entropy_error_auroc": rank_auroc(ent, ~ok),
        "uncertainty_dice_spearman": float(rho),
    }
    summary.update({f"{metric}_{label}": float(v) for (label, metric), v in per_class.items()})
    if "hc_abs_error_mm" in table:
        summary["hc_abs_error_mean_mm"] = float(table["hc_abs_error_mm"].mean())
        summary["hc_abs_error_median_mm"] = float(table["hc_abs_error_mm"].median())
        summary["hc_failed_cases"] = int(table["hc_pred_mm"].isna().sum())
    (root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = held_out_parser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--hc", type=Path, default=None, help="head_circumference.csv (case, hc_mm)")
    args = parser.parse_args()
    dataset, cases = held_out_cases(args)
    hc = pd.read_csv(args.hc, dtype={"case": str}).set_index("case")["hc_mm"] if args.hc else None
    rows = []
    for entry in args.model:
        name, _, directory = entry.partition("=")
        rows.append(run_model(name, Path(directory), dataset, cases, args.out, samples=args.samples,
                              steps=args.steps, hc=hc))
        print(json.dumps(rows[-1], indent=1))
    pd.DataFrame(rows).to_csv(args.out / "summary.csv", index=False)


if __name__ == "__main__":
    main()
