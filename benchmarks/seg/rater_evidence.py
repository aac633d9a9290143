"""Multi-rater evidence: every model predicts the held-out cases of a multi-rater folder and is
scored against every rater (``segqc evaluate-raters``), side by side.

    python benchmarks/seg/rater_evidence.py --dataset ../shared/data/lidc/cases --split RUN/split.json \
        --model consensus=RUN_CONSENSUS --model mv_unet=RUN_MV --model soft_unet=RUN_SOFT \
        --model probunet=RUN_PROB --out RESULTS [--samples NAME=G ...] [--limit N]

Held-out cases: the ``holdout`` side of the split (``segqc seg train ... --holdout-fraction 0.2
--group-by '^([0-9]{4})_'`` writes it; every model must be trained on its ``train`` side). They
are linked into ``RESULTS/held_out/``; each model predicts them with ``segqc seg predict --save
probabilities,samples`` into ``RESULTS/<name>/pred`` (``--samples NAME=G``: that model's samples or
generations; default the model's own) and ``evaluate-raters`` writes ``RESULTS/<name>/eval``.
``RESULTS/summary.csv`` / ``summary.md``: mean and SD over the cases of every metric, and the
prediction time per image (whole command, this machine). Reruns reuse finished cases.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from segqc.evaluation.raters import evaluate_raters
from segqc.io.raters import find_rater_cases
from segqc.io.split import Split
from segqc.seg.inference import predict_folder

METRICS = ["ged", "ged2", "hm_iou", "soft_dice", "soft_dice_5", "ece", "ece_foreground", "diversity",
           "rater_diversity", "volume_crps", "dice_majority"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=RUN_OR_MODEL_DIR (repeatable)")
    parser.add_argument("--samples", action="append", default=[], help="NAME=G: samples of that model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    holdout = list(Split.load(args.split).holdout)
    cases = [c for c in find_rater_cases(args.dataset) if c.case in set(holdout)]
    cases = cases[: args.limit] if args.limit else cases
    held = args.out / "held_out"
    held.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = held / case.case
        if not link.exists():
            os.symlink(case.folder.resolve(), link)
    samples = {k: int(v) for k, _, v in (item.partition("=") for item in args.samples)}
    rows = []
    for item in args.model:
        name, _, model_dir = item.partition("=")
        began = time.perf_counter()
        report = predict_folder(model_dir, held, args.out / name / "pred", samples=samples.get(name), jobs=args.jobs,
                                save=("probabilities", "samples"), progress=True)
        seconds = time.perf_counter() - began
        if report.failed:
            raise SystemExit(f"{name}: {len(report.failed)} case(s) failed: {next(iter(report.failed.values()))}")
        table, summary, _ = evaluate_raters(args.out / name / "pred", held, args.out / name / "eval", jobs=args.jobs)
        row: dict[str, object] = {"model": name, "cases": summary["n_cases"],
                                  "seconds_per_image": seconds / max(len(report.done) - len(report.reused), 1)
                                  if len(report.reused) < len(report.done) else float("nan")}
        for metric in METRICS:
            entry = summary["metrics"].get(metric) or {}
            row[metric] = entry.get("mean")
            row[f"{metric}_sd"] = entry.get("std")
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS if row[m] is not None), flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "summary.csv", index=False)
    lines = ["| model | " + " | ".join(METRICS) + " | s / image |", "|---" * (len(METRICS) + 2) + "|"]
    for row in rows:
        cells = [f"{row[m]:.3f} ± {row[f'{m}_sd']:.3f}" if row[m] is not None else "—" for m in METRICS]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['seconds_per_image']:.2f} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
