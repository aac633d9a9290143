"""Train several nnQC variants on the same slices (in parallel processes) and validate them on
held-out slices.

    python benchmarks/qc_acdc/train_variants.py SLICES_DIR OUT_DIR \
        --variant full: --variant position:conditioning=position --variant image:conditioning=image \
        [--config small] [--threads 2] [--max-parallel 6]

``SLICES_DIR`` is written by ``slices.py`` (``train.pkl.gz``, ``holdout.pkl.gz``). Each variant
``NAME:key=value,key=value`` overrides fields of the preset (values parsed as Python literals) and
trains into ``OUT_DIR/NAME`` (resumable; CUDA when available). Validation (slice level, holdout
slices, every imperfect segmentation plus every clean ground truth, or ``--max-slices`` of them
spread evenly, plus a fifth as many clean ones): mean Dice of the pGT against
the ground truth, and Pearson r / MAE between the estimated Dice (segmentation vs pGT) and the
true Dice (segmentation vs ground truth), all multi-class Dice (QCResUNet definition). Results go
to ``OUT_DIR/NAME/validation.json`` and a table is printed at the end.

``--reuse-stages-from DIR``: start every variant from the finished ``ssl`` and ``vae`` stages of
the run in ``DIR`` (they do not depend on the conditioning or the diffusion settings; only the
latent diffusion stage is trained). The variants must not change a field those stages use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:field=value,field=value`` -> (name, overrides) (values as in ``segqc qc train --set``)."""
    from segqc.qc.training_api import parse_overrides

    name, _, rest = text.partition(":")
    overrides = parse_overrides([item for item in rest.split(",") if item])
    fixed = sorted(set(overrides) & {"size", "field_of_view"})
    if fixed:  # the slices were cut once, by slices.py
        raise SystemExit(f"variant {name}: {', '.join(fixed)} is fixed by the slices; give it to slices.py --set")
    return name, overrides


def validate(model_dir: Path, holdout, steps: int | None, max_slices: int | None) -> dict:
    import torch

    from segqc.metrics.multiclass import multiclass_dice
    from segqc.qc.nnqc import load, predict_slices

    model = load(model_dir, device="auto")
    picked = np.arange(holdout.n_segs)
    clean = np.arange(holdout.n_slices)
    if max_slices is not None and max_slices < holdout.n_segs:  # evenly spread over all patients
        picked = np.unique(np.linspace(0, holdout.n_segs - 1, max_slices).astype(int))
        clean = np.unique(np.linspace(0, holdout.n_slices - 1, max(1, max_slices // 5)).astype(int))
    n = len(picked)
    began = time.perf_counter()
    segs = np.concatenate([holdout.segs[picked], holdout.gt[clean]])
    sources = np.concatenate([holdout.seg_source[picked], clean])
    pgt = predict_slices(model, holdout.images[sources], segs, holdout.ratios[sources], steps=steps, seed=0,
                         batch_size=256)[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    true = np.array([multiclass_dice(s, holdout.gt[i]).value for s, i in zip(segs, sources)])
    est = np.array([multiclass_dice(s, p).value for s, p in zip(segs, pgt)])
    pgt_dice = np.array([multiclass_dice(p, holdout.gt[i]).value for p, i in zip(pgt, sources)])
    ok = np.isfinite(true) & np.isfinite(est)
    degraded = np.arange(len(segs)) < n
    return {
        "slices": int(len(segs)), "seconds": round(seconds, 2), "steps": steps or model.config.inference_steps,
        "pearson_r": float(np.corrcoef(est[ok], true[ok])[0, 1]), "mae": float(np.mean(np.abs(est[ok] - true[ok]))),
        "pgt_dice_degraded_inputs": float(np.nanmean(pgt_dice[degraded])),
        "pgt_dice_clean_inputs": float(np.nanmean(pgt_dice[~degraded])),
        "estimate_on_clean_inputs": float(np.nanmean(est[~degraded])),
    }


def reuse_stages(source: Path, out: Path, config, data) -> None:
    import shutil

    from segqc.qc.nnqc.config import NnqcConfig
    from segqc.qc.nnqc.train import METHOD
    from segqc.training.stages import check_run_record

    if (out / "run.json").exists():
        return
    old = NnqcConfig.from_dict(json.loads((source / "run.json").read_text())["config"] | {"checkpoint_every": 1})
    shared = ("size", "latent_factor", "latent_channels", "image_encoder", "seed") + tuple(
        f for f in old.to_dict() if f.startswith(("vae_", "ssl_", "disc_", "encoder_", "kl_", "dice_", "adv_")))
    changed = [f for f in shared if getattr(old, f) != getattr(config, f)]
    if changed:
        raise SystemExit(f"cannot reuse the stages of {source}: {', '.join(changed)} differ")
    check_run_record(out, method=METHOD, settings=config.resume_key(), data=data.summary())  # before the stages
    for stage in ("ssl", "vae"):
        shutil.copytree(source / "stages" / stage, out / "stages" / stage, dirs_exist_ok=True)


def run_one(args: argparse.Namespace) -> None:
    import torch

    from segqc.qc.nnqc import NnqcConfig
    from segqc.qc.nnqc.train import train

    sys.path.insert(0, str(HERE))
    from slices import load_slices

    name, overrides = parse_variant(args.one)
    out = args.out / name
    config = NnqcConfig.preset(args.config, **overrides)
    data = load_slices(args.slices / "train.pkl.gz")
    if args.reuse_stages_from:
        reuse_stages(Path(args.reuse_stages_from), out, config, data)
    began = time.perf_counter()
    model_dir = train(config, data, out, threads=args.threads, log=lambda line: print(f"[{name}] {line}", flush=True))
    trained = time.perf_counter() - began
    holdout = load_slices(args.slices / "holdout.pkl.gz")
    torch.set_num_threads(args.threads)
    result = {"variant": name, "overrides": overrides, "train_seconds_this_run": round(trained, 1)}
    for steps in args.steps:
        result[f"ddim_{steps}"] = validate(model_dir, holdout, steps, args.max_slices)
    (out / "validation.json").write_text(json.dumps(result, indent=2))
    print(f"[{name}] validation {json.dumps(result)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slices", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--config", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-parallel", type=int, default=6)
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--max-slices", type=int, default=None)
    parser.add_argument("--reuse-stages-from", default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    pending = list(args.variant)
    running: list[subprocess.Popen] = []
    base = [sys.executable, __file__, str(args.slices), str(args.out), "--config", args.config,
            "--threads", str(args.threads), "--steps", *map(str, args.steps)]
    if args.max_slices:
        base += ["--max-slices", str(args.max_slices)]
    if args.reuse_stages_from:
        base += ["--reuse-stages-from", str(args.reuse_stages_from)]
    while pending or running:
        while pending and len(running) < args.max_parallel:
            running.append(subprocess.Popen(base + ["--one", pending.pop(0)], env=os.environ.copy()))
        time.sleep(2)
        running = [p for p in running if p.poll() is None]
    rows = []
    for text in args.variant:
        name, _ = parse_variant(text)
        path = args.out / name / "validation.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    print(f"{'variant':<14} {'steps':>5} {'r':>6} {'MAE':>6} {'pGT(deg)':>8} {'pGT(clean)':>10} {'s':>6}")
    for row in rows:
        for key, value in row.items():
            if key.startswith("ddim_"):
                print(f"{row['variant']:<14} {value['steps']:>5} {value['pearson_r']:6.3f} {value['mae']:6.3f} "
                      f"{value['pgt_dice_degraded_inputs']:8.3f} {value['pgt_dice_clean_inputs']:10.3f} "
                      f"{value['seconds']:6.1f}")


if __name__ == "__main__":
    main()
