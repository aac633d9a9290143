"""Segmentation sweeps on held-out cases: sampling steps, image noise, and time per image.

    python benchmarks/seg/seg_sweeps.py --dataset ../shared/data/hc18 --split RUN/split.json \
        --model ldseg=LDSEG/model --model unet=UNET/model --out RESULTS \
        [--steps-list 1,2,5,10,50,1000] [--ddpm] [--noise 0,0.05,0.1,0.15,0.2] [--limit N] \
        [--heavy-limit N] [--speed]

Every case goes through :func:`segqc.seg.inference.segment_case` (the code of ``segqc seg
predict``) with one sample (N = 1) and is scored on its input grid against the ground truth
(per-class Dice, :func:`segqc.metrics.multiclass.per_class_dice`; ``dice_mean``: the mean over the
foreground classes). Written to ``OUT/``:

* ``steps.csv`` — models with diffusion steps (LDSeg): Dice and seconds per image for DDIM with K
  = each of ``--steps-list``, and with ``--ddpm`` ancestral sampling over all T steps. K >= 50 and
  ancestral sampling run on the first ``--heavy-limit`` cases only (column ``cases``).
* ``noise.csv`` — every model: Dice vs additive Gaussian image noise. The noise's standard
  deviation is ``sigma`` times each case's intensity range (max - min; the paper adds noise to
  images scaled to [0, 1]); one seeded draw per case and sigma, the same for every model.
* ``speed.csv`` (``--speed``) — seconds per 256 x 256 image (N = 1, K = 2; the median of 20
  single-image calls on a random image after 3 warm-up calls; preprocessing and resampling back to
  the input grid included) with the torch threads of this process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segqc.io.datasets import Dataset
from segqc.io.images import read_image, read_label_map
from segqc.io.split import Split
from segqc.metrics.multiclass import per_class_dice


def _load_cases(dataset: Dataset, cases: list[str]) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    loaded = []
    for case in cases:
        channels = [np.asarray(read_image(p).array, dtype=np.float32) for p in dataset.image_files[case]]
        loaded.append((case, channels, np.asarray(read_label_map(dataset.label_files[case]).array)))
    return loaded


def _score(label: np.ndarray, truth: np.ndarray, labels: tuple[int, ...]) -> dict[str, float]:
    foreground = [v for v in labels if v != 0]
    result = per_class_dice(label, truth, labels=foreground)
    row = {f"dice_{value}": float(result[value].value) for value in foreground}
    row["dice_mean"] = float(np.nanmean([row[f"dice_{value}"] for value in foreground]))
    return row


def _run(model, predict_slices, cases, *, steps: int | None, sampler: str = "ddim",
         noise: float = 0.0) -> dict[str, float]:
    from segqc.seg.inference import segment_case

    def predict(m, images, **kwargs):
        return predict_slices(m, images, sampler=sampler, **kwargs) if sampler != "ddim" else predict_slices(
            m, images, **kwargs)

    rows, seconds = [], 0.0
    for index, (_case, channels, truth) in enumerate(cases):
        if noise > 0:
            rng = np.random.default_rng(1000 + index)
            channels = [c + rng.normal(0.0, noise * float(c.max() - c.min()), c.shape).astype(np.float32)
                        for c in channels]
        start = time.perf_counter()
        result = segment_case(model, predict, channels, samples=1, steps=steps, seed=index)
        seconds += time.perf_counter() - start
        rows.append(_score(result["label"], truth, model.labels))
    table = pd.DataFrame(rows)
    summary = {column: float(table[column].mean()) for column in table.columns}
    summary.update(cases=len(cases), seconds_per_image=seconds / max(len(cases), 1))
    return summary


def _speed(model, predict_slices, channels: int) -> float:
    from segqc.seg.inference import segment_case

    image = [np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32) for _ in range(channels)]
    times = []
    for repeat in range(23):
        start = time.perf_counter()
        segment_case(model, predict_slices, image, samples=1, steps=2)
        if repeat >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps-list", default="1,2,5,10,50,1000")
    parser.add_argument("--ddpm", action="store_true", help="also ancestral sampling over all T steps")
    parser.add_argument("--noise", default="0,0.05,0.1,0.15,0.2")
    parser.add_argument("--limit", type=int, default=0, help="only the first N held-out cases")
    parser.add_argument("--heavy-limit", type=int, default=40, help="cases for K >= 50 and ancestral sampling")
    parser.add_argument("--speed", action="store_true")
    args = parser.parse_args()
    from segqc.seg.inference import load_seg_model

    dataset = Dataset.open(args.dataset)
    names = [c for c in Split.load(args.split).holdout if c in set(dataset.cases)]
    cases = _load_cases(dataset, names[:args.limit] if args.limit else names)
    args.out.mkdir(parents=True, exist_ok=True)
    steps_rows, noise_rows, speed_rows = [], [], []
    for entry in args.model:
        name, _, directory = entry.partition("=")
        model, predict_slices = load_seg_model(directory)
        diffusion = hasattr(model.config, "timesteps")
        if diffusion and args.steps_list:
            runs = [("ddim", int(k)) for k in args.steps_list.split(",")] + ([("ddpm", 0)] if args.ddpm else [])
            for sampler, k in runs:
                heavy = sampler == "ddpm" or k >= 50
                subset = cases[:args.heavy_limit] if heavy else cases
                row = _run(model, predict_slices, subset, steps=k or None, sampler=sampler)
                steps_rows.append({"model": name, "sampler": sampler,
                                   "steps": k or model.config.timesteps, **row})
                print(steps_rows[-1], flush=True)
                pd.DataFrame(steps_rows).to_csv(args.out / "steps.csv", index=False)
        for sigma in (float(s) for s in args.noise.split(",") if s):
            noise_rows.append({"model": name, "sigma": sigma, **_run(model, predict_slices, cases, steps=None,
                                                                     noise=sigma)})
            print(noise_rows[-1], flush=True)
            pd.DataFrame(noise_rows).to_csv(args.out / "noise.csv", index=False)
        if args.speed:
            speed_rows.append({"model": name, "threads": torch.get_num_threads(),
                               "seconds_per_256px_image": _speed(model, predict_slices, model.image_channels)})
            print(speed_rows[-1], flush=True)
            pd.DataFrame(speed_rows).to_csv(args.out / "speed.csv", index=False)


if __name__ == "__main__":
    main()
