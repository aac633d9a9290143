"""Evaluation rows on small maps whose values are counted by hand in the test: class means of
per-component metrics, the multi-class Dice of chosen labels, lesion-wise rows and tolerances,
soft Dice and instance maps, and the FROC thresholds, counts and summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segqc.evaluation.evaluate import EvaluationConfig, evaluate_folder, evaluate_label_maps, froc_summary
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings
from segqc.metrics.registry import EmptyPolicy


def test_class_mean_of_cc_metrics_averages_the_class_means_not_the_components() -> None:
    """With ``per_component`` and ``class_mean``, label ``mean`` of ``cc_dice`` is the mean of the
    classes' per-case ``cc_dice`` (the rows without a component id); the per-component rows of the
    same name must not enter it. Class 1: components of Dice 1 and 0 (mean 0.5); class 2: one
    component of Dice 1; class mean (0.5 + 1) / 2 = 0.75."""
    gt = np.zeros((20, 20), np.uint8)
    gt[1:4, 1:4] = 1
    gt[12:15, 12:15] = 1
    gt[1:4, 12:15] = 2
    pred = np.zeros_like(gt)
    pred[1:4, 1:4] = 1  # the second component of class 1 is missed
    pred[1:4, 12:15] = 2
    config = EvaluationConfig(metrics=("cc_dice",), class_mean=True)
    table = evaluate_label_maps(pred, gt, (1.0, 1.0), config)
    means = table[table["component"].isna() & (table["metric"] == "cc_dice")]
    got = dict(zip(means["label"], means["value"]))
    assert got["1"] == pytest.approx(0.5) and got["2"] == pytest.approx(1.0)
    assert got["mean"] == pytest.approx(0.75)
    components = table[table["component"].notna() & (table["metric"] == "cc_dice")]
    assert sorted(components["value"]) == [0.0, 1.0, 1.0]


def test_multiclass_dice_of_chosen_labels_leaves_the_other_classes_out() -> None:
    """With the classes restricted (``--labels``), label ``all`` is the multi-class Dice of those
    classes only: class 1 predicted exactly gives 1, though class 2 (not chosen) is missed. Over
    both classes it would be 2*8 / (2*8 + 0 + 8) = 2/3."""
    gt = np.zeros((10, 10), np.uint8)
    gt[1:3, 1:5] = 1  # 8 pixels
    gt[6:8, 1:5] = 2  # 8 pixels, not chosen
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)
    restricted = EvaluationConfig(metrics=("dice",), multiclass_all=True, label_set=LabelSet().restricted_to((1,)))
    everything = EvaluationConfig(metrics=("dice",), multiclass_all=True)
    for config, expected in ((restricted, 1.0), (everything, 2 / 3)):
        table = evaluate_label_maps(pred, gt, (1.0, 1.0), config)
        row = table[(table["label"] == "all") & (table["metric"] == "dice")]
        assert row["value"].tolist() == [pytest.approx(expected)]


@pytest.mark.parametrize(("pred_has", "gt_has", "tag"), [(False, True, "pred_empty:lesion"),
                                                         (True, False, "gt_empty:lesion")])
def test_lesion_rows_name_the_map_that_is_empty(pred_has: bool, gt_has: bool, tag: str) -> None:
    """Lesion-wise rows of a class present in one map only are tagged with the side that is empty
    (a missed lesion: the prediction; a false positive: the ground truth); both score Dice 0."""
    lesion = np.zeros((16, 16, 16), np.uint8)
    lesion[4:10, 4:10, 4:10] = 1  # 216 mm^3, above the 50 mm^3 minimum
    empty = np.zeros_like(lesion)
    pred, gt = (lesion if pred_has else empty), (lesion if gt_has else empty)
    config = EvaluationConfig(metrics=("lesionwise_dice",), label_set=LabelSet(names={1: "lesion"}, known=True))
    table = evaluate_label_maps(pred, gt, (1.0, 1.0, 1.0), config)
    row = table[table["metric"] == "lesionwise_dice"]
    assert row["value"].tolist() == [0.0]
    assert row["empty"].tolist() == [tag]


def test_lesion_nsd_takes_the_tolerance_of_its_class() -> None:
    """``class_tolerances`` sets the NSD tolerance of the lesion-wise NSD of that class too. A lesion
    predicted two voxels off along one axis: every surface element lies within 2 mm of the other
    surface, so with a 3 mm tolerance the lesion NSD is exactly 1; with the default 1 mm it is not."""
    gt = np.zeros((16, 16, 16), np.uint8)
    gt[4:10, 4:10, 4:10] = 1
    pred = np.roll(gt, 2, axis=0)
    names = LabelSet(names={1: "lesion"}, known=True)
    own = EvaluationConfig(metrics=("lesionwise_nsd",), class_tolerances={"lesion": 3.0}, label_set=names)
    default = EvaluationConfig(metrics=("lesionwise_nsd",), label_set=names)
    got_own = evaluate_label_maps(pred, gt, (1.0, 1.0, 1.0), own)["value"].tolist()
    got_default = evaluate_label_maps(pred, gt, (1.0, 1.0, 1.0), default)["value"].tolist()
    assert got_own == [1.0]
    assert got_default[0] < 1.0


def test_froc_thresholds_are_kept_sorted_and_once_each() -> None:
    """FROC thresholds given out of order or twice are stored ascending and once, so the FROC
    points and the ``lesion_tp@t`` rows come once per threshold, in order."""
    config = EvaluationConfig(metrics=("soft_dice",), soft=True, froc_thresholds=(0.7, 0.3, 0.7, 0.5))
    assert config.froc_thresholds == (0.3, 0.5, 0.7)


def test_froc_thresholds_must_be_above_0() -> None:
    """A FROC threshold of 0 would call every voxel of every map a detection (``prob >= 0``): it is
    refused, as any threshold outside (0, 1]."""
    for bad in ((0.0, 0.5), (0.5, 1.5)):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            EvaluationConfig(metrics=("soft_dice",), soft=True, froc_thresholds=bad)
    assert EvaluationConfig(metrics=("soft_dice",), soft=True, froc_thresholds=(1.0,)).froc_thresholds == (1.0,)


def test_froc_summary_pools_only_the_cases_that_have_detection_counts() -> None:
    """``froc_summary`` pools the ``lesion_*@t`` rows over the cases that have them; a case with
    other rows only (no counts) is left out instead of failing. One case: TP 1, FN 1, FP 2 at 0.5
    -> sensitivity 1/2 and 2 false positives per case."""
    rows = [("a", "soft_dice", 0.8), ("a", "lesion_tp@0.5", 1.0), ("a", "lesion_fn@0.5", 1.0),
            ("a", "lesion_fp@0.5", 2.0), ("b", "soft_dice", 0.4)]
    table = pd.DataFrame(rows, columns=["case", "metric", "value"])
    assert froc_summary(table, (0.5,)) == [{"threshold": 0.5, "sensitivity": 0.5, "fp_per_case": 2.0}]


def test_soft_dice_of_label_maps_names_the_empty_side() -> None:
    """``soft_dice`` on label maps takes the masks as {0, 1} maps with the prediction first: a class
    missing from the prediction follows the ``pred_empty`` rule (here ``best``: 1), one missing
    from the ground truth the ``gt_empty`` rule (``worst``: 0)."""
    gt = np.zeros((8, 8), np.uint8)
    gt[1:4, 1:4] = 1
    pred = np.zeros_like(gt)
    pred[5:7, 5:7] = 2
    settings = MetricSettings(empty=EmptyPolicy(pred_empty="best", gt_empty="worst"))
    config = EvaluationConfig(metrics=("soft_dice",), settings=settings)
    table = evaluate_label_maps(pred, gt, (1.0, 1.0), config)
    got = {label: (value, tag) for label, value, tag in zip(table["label"], table["value"], table["empty"])}
    assert got == {"1": (1.0, "pred_empty:best"), "2": (0.0, "gt_empty:worst")}


def test_instance_maps_score_the_foreground_with_the_prediction_as_prediction() -> None:
    """With ``instances``, the overlap metrics are those of the foreground masks, prediction first:
    one of two ground-truth instances predicted exactly gives precision 1 and recall 1/2, and one
    exact match of two instances PQ = 1 / (1 + 0 + 1/2) = 2/3."""
    gt = np.zeros((10, 10), np.int32)
    gt[1:4, 1:4] = 3
    gt[6:9, 6:9] = 8
    pred = np.where(gt == 3, 5, 0).astype(np.int32)
    config = EvaluationConfig(metrics=("precision", "recall", "pq"), instances=True)
    table = evaluate_label_maps(pred, gt, (1.0, 1.0), config)
    got = dict(zip(table["metric"], table["value"]))
    assert got == {"precision": 1.0, "recall": 0.5, "pq": pytest.approx(2 / 3)}
    assert set(table["label"]) == {"instances"}


def test_froc_counts_a_ground_truth_voxel_at_exactly_one_half(tmp_path: Path) -> None:
    """Soft ground truths are binarised at >= 0.5 for the FROC counts: a lesion marked by half of
    the raters (value 0.5) is a lesion, so a prediction over it is a true positive, not a false
    positive."""
    geometry = Geometry.from_shape((12, 12, 12), spacing=(1.0, 1.0, 1.0))
    gt = np.zeros((12, 12, 12), np.float32)
    gt[2:8, 2:8, 2:8] = 0.5  # 216 mm^3
    prob = np.where(gt > 0, 0.9, 0.0).astype(np.float32)
    write_image(tmp_path / "pred" / "a.nii.gz", prob, geometry)
    write_image(tmp_path / "gt" / "a.nii.gz", gt, geometry)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt", config=EvaluationConfig(
        metrics=("soft_dice",), soft=True, froc_thresholds=(0.5,)), return_details=True)
    assert result.summary["froc"] == [{"threshold": 0.5, "sensitivity": 1.0, "fp_per_case": 0.0}]


def test_a_png_beside_a_nifti_of_1_mm_spacing_is_evaluated(tmp_path: Path) -> None:
    """A PNG (no stored spacing, 1 mm assumed) beside a NIfTI whose spacing is 1 mm is on the same
    grid: it is evaluated, not refused. A 5x10 box shifted by 2 pixels overlaps 5x8: Dice 80/100."""
    import SimpleITK as sitk

    gt = np.zeros((20, 30), np.uint8)
    gt[5:10, 5:15] = 1
    pred = np.roll(gt, 2, axis=1)
    for side, array, name in (("gt", gt, "c1.nii.gz"), ("pred", pred, "c1.png")):
        (tmp_path / side).mkdir()
        image = sitk.GetImageFromArray(array)
        if name.endswith(".nii.gz"):
            image.SetSpacing((1.0, 1.0))
        sitk.WriteImage(image, str(tmp_path / side / name))
    table = evaluate_folder(tmp_path / "pred", tmp_path / "gt", metrics=("dice",))
    assert table["value"].tolist() == [pytest.approx(0.8)]
