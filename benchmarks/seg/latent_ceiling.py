"""Where an LDSeg model loses Dice: its label autoencoder against its sampled segmentations.

For the slices of one side of a split, per class the Dice pooled over all slices (every pixel of
every slice counted once; 2D, at the model's slice size) of

* ``autoencoder`` — the ground truth's own latent decoded (label encoder -> label decoder): the
  best any sampled latent can do through this decoder;
* ``sampled`` — one DDIM sample from noise (``--steps``, seed 0) through
  :func:`segqc.seg.ldseg.predict.predict_slices`, as ``segqc seg predict`` draws it.

The difference is what the image encoder and the denoiser lose in predicting the latent.

    python benchmarks/seg/latent_ceiling.py --model RUN/model --dataset ../shared/data/acdc \
        --split benchmarks/results/qc_acdc/split.json --side holdout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segqc.metrics.multiclass import per_class_dice
from segqc.metrics.registry import EmptyPolicy, EmptyRule
from segqc.seg.ldseg.predict import load, predict_slices
from segqc.seg.slices import build_training_data


def pooled_dice(pred: np.ndarray, gt: np.ndarray, classes: int) -> list[float]:
    """Per foreground class index, the Dice over all pixels of the stacked slices
    (:func:`~segqc.metrics.multiclass.per_class_dice`; 1.0 where both are empty)."""
    result = per_class_dice(pred, gt, range(1, classes), empty=EmptyPolicy(both_empty=EmptyRule.BEST))
    return [float(result[c].value) for c in range(1, classes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--side", choices=("holdout", "train"), default="holdout")
    parser.add_argument("--max-cases", type=int, default=0, help="the first N cases of the side (0: all)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model)
    cases = json.loads(Path(args.split).read_text())[args.side]
    cases = cases[:args.max_cases] if args.max_cases else cases
    cfg = model.config
    data = build_training_data(args.dataset, cases, cfg.size, spacing_mm=cfg.spacing_mm)
    classes = len(model.labels)
    decoded = []
    with torch.no_grad():
        for start in range(0, data.n_slices, 64):
            gt = torch.from_numpy(data.gts[start:start + 64].astype(np.int64))
            onehot = F.one_hot(gt, classes).permute(0, 3, 1, 2).float()
            image = torch.from_numpy(data.images[start:start + 64].astype(np.float32))
            decoded.append(model.model.decode(model.model.label_encoder(onehot), image).argmax(1).numpy())
    sampled = predict_slices(model, data.images.astype(np.float32), samples=1, steps=args.steps, seed=0)["label"]
    result = {"model": args.model, "side": args.side, "cases": len(cases), "slices": data.n_slices,
              "autoencoder": pooled_dice(np.concatenate(decoded), data.gts, classes),
              "sampled": pooled_dice(sampled, data.gts, classes)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
