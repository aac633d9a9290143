"""Seconds per training step of the nnQC ``paper`` preset (for planning a GPU run).

    python benchmarks/qc_acdc/paper_probe.py SLICES_DIR OUT_DIR [--steps 40]

Trains the ``paper`` preset for ``--steps`` steps per stage on held-out slices (``slices.py``)
resized to the preset's 264 px, and prints the median seconds per step of every stage and the
time the preset's full schedule would take at that speed. Timing only: the model is not used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slices import load_slices  # noqa: E402


def main() -> None:
    from segqc.qc.nnqc import NnqcConfig
    from segqc.qc.nnqc.train import NnqcTrainingData, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slices", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    preset = NnqcConfig.preset("paper")
    config = replace(preset, ssl_steps=args.steps, vae_steps=args.steps, ldm_steps=args.steps, adv_start=0,
                     checkpoint_every=10 ** 6)
    small = load_slices(args.slices / "holdout.pkl.gz")
    size = config.size
    images = F.interpolate(torch.from_numpy(small.images), size=(size, size), mode="bilinear").numpy()
    gt = F.interpolate(torch.from_numpy(small.gt[:, None].astype(np.float32)), size=(size, size), mode="nearest")
    gt = gt[:, 0].numpy().astype(small.gt.dtype)
    segs = F.interpolate(torch.from_numpy(small.segs[:, None].astype(np.float32)), size=(size, size), mode="nearest")
    data = NnqcTrainingData(images=images, gt=gt, ratios=small.ratios, segs=segs[:, 0].numpy().astype(small.gt.dtype),
                            seg_source=small.seg_source, labels=small.labels, spacing=small.spacing)
    began = time.perf_counter()
    model_dir = train(config, data, args.out, log=print)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "parameters": {}, "seconds": round(time.perf_counter() - began, 1)}
    total = 0.0
    for stage, steps in (("ssl", preset.ssl_steps), ("vae", preset.vae_steps), ("ldm", preset.ldm_steps)):
        per_step = metrics[stage]["median_step_seconds"]
        report[stage] = {"median_step_seconds": per_step, "preset_steps": steps,
                         "preset_hours": round(per_step * steps / 3600, 2)}
        total += per_step * steps
    report["preset_hours_total"] = round(total / 3600, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
