"""How much QCResUNet's read-out depends on the random Fourier features of its correction, and
what averaging several corrections does, held out.

    python benchmarks/qc_acdc/correction_draws.py --model MODEL_DIR --dataset ../shared/data/acdc \
        --split benchmarks/results/qc_acdc/split.json --readout-data WORK_DIR --sets EVIDENCE_OUT/sets \
        --out OUT_DIR [--extra-segs zoo_all/unet_e001 ...] [--per-case 40] [--real-weight 8] [--draws 8]

Computes the network's read-out features (:meth:`QcResUNet.readout_inputs`, as
:func:`segqc.qc.qcresunet.train.fit_readout` does) once for the read-out samples of the
split's training cases (``--readout-data``: the work folder of ``fit_readout.py``, whose degraded
maps are reused when they were made with the same settings) and once for the held-out
segmentations of an ``evidence.py`` run (its ``sets/`` folder: degraded and zoo), then fits the
linear read-out and ``--draws`` corrections on their own feature draws
(:func:`segqc.qc.qcresunet.train.correction_seed`) exactly as ``fit_readout`` does, and reports
the Pearson r and MAE of the multi-class Dice and NSD estimates held out for each draw alone and
for the mean of the first K. Writes ``OUT_DIR/draws.csv``; nothing is saved as a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr

from segqc.qc.qcresunet import predict, train
from segqc.training.fourier import average_corrections, fit_fourier_correction
from segqc.training.ridge import fit_ridge


def held_out_data(loaded: predict.LoadedQcResUNet, sets: Path, tolerance_mm: float, jobs: int
                  ) -> tuple[train.QcResUNetData, list[str]]:
    """The evidence sets' segmentations as samples (true Dice and NSD measured here), and each one's set."""
    items: list[tuple[str, list[Path], Path, list[tuple[str, Path, dict[str, Any] | None]]]] = []
    kinds: list[str] = []
    for kind in ("degraded", "zoo"):
        for seg in sorted((sets / f"{kind}_segs").glob("*.nii.gz")):
            name = seg.name[: -len(".nii.gz")]
            items.append((name, [sets / f"{kind}_images" / f"{name}_0000.nii.gz"],
                          sets / f"{kind}_gt" / f"{name}.nii.gz", [(kind, seg, None)]))
            kinds.append(kind)
    data = train.prepare_samples(items, plan=loaded.plan, classes=loaded.classes, labels=loaded.labels,
                                 fingerprint={}, tolerance_mm=tolerance_mm, jobs=jobs, progress=True)
    data.ndim = loaded.spatial_dims
    return data, kinds  # one segmentation per item: the samples keep the items' order


def scores(estimate: np.ndarray, truth: np.ndarray, kinds: np.ndarray, n_classes: int) -> dict[str, float]:
    out = {}
    for kind in ("degraded", "zoo"):
        rows = kinds == kind
        for metric, column in (("dice", 0), ("nsd", n_classes + 1)):  # all classes
            out[f"{kind}_{metric}_r"] = float(pearsonr(estimate[rows, column], truth[rows, column])[0])
            out[f"{kind}_{metric}_mae"] = float(np.abs(estimate[rows, column] - truth[rows, column]).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--readout-data", type=Path, required=True)
    parser.add_argument("--sets", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra-segs", type=Path, action="append", default=[])
    parser.add_argument("--per-case", type=int, default=40)
    parser.add_argument("--real-weight", type=float, default=8.0)
    parser.add_argument("--fourier", type=int, default=1024)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.jobs))
    loaded = predict.load(args.model)
    config = dataclasses.replace(loaded.config, readout_per_case=args.per_case, readout_real_weight=args.real_weight)
    cases = json.loads(args.split.read_text())["train"]
    data = train.build_readout_data(args.dataset, cases, config, args.readout_data, extra_seg_dirs=args.extra_segs,
                                    jobs=args.jobs, progress=True)
    cpu = torch.device("cpu")
    x = train.readout_passes(loaded.members[0], data, loaded.precision, cpu, progress=True)[0].astype(np.float64)
    y = data.targets.reshape(data.n_samples, -1)
    weights = train.readout_weights(data, config.readout_real_weight)
    held, kinds = held_out_data(loaded, args.sets, config.tolerance_mm, args.jobs)
    xh = train.readout_passes(loaded.members[0], held, loaded.precision, cpu, progress=True)[0].astype(np.float64)
    yh = held.targets.reshape(held.n_samples, -1)
    k = len(loaded.classes)
    linear = fit_ridge(x, y, data.cases, weights=weights)
    linear_error = linear.cv_mse[linear.alpha]
    base, zh = linear.predict(xh), linear.standardise(xh)
    rows, parts = [], []
    for draw in range(args.draws):
        part = fit_fourier_correction(linear.standardise(x), y - linear.predict(x), data.cases,
                                      n_features=args.fourier, seed=train.correction_seed(config.seed, draw),
                                      weights=weights)
        error = part.cv_mse[part.gamma]
        parts.append(part if error < linear_error else None)
        alone = np.clip(base + (part.predict(zh) if parts[-1] is not None else 0.0), 0, 1)
        rows.append({"fit": f"draw {draw}", "draws": 1, "cv_mse": min(error, linear_error), "gamma": part.gamma,
                     **scores(alone, yh, np.array(kinds), k)})
        print(rows[-1], flush=True)
    for n in range(1, args.draws + 1):
        if any(p is not None for p in parts[:n]):
            mean = np.clip(base + average_corrections(parts[:n]).predict(zh), 0, 1)
        else:
            mean = np.clip(base, 0, 1)
        rows.append({"fit": f"mean of draws 0..{n - 1}", "draws": n,
                     "cv_mse": float(np.mean([r["cv_mse"] for r in rows[:n]])), "gamma": np.nan,
                     **scores(mean, yh, np.array(kinds), k)})
        print(rows[-1], flush=True)
    rows.append({"fit": "linear", "draws": 0, "cv_mse": linear_error, "gamma": np.nan,
                 **scores(np.clip(base, 0, 1), yh, np.array(kinds), k)})
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "draws.csv", index=False, float_format="%.4f")
    print(f"wrote {args.out / 'draws.csv'}")


if __name__ == "__main__":
    main()
