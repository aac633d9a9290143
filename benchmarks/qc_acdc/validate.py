"""Slice-level validation of trained nnQC models on held-out slices, for several DDIM step counts.

    python benchmarks/qc_acdc/validate.py SLICES_DIR NAME=MODEL_DIR ... [--steps 2 5 10 20 50]
        [--max-slices 400] [--threads 2] [--out results.json]

Same measures as ``train_variants.py`` (Pearson r / MAE of estimated vs true multi-class Dice per
slice, pGT Dice, seconds for the whole set on this machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slices import load_slices
from train_variants import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slices", type=Path)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--max-slices", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    holdout = load_slices(args.slices / "holdout.pkl.gz")
    results = []
    print(f"{'model':<12} {'steps':>5} {'r':>6} {'MAE':>6} {'pGT(deg)':>8} {'pGT(clean)':>10} {'s':>7} {'slices':>6}")
    for item in args.models:
        name, _, path = item.partition("=")
        for steps in args.steps:
            row = {"model": name, **validate(Path(path), holdout, steps, args.max_slices)}
            results.append(row)
            print(f"{name:<12} {steps:>5} {row['pearson_r']:6.3f} {row['mae']:6.3f} "
                  f"{row['pgt_dice_degraded_inputs']:8.3f} {row['pgt_dice_clean_inputs']:10.3f} {row['seconds']:7.1f} "
                  f"{row['slices']:>6}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
