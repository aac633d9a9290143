"""Rules of ``evaluate_raters`` that decide user-visible numbers: which prediction file is used,
the soft-map range check, spacing in the volume CRPS, the empty majority, the consensus levels of
``soft_dice_5`` and the summary statistics — each value computed by hand or with plain numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segqc.evaluation.raters import _summary, evaluate_raters, prediction_files
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

A = np.array([[1, 1, 0, 0]] * 2, dtype=np.uint8)  # 4 px
B = np.array([[0, 1, 1, 0]] * 2, dtype=np.uint8)  # 4 px, A ∩ B 2 px, A ∪ B 6 px
C = np.array([[1, 0, 0, 0]] * 2, dtype=np.uint8)  # 2 px


def _write(path: Path, array: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, array, Geometry(shape=array.shape, spacing=spacing, origin=(0.0, 0.0),
                                      direction=(1.0, 0.0, 0.0, 1.0)))


def _value(table: pd.DataFrame, case: str, metric: str) -> float:
    row = table[(table["case"] == case) & (table["metric"] == metric)]
    return float(row["value"].iloc[0])


def _case(root: Path, name: str, raters: list[np.ndarray], spacing: tuple[float, float] = (1.0, 1.0)) -> None:
    for k, mask in enumerate(raters, start=1):
        _write(root / "raters" / name / f"rater_{k}.nii.gz", mask, spacing)


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    total = p.sum() + g.sum()
    return 1.0 if total == 0 else 2.0 * float((p & g).sum()) / float(total)


def test_probabilities_of_the_label_win_over_the_soft_folder(tmp_path):
    """Module docstring: ``probabilities/CASE_<v>`` for the label v, *or* ``soft/CASE``."""
    pred = tmp_path / "pred"
    _write(pred / "one.nii.gz", A)
    _write(pred / "probabilities" / "one_1.nii.gz", A.astype(np.float32))
    _write(pred / "soft" / "one.nii.gz", B.astype(np.float32))
    assert prediction_files(pred, "one", 1)["soft"] == (pred / "probabilities" / "one_1.nii.gz",)


def test_a_negative_soft_map_value_is_refused(tmp_path):
    """Docstring: soft map values must lie in [0, 1]; -0.5 is outside."""
    _case(tmp_path, "one", [A, B])
    _write(tmp_path / "pred" / "one.nii.gz", A)
    soft = A.astype(np.float32)
    soft.flat[0] = -0.5
    _write(tmp_path / "pred" / "soft" / "one.nii.gz", soft)
    _, _, report = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None)
    assert "one" in report.failed and "[0, 1]" in report.failed["one"], report.failed


def test_volume_crps_is_in_mm2_with_the_pixel_spacing(tmp_path):
    """Spacing 2 x 3 mm -> 6 mm² a pixel. One sample A (24 mm²), raters A (24) and C (12):
    CRPS = mean(|24-24|, |24-12|) - 0 = 6 mm² (hand computation)."""
    _case(tmp_path, "one", [A, C], spacing=(2.0, 3.0))
    _write(tmp_path / "pred" / "one.nii.gz", A, spacing=(2.0, 3.0))
    table, _, report = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None)
    assert not report.failed
    assert _value(table, "one", "volume_crps") == pytest.approx(6.0)


def test_dice_majority_of_empty_raters_and_empty_prediction_is_one(tmp_path):
    """Docstring: dice_majority, both empty -> 1."""
    empty = np.zeros_like(A)
    _case(tmp_path, "blank", [empty, empty])
    _write(tmp_path / "pred" / "blank.nii.gz", empty)
    table, _, _ = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None)
    assert _value(table, "blank", "dice_majority") == 1.0


def test_soft_dice_5_uses_the_five_consensus_levels(tmp_path):
    """soft_dice_5 = mean binary Dice of (soft > t) and (rater mean > t) over t = 0.1, 0.3, 0.5,
    0.7, 0.9 (numpy loop); the soft map differs from the raters only at some of those levels."""
    _case(tmp_path, "one", [A, B])
    _write(tmp_path / "pred" / "one.nii.gz", A)
    soft = np.array([[0.95, 0.95, 0.2, 0.0], [0.95, 0.95, 0.2, 0.0]], dtype=np.float32)
    _write(tmp_path / "pred" / "soft" / "one.nii.gz", soft)
    table, _, _ = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None)
    mean = (A + B) / 2.0
    ref = np.mean([_dice(soft > t, mean > t) for t in (0.1, 0.3, 0.5, 0.7, 0.9)])
    assert ref == pytest.approx((1 + 0.8 + 3 * 2 / 3) / 5)  # by hand
    assert _value(table, "one", "soft_dice_5") == pytest.approx(ref)


def test_samples_win_over_the_label_map(tmp_path):
    """Docstring: the label map is the one sample only *without* samples."""
    _case(tmp_path, "one", [A, B])
    _write(tmp_path / "pred" / "one.nii.gz", A)
    _write(tmp_path / "pred" / "samples" / "one_00.nii.gz", A)
    _write(tmp_path / "pred" / "samples" / "one_01.nii.gz", B)
    table, _, _ = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None)
    assert set(table["n_samples"]) == {2}
    assert _value(table, "one", "diversity") == pytest.approx(1 - 2 / 6)


def test_several_foreground_labels_ignore_per_label_probabilities(tmp_path):
    """Docstring: ``probabilities/CASE_<v>`` only for one ``--label``; with labels (1, 2) the soft
    map is the mean of the samples (= A): majority A ∪ B (6 px) vs A (4 px) -> 2*4/10."""
    _case(tmp_path, "one", [A, B])
    _write(tmp_path / "pred" / "one.nii.gz", A)
    _write(tmp_path / "pred" / "probabilities" / "one_2.nii.gz", np.zeros_like(A, dtype=np.float32))
    table, _, _ = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None, foreground=(1, 2))
    assert _value(table, "one", "dice_majority") == pytest.approx(0.8)


def test_summary_std_is_the_population_std(tmp_path):
    """ged2 of case one 0 and of case two 1/3 (hand values of the toy cases): numpy std, ddof 0."""
    for name in ("one", "two"):
        _case(tmp_path, name, [A, B])
    _write(tmp_path / "pred" / "samples" / "one_00.nii.gz", A)
    _write(tmp_path / "pred" / "samples" / "one_01.nii.gz", B)
    _write(tmp_path / "pred" / "two.nii.gz", A)
    _, summary, _ = evaluate_raters(tmp_path / "pred", tmp_path / "raters", None)
    assert summary["metrics"]["ged2"]["std"] == pytest.approx(float(np.std([0.0, 1 / 3])))
    assert summary["metrics"]["ged2"]["n"] == 2


def test_summary_counts_infinite_and_missing_values_as_undefined():
    """Values 1, 3, inf, NaN: mean 2, population std 1 over the two finite ones, n_nan 2 (hand)."""
    table = pd.DataFrame({"case": list("abcd"), "metric": ["m"] * 4, "value": [1.0, 3.0, np.inf, np.nan]})
    out = _summary(table)["m"]
    assert out == {"mean": 2.0, "std": 1.0, "n": 2, "n_nan": 2}
