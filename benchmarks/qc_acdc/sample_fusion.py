"""Slice-level effect of drawing several pGTs per slice: mean of per-sample estimates vs the
estimate against their per-voxel majority (what the QC driver reports).

    python benchmarks/qc_acdc/sample_fusion.py SLICES_DIR MODEL_DIR [--samples 4] [--steps 5] [--slices 300]

``SLICES_DIR`` from ``slices.py`` (its ``holdout.pkl.gz``). ``--slices`` imperfect held-out
segmentations spread evenly over the patients are checked; multi-class Dice (QCResUNet
definition). Prints Pearson r / MAE of estimated vs true Dice for the mean of the first k samples
(k = 1..K) and for the majority pGT, and the pGT's own Dice against the ground truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slices import load_slices


def _r_mae(est: np.ndarray, true: np.ndarray, ok: np.ndarray) -> str:
    return f"r {np.corrcoef(est[ok], true[ok])[0, 1]:.3f}  MAE {np.mean(np.abs(est[ok] - true[ok])):.3f}"


def main() -> None:
    from segqc.metrics.multiclass import multiclass_dice
    from segqc.qc.inference import majority_vote
    from segqc.qc.nnqc import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slices", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--slices-count", "--slices", dest="count", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    holdout = load_slices(args.slices / "holdout.pkl.gz")
    model = load(args.model)
    pick = np.unique(np.linspace(0, holdout.n_segs - 1, args.count).astype(int))
    segs, source = holdout.segs[pick], holdout.seg_source[pick]
    true = np.array([multiclass_dice(s, holdout.gt[i]).value for s, i in zip(segs, source)])
    pgt = model.generate_pgt(holdout.images[source], segs, holdout.ratios[source], steps=args.steps,
                             samples=args.samples, generator=0).numpy()
    est = np.array([[multiclass_dice(s, pgt[k, j]).value for j, s in enumerate(segs)] for k in range(args.samples)])
    ok = np.isfinite(true) & np.isfinite(est).all(axis=0)
    print(f"{len(segs)} held-out imperfect slices, {args.steps} DDIM steps")
    for k in range(1, args.samples + 1):
        print(f"mean of {k} per-sample estimates: {_r_mae(est[:k].mean(axis=0), true, ok)}")
    majority = majority_vote(pgt, model.labels)
    fused = np.array([multiclass_dice(s, q).value for s, q in zip(segs, majority)])
    print(f"against the majority of {args.samples} pGTs:   {_r_mae(fused, true, ok)}")
    for name, maps in (("one sample", pgt[0]), ("majority", majority)):
        dice = np.nanmean([multiclass_dice(q, holdout.gt[i]).value for q, i in zip(maps, source)])
        print(f"pGT vs ground truth ({name}): mean Dice {dice:.3f}")


if __name__ == "__main__":
    main()
