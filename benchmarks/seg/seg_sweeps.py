"""Segmentation sweeps on held-out cases: sampling steps, image noise, and time per image.

    python benchmarks/seg/seg_sweeps.py --dataset ../shared/data/hc18 --split RUN/split.json \
        --model ldseg=LDSEG/model --model unet=UNET/model --out RESULTS \
        [--steps-list 1,2,5,10,50,1000] [--ddpm] [--noise 0,0.05,0.1,0.15,0.2] [--limit N] \
        [--speed] [--samples N]

The slices of all cases are sampled together in batches of 64 (one sample, N = 1; with
``--samples N`` a diffusion model's steps and noise runs average N samples per slice, as
``segqc seg predict --samples N`` does; deterministic models always run once), then every
case is put back on its input grid by :func:`segqc.seg.inference.restore_case` (the code of
``segqc seg predict``) and scored against the ground truth
(per-class Dice, :func:`segqc.metrics.multiclass.per_class_dice`; ``dice_mean``: the mean over the
foreground classes). Written to ``OUT/``:

* ``steps.csv`` — models with diffusion steps (LDSeg): Dice and seconds per image (sampling only,
  in batches of 64) for DDIM with K = each of ``--steps-list``, and with ``--ddpm`` ancestral
  sampling over all T steps.
* ``noise.csv`` — every model: Dice vs additive Gaussian image noise. The noise's standard
  deviation is ``sigma`` times each case's intensity range (max - min; the paper adds noise to
  images scaled to [0, 1]); one seeded draw per case and sigma, the same for every model.
* ``speed.csv`` (``--speed``) — seconds per 256 x 256 image (N = 1, K = 2; the median of 20
  single-image calls on a random image after 3 warm-up calls; preprocessing and resampling back to
  the input grid included) with the torch threads of this process.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from held_out import held_out_cases, held_out_parser

from segqc.io.datasets import Dataset
from segqc.io.images import read_image, read_label_map
from segqc.metrics.multiclass import per_class_dice


def _load_cases(dataset: Dataset, cases: list[str]) -> list[tuple[str, list[np.ndarray], np.ndarray, tuple]]:
    loaded = []
    for case in cases:
        channels = [np.asarray(read_image(p).array, dtype=np.float32) for p in dataset.image_files[case]]
        truth = read_label_map(dataset.label_files[case])
        loaded.append((case, channels, np.asarray(truth.array), truth.geometry.spacing))
    return loaded


def _score(label: np.ndarray, truth: np.ndarray, labels: tuple[int, ...]) -> dict[str, float]:
    foreground = [v for v in labels if v != 0]
    result = per_class_dice(label, truth, labels=foreground)
    row = {f"dice_{value}": float(result[value].value) for value in foreground}
    row["dice_mean"] = float(np.nanmean([row[f"dice_{value}"] for value in foreground]))
    return row


def _run(model, predict_slices, cases, *, steps: int | None, sampler: str = "ddim",
         noise: float = 0.0, samples: int = 1) -> dict[str, float]:
    """Dice of every case with the slices of all cases sampled in batches of 64 (one
    ``predict_slices`` call; a 3D model: one call per case), each case then put back on its grid
    by ``restore_case``."""
    from segqc.seg.inference import restore_case
    from segqc.seg.slices import image_slices, slice_window

    inputs = []
    for index, (_case, channels, _truth, _spacing) in enumerate(cases):
        if noise > 0:
            rng = np.random.default_rng(1000 + index)
            channels = [c + rng.normal(0.0, noise * float(c.max() - c.min()), c.shape).astype(np.float32)
                        for c in channels]
        inputs.append(channels)
    slices = [image_slices(channels, model.size, spacing=case[3], spacing_mm=model.spacing_mm)
              for channels, case in zip(inputs, cases)]
    starts = np.cumsum([0] + [len(x) for x in slices])
    extra = {"sampler": sampler} if sampler != "ddim" else {}
    start = time.perf_counter()
    if getattr(model.config, "spatial_dims", 2) == 3:  # a 3D model's stacks must not mix cases
        parts = [predict_slices(model, x, samples=samples, steps=steps, **extra) for x in slices]
        result = {key: np.concatenate([part[key] for part in parts]) for key in ("mean", "std")}
    else:
        result = predict_slices(model, np.concatenate(slices), samples=samples, steps=steps, batch_size=64, **extra)
    seconds = time.perf_counter() - start
    rows = []
    for index, (_case, _raw, truth, spacing) in enumerate(cases):
        part = {key: result[key][starts[index]:starts[index + 1]] for key in ("mean", "std")}
        window = slice_window(truth.shape, spacing, model.size, model.spacing_mm)
        rows.append(_score(restore_case(model, part, truth.shape, window=window)["label"], truth, model.labels))
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
        segment_case(model, predict_slices, image, samples=1, steps=2, spacing=(1.0, 1.0))
        if repeat >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = held_out_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps-list", default="1,2,5,10,50,1000")
    parser.add_argument("--ddpm", action="store_true", help="also ancestral sampling over all T steps")
    parser.add_argument("--noise", default="0,0.05,0.1,0.15,0.2")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--samples", type=int, default=1, help="samples per slice of a diffusion model (default 1)")
    args = parser.parse_args()
    from segqc.seg.inference import load_seg_model

    dataset, names = held_out_cases(args)
    cases = _load_cases(dataset, names)
    args.out.mkdir(parents=True, exist_ok=True)
    steps_rows, noise_rows, speed_rows = [], [], []
    for entry in args.model:
        name, _, directory = entry.partition("=")
        model, predict_slices = load_seg_model(directory)
        diffusion = hasattr(model.config, "timesteps")
        samples = args.samples if diffusion else 1
        if diffusion and args.steps_list:
            runs = [("ddim", int(k)) for k in args.steps_list.split(",")] + ([("ddpm", 0)] if args.ddpm else [])
            for sampler, k in runs:
                row = _run(model, predict_slices, cases, steps=k or None, sampler=sampler, samples=samples)
                steps_rows.append({"model": name, "sampler": sampler, "samples": samples,
                                   "steps": k or model.config.timesteps, **row})
                print(steps_rows[-1], flush=True)
                pd.DataFrame(steps_rows).to_csv(args.out / "steps.csv", index=False)
        for sigma in (float(s) for s in args.noise.split(",") if s):
            noise_rows.append({"model": name, "sigma": sigma, "samples": samples,
                               **_run(model, predict_slices, cases, steps=None, noise=sigma, samples=samples)})
            print(noise_rows[-1], flush=True)
            pd.DataFrame(noise_rows).to_csv(args.out / "noise.csv", index=False)
        if args.speed:
            speed_rows.append({"model": name, "threads": torch.get_num_threads(),
                               "seconds_per_256px_image": _speed(model, predict_slices, model.image_channels)})
            print(speed_rows[-1], flush=True)
            pd.DataFrame(speed_rows).to_csv(args.out / "speed.csv", index=False)


if __name__ == "__main__":
    main()
