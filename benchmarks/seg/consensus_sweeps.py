"""Consensus diffusion on held-out multi-rater cases: soft Dice against the number of generations
(the paper's Fig. 3), DDIM with fewer steps against ancestral sampling, and the time per image.

    python benchmarks/seg/consensus_sweeps.py --dataset ../shared/data/lidc/cases --split RUN/split.json \
        --model RUN --out RESULTS [--generations 1,2,5,10,25] [--sampler ddim --steps 10] \
        [--ddim 5,10,25] [--ancestral] [--limit N]

Generations: every held-out image is sampled once with the largest number of generations (all
levels x G chains, with ``--sampler``/``--steps``); the soft map of the first g generations (g
in ``--generations``) is scored, so the points share their chains like the paper's running
average. Samplers: the same images with the model's default generations, DDIM with each of
``--ddim`` steps and, with ``--ancestral``, ancestral sampling over all T steps (Algorithm 2). Scores: soft Dice (QUBIQ
thresholds and the paper's five levels) of the soft map against the rater mean, mean over images.
Time: seconds per image of each setting (the model's sampling only, this machine, torch threads
as set). Writes ``RESULTS/generations.csv``, ``RESULTS/ddim.csv`` and prints both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segqc.evaluation.raters import CONSENSUS_THRESHOLDS
from segqc.io.raters import find_rater_cases, read_rater_masks
from segqc.io.split import Split
from segqc.metrics.distribution import consensus_maps
from segqc.metrics.soft import soft_dice
from segqc.seg.consensus.predict import load
from segqc.seg.rater_slices import rater_case_images
from segqc.seg.slices import image_slices, label_slices


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generations", default="1,2,5,10,25")
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the generations sweep")
    parser.add_argument("--ddim", default="5,10,25")
    parser.add_argument("--ancestral", action="store_true", help="also ancestral sampling (all T steps)")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    model = load(args.model)
    holdout = set(Split.load(args.split).holdout)
    cases = [c for c in find_rater_cases(args.dataset) if c.case in holdout]
    cases = cases[: args.limit] if args.limit else cases
    images, means = [], []
    for case in cases:  # 2D cases: one slice each, on the model's grid (nearest for the masks)
        images.append(image_slices(rater_case_images(case), model.size)[0])
        masks, _ = read_rater_masks(case)
        resized = np.stack([label_slices(m.astype(np.uint8), (0, 1), model.size)[0] for m in masks])
        means.append(consensus_maps(resized)[1])
    counts = _ints(args.generations)
    rows = []
    began = time.perf_counter()
    per_image = []
    for k, (image, mean) in enumerate(zip(images, means)):
        generator = torch.Generator().manual_seed(k)
        maps = model.model.sample(torch.from_numpy(image[None]), model.level_indices(), generations=max(counts),
                                  sampler=args.sampler, steps=args.steps,
                                  generator=generator)[:, :, 0].numpy()  # (L, G, S, S)
        per_image.append([(soft_dice(maps[:, :g].mean(axis=(0, 1)), mean).value,
                           soft_dice(maps[:, :g].mean(axis=(0, 1)), mean, thresholds=CONSENSUS_THRESHOLDS).value)
                          for g in counts])
    seconds = (time.perf_counter() - began) / max(len(images), 1)
    scores = np.asarray(per_image)  # (images, len(counts), 2)
    for j, g in enumerate(counts):
        rows.append({"generations": g, "soft_dice": scores[:, j, 0].mean(), "soft_dice_5": scores[:, j, 1].mean(),
                     "sampler": args.sampler if args.sampler == "ddpm" else f"ddim {args.steps}",
                     "images": len(images), "seconds_per_image_all": seconds})
    generations = pd.DataFrame(rows)
    ddim_rows = []
    settings = [("ddim", steps) for steps in _ints(args.ddim)] + ([("ddpm", 0)] if args.ancestral else [])
    for sampler, steps in settings:
        began = time.perf_counter()
        values = []
        for k, (image, mean) in enumerate(zip(images, means)):
            generator = torch.Generator().manual_seed(k)
            maps = model.model.sample(torch.from_numpy(image[None]), model.level_indices(),
                                      generations=model.samples, sampler=sampler, steps=steps or None,
                                      generator=generator)[:, :, 0].numpy()
            values.append((soft_dice(maps.mean(axis=(0, 1)), mean).value,
                           soft_dice(maps.mean(axis=(0, 1)), mean, thresholds=CONSENSUS_THRESHOLDS).value))
        ddim_rows.append({"sampler": f"ddim {steps}" if sampler == "ddim" else "ancestral (all T steps)",
                          "generations": model.samples, "soft_dice": float(np.mean([v[0] for v in values])),
                          "soft_dice_5": float(np.mean([v[1] for v in values])),
                          "seconds_per_image": (time.perf_counter() - began) / max(len(images), 1)})
    ddim = pd.DataFrame(ddim_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    generations.to_csv(args.out / "generations.csv", index=False)
    ddim.to_csv(args.out / "ddim.csv", index=False)
    print(generations.round(4).to_string(index=False))
    print(ddim.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
