"""The ready-made consensus model (``models/lidc-consensus-small``) on LIDC nodule crops of patients it
was not trained on, through ``segqc seg predict`` and ``segqc evaluate-raters``. References: every
radiologist's mask of each slice, and a trivial baseline — the best centred disk (radius 5 px) as
the soft map, soft Dice 0.475 over the 139 held-out slices. A model that ignored its weights or its
image would not beat it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from segqc.io.images import read_image
from segqc.io.raters import find_rater_cases, read_rater_masks
from segqc.metrics.distribution import consensus_maps
from segqc.metrics.soft import soft_dice

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "lidc-consensus-small"
SPLIT = ROOT / "benchmarks" / "results" / "seg_lidc" / "split.json"


def _disk(shape: tuple[int, ...], radius: float = 5.0) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return ((y - (shape[0] - 1) / 2) ** 2 + (x - (shape[1] - 1) / 2) ** 2 <= radius**2).astype(float)


def test_shipped_consensus_model_predicts_the_readers_distribution(shared_data, tmp_path):
    from segqc.evaluation.raters import evaluate_raters
    from segqc.seg.inference import predict_folder

    assert (MODEL / "config.json").is_file(), f"the shipped model is missing: {MODEL}"
    holdout = set(json.loads(SPLIT.read_text())["holdout"])
    cases = [c for c in find_rater_cases(shared_data("lidc") / "cases") if c.case in holdout][::14]  # 10 slices
    folder = tmp_path / "held_out"
    folder.mkdir()
    for case in cases:
        os.symlink(case.folder, folder / case.case)
    report = predict_folder(MODEL, folder, tmp_path / "pred", save=("probabilities", "samples", "levels"))
    assert not report.failed
    scores, baseline = [], []
    for case in cases:
        masks, _ = read_rater_masks(case)
        mean = consensus_maps(np.stack(masks).astype(np.uint8))[1]
        soft = read_image(tmp_path / "pred" / "probabilities" / f"{case.case}_1.nii.gz").array
        assert soft.shape == mean.shape and 0.0 <= soft.min() and soft.max() <= 1.0
        scores.append(soft_dice(soft, mean).value)
        baseline.append(soft_dice(_disk(mean.shape), mean).value)
        levels = sorted((tmp_path / "pred" / "levels").glob(f"{case.case}_*.nii.gz"))
        assert len(levels) == 4  # the levels of four readers, c = 1..4
    # on all 139 held-out slices: soft Dice 0.679 (the disk 0.475)
    assert np.mean(scores) > np.mean(baseline) + 0.1, (scores, baseline)
    table, summary, _ = evaluate_raters(tmp_path / "pred", folder, tmp_path / "eval")
    assert summary["n_cases"] == len(cases)
    wide = table.pivot_table(index="case", columns="metric", values="value")
    assert (wide["hm_iou"] > 0).all() and (wide["ged2"] >= 0).all()
    assert isinstance(pd.read_csv(tmp_path / "eval" / "metrics.csv"), pd.DataFrame)
