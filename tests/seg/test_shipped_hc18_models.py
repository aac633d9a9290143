"""The ready-made fetal head models (``models/hc18-ldseg-small``, ``models/hc18-unet-small``) on
real HC18 ultrasound images of subjects they were not trained on, through ``segqc seg predict``.
References: the ground-truth masks and the challenge's head circumference (``head_circumference.csv``),
and a trivial baseline (the centred ellipse of semi-axes 0.3 x the image size, the best of its
kind on these images). A model that ignored its weights or its image would not beat the baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segqc.io.images import read_image, read_label_map
from segqc.metrics.ellipse import head_circumference

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"ldseg": ROOT / "models" / "hc18-ldseg-small", "unet": ROOT / "models" / "hc18-unet-small"}
SPLIT = ROOT / "benchmarks" / "results" / "seg_hc18" / "split.json"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def _centred_ellipse(shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape
    y, x = np.ogrid[:h, :w]
    return ((y - h / 2) / (0.3 * h)) ** 2 + ((x - w / 2) / (0.3 * w)) ** 2 <= 1


@pytest.fixture(scope="module")
def held_out(shared_data, tmp_path_factory):
    hc18 = shared_data("hc18")
    cases = json.loads(SPLIT.read_text())["holdout"][::16]  # 11 of the 162, spread over the list
    images = tmp_path_factory.mktemp("hc18_images")
    for case in cases:
        shutil.copy(hc18 / "imagesTr" / f"{case}_0000.nii.gz", images / f"{case}_0000.nii.gz")
    hc = pd.read_csv(hc18 / "head_circumference.csv", dtype={"case": str}).set_index("case")["hc_mm"]
    return hc18, cases, images, hc


@pytest.mark.parametrize("name", ["ldseg", "unet"])
def test_shipped_model_segments_held_out_heads_far_better_than_a_centred_ellipse(name, held_out, tmp_path):
    from segqc.seg.inference import predict_folder

    hc18, cases, images, hc = held_out
    assert (MODELS[name] / "config.json").is_file(), f"the shipped model is missing: {MODELS[name]}"
    report = predict_folder(MODELS[name], images, tmp_path / "out", samples=4 if name == "ldseg" else 1)
    assert not report.failed
    dice, baseline, hc_error, baseline_hc_error = [], [], [], []
    for case in cases:
        truth = read_label_map(hc18 / "labelsTr" / f"{case}.nii.gz")
        predicted = read_label_map(tmp_path / "out" / f"{case}.nii.gz")
        assert predicted.array.shape == truth.array.shape  # on the input grid
        np.testing.assert_allclose(predicted.geometry.spacing, truth.geometry.spacing)
        dice.append(_dice(predicted.array > 0, truth.array > 0))
        baseline.append(_dice(_centred_ellipse(truth.array.shape), truth.array > 0))
        hc_error.append(abs(head_circumference(predicted.array > 0, truth.geometry.spacing) - float(hc[case])))
        baseline_hc_error.append(abs(head_circumference(_centred_ellipse(truth.array.shape), truth.geometry.spacing)
                                     - float(hc[case])))
        entropy = read_image(tmp_path / "out" / "uncertainty" / f"{case}.nii.gz").array
        assert entropy.shape == truth.array.shape and float(entropy.min()) >= 0
    # on the whole held-out set: Dice 0.945 (LDSeg) / 0.956 (U-Net), HC error median 4.5 / 2.4 mm
    # (the centred ellipse: 0.81 here, many heads lie near the centre)
    assert np.mean(dice) > 0.9 and np.mean(dice) > np.mean(baseline) + 0.1, (dice, baseline)
    assert np.median(hc_error) < 8.0 and np.median(hc_error) < 0.5 * np.median(baseline_hc_error), (
        hc_error, baseline_hc_error)
    table = pd.read_csv(tmp_path / "out" / "cases.csv", dtype={"case": str})
    assert sorted(table["case"]) == sorted(cases)
