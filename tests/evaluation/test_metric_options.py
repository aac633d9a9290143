"""The evaluation options that reproduce peers' definitions, end to end: true negatives over the
whole image, per-class mean, instance maps, lesion-wise metrics, FROC points of probability maps,
the ``inf`` empty rule, and the CLI flags that set them.

References are independent: scikit-learn's confusion-matrix scores, hand counts, and the peers'
definitions written out in the tests.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.evaluation.evaluate import EvaluationConfig, evaluate_folder, evaluate_label_maps
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings, compare_masks

runner = CliRunner()


def _values(table) -> dict[tuple[str, str], float]:
    return {(label, metric): value for label, metric, value in zip(table["label"], table["metric"], table["value"])}


# --- confusion-matrix metrics -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_metrics_equal_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    gt = rng.random((30, 40)) < 0.3
    pred = np.where(rng.random(gt.shape) < 0.2, ~gt, gt)  # 20 % of the pixels flipped
    names = ("kappa", "mcc", "balanced_accuracy", "accuracy", "fbeta", "specificity", "npv", "fpr", "fnr")
    got = {r.metric: r.value for r in compare_masks(pred, gt, (1.0, 1.0), metrics=names,
                                                    settings=MetricSettings(beta=0.5))}
    y, p = gt.ravel(), pred.ravel()
    matrix = sk.confusion_matrix(y, p)
    tn, fp, fn, tp = matrix.ravel()
    assert got["kappa"] == pytest.approx(sk.cohen_kappa_score(y, p), rel=1e-12)
    assert got["mcc"] == pytest.approx(sk.matthews_corrcoef(y, p), rel=1e-12)
    assert got["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, p), rel=1e-12)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, p), rel=1e-12)
    assert got["fbeta"] == pytest.approx(sk.fbeta_score(y, p, beta=0.5), rel=1e-12)
    assert got["specificity"] == pytest.approx(tn / (tn + fp), rel=1e-12)
    assert got["npv"] == pytest.approx(tn / (tn + fn), rel=1e-12)
    assert got["fpr"] == pytest.approx(fp / (fp + tn), rel=1e-12)
    assert got["fnr"] == pytest.approx(fn / (fn + tp), rel=1e-12)


def test_undefined_confusion_metrics_are_nan_and_tagged():
    gt = np.zeros((4, 4), bool)
    pred = np.zeros_like(gt)
    pred[0, 0] = True  # GT empty: recall-side terms undefined, specificity defined
    got = {r.metric: r for r in compare_masks(pred, gt, (1.0, 1.0),
                                             metrics=("specificity", "mcc", "balanced_accuracy", "tn"))}
    assert got["specificity"].value == pytest.approx(15 / 16) and got["specificity"].empty == "gt_empty:natural"
    assert math.isnan(got["mcc"].value) and got["mcc"].empty == "gt_empty:undefined"
    assert math.isnan(got["balanced_accuracy"].value)
    assert got["tn"].value == 15.0
    full = np.ones((3, 3), bool)  # no negatives at all
    (spec,) = compare_masks(full, full, (1.0, 1.0), metrics=("specificity",))
    assert math.isnan(spec.value) and spec.empty == "undefined"


def test_true_negatives_exclude_ignored_voxels_and_count_outside_the_class_crop():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:4, 2:4] = 1  # 4 voxels
    gt[8:10, :] = 255  # 20 ignored voxels
    pred = np.zeros_like(gt)
    pred[2:4, 2:5] = 1  # 6 voxels: TP 4, FP 2
    config = EvaluationConfig(metrics=("tn", "specificity"), label_set=LabelSet(ignore=255))
    got = _values(evaluate_label_maps(pred, gt, (1.0, 1.0), config))
    assert got[("1", "tn")] == 100 - 20 - 6  # 74, though the class crop holds 6 voxels
    assert got[("1", "specificity")] == pytest.approx(74 / 76)


# --- reductions -------------------------------------------------------------------------------


def test_class_mean_is_the_nan_aware_mean_over_classes_not_regions():
    gt = np.zeros((12, 12), np.uint8)
    gt[1:5, 1:5], gt[6:10, 6:10] = 1, 2
    pred = np.zeros_like(gt)
    pred[1:5, 1:4] = 1  # class 1: dice 2*12/(12+16) = 6/7; class 2 missed: dice 0
    config = EvaluationConfig(metrics=("dice", "hd"), class_mean=True,
                              label_set=LabelSet(regions={"both": (1, 2)}), settings=MetricSettings())
    got = _values(evaluate_label_maps(pred, gt, (1.0, 1.0), config))
    assert got[("mean", "dice")] == pytest.approx((6 / 7 + 0.0) / 2)
    assert got[("mean", "hd")] == pytest.approx((got[("1", "hd")] + got[("2", "hd")]) / 2)
    # a class present in neither map (both empty -> NaN) is left out of the mean
    gt3 = np.where(gt == 2, 3, gt)
    pred3 = pred.copy()
    config3 = EvaluationConfig(metrics=("dice",), class_mean=True, label_set=LabelSet(names={1: "a", 2: "b", 3: "c"},
                                                                                     known=True))
    got3 = _values(evaluate_label_maps(pred3, gt3, (1.0, 1.0), config3))
    assert math.isnan(got3[("2", "dice")])
    assert got3[("mean", "dice")] == pytest.approx((6 / 7 + 0.0) / 2)


# --- instance maps ----------------------------------------------------------------------------


def test_instance_maps_keep_touching_instances_apart():
    """Two touching GT cells; the prediction merges them into one object. As instance maps, the
    merged object overlaps each cell with IoU 1/2 (not > 0.5): nothing matches, PQ 0 (RQ 0,
    FP 1, FN 2). As masks the two cells are one component and PQ is 1."""
    gt = np.zeros((12, 20), np.uint16)
    gt[2:8, 2:8], gt[2:8, 8:14] = 1, 2
    pred = np.where(gt > 0, 5, 0).astype(np.uint16)
    config = EvaluationConfig(metrics=("pq", "sq", "rq", "dice"), instances=True)
    got = _values(evaluate_label_maps(pred, gt, (1.0, 1.0), config))
    assert got[("instances", "pq")] == 0.0 and got[("instances", "rq")] == 0.0
    assert got[("instances", "dice")] == 1.0  # the foreground is right
    inclusive = EvaluationConfig(metrics=("pq", "sq", "rq"), instances=True,
                                 settings=MetricSettings(match_inclusive=True))
    got_inclusive = _values(evaluate_label_maps(pred, gt, (1.0, 1.0), inclusive))
    # IoU >= 0.5: one GT cell matches (one to one): SQ 0.5, RQ 1/(1 + 0 + 1/2), PQ their product
    assert got_inclusive[("instances", "sq")] == pytest.approx(0.5)
    assert got_inclusive[("instances", "rq")] == pytest.approx(1 / 1.5)
    as_masks = _values(evaluate_label_maps((pred > 0).astype(np.uint8), (gt > 0).astype(np.uint8), (1.0, 1.0),
                                           EvaluationConfig(metrics=("pq",))))
    assert as_masks[("1", "pq")] == 1.0


def test_per_class_pq_and_sq_rq_by_hand():
    gt = np.zeros((20, 20), np.uint8)
    gt[1:4, 1:4] = 1
    gt[10:14, 10:14] = 1  # class 1: two objects
    gt[15:19, 1:5] = 2
    pred = np.zeros_like(gt)
    pred[1:4, 1:4] = 1  # exact
    pred[10:14, 10:12] = 1  # IoU 8/16 = 0.5 -> not matched at > 0.5
    pred[15:19, 1:4] = 2  # IoU 12/16 = 0.75
    got = _values(evaluate_label_maps(pred, gt, (1.0, 1.0), EvaluationConfig(metrics=("pq", "sq", "rq"))))
    # class 1: TP 1 (IoU 1), FP 1, FN 1 -> RQ 1/2, SQ 1, PQ 1/2
    assert (got[("1", "pq")], got[("1", "sq")], got[("1", "rq")]) == pytest.approx((0.5, 1.0, 0.5))
    assert (got[("2", "pq")], got[("2", "sq")], got[("2", "rq")]) == pytest.approx((0.75, 0.75, 1.0))


# --- folders and CLI --------------------------------------------------------------------------


GEOMETRY_3D = Geometry(shape=(20, 20, 20), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                       direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _lesion_case() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:7, 2:7, 2:7] = 1  # 125 mm^3, predicted exactly
    gt[12:16, 12:16, 12:16] = 1  # 64 mm^3, missed
    gt[2:4, 15:17, 15:17] = 1  # 8 mm^3: ignored by BraTS (<= 50), kept by MIST (>= 10)
    pred = np.zeros_like(gt)
    pred[2:7, 2:7, 2:7] = 1
    return pred, gt


def test_lesion_presets_through_the_cli(tmp_path):
    pred, gt = _lesion_case()
    write_image(tmp_path / "pred" / "c1.nii.gz", pred, GEOMETRY_3D)
    write_image(tmp_path / "gt" / "c1.nii.gz", gt, GEOMETRY_3D)
    metrics = "lesionwise_dice,lesion_tpr,lesion_gt,lesion_fp,lesionwise_hd95"
    out = {}
    for preset in ("brats-gli", "mist"):
        result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o",
                                     str(tmp_path / preset), "--metrics", metrics, "--lesion-preset", preset, "-q"])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / preset / "summary.json").read_text())
        out[preset] = {m: summary["labels"]["1"][m]["mean"] for m in metrics.split(",")}
    # BraTS GLI: two lesions kept (the 8 mm^3 one is ignored), one found: Dice (1 + 0) / 2, HD95 (0 + 374) / 2
    assert out["brats-gli"]["lesion_gt"] == 2 and out["brats-gli"]["lesionwise_dice"] == pytest.approx(0.5)
    assert out["brats-gli"]["lesionwise_hd95"] == pytest.approx(187.0)
    # MIST: minimum volume 10 mm^3 ... the 8 mm^3 lesion is still dropped; missed HD95 = image diagonal
    assert out["mist"]["lesion_gt"] == 2 and out["mist"]["lesion_tpr"] == pytest.approx(0.5)
    assert out["mist"]["lesionwise_hd95"] == pytest.approx(math.sqrt(3 * 20.0**2) / 2)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "x"),
                                 "--metrics", metrics, "--lesion-min-volume", "5", "-q"])
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["labels"]["1"]["lesion_gt"]["mean"] == 3  # the override keeps the small lesion


def test_froc_points_of_probability_maps(tmp_path):
    geometry = GEOMETRY_3D
    gt = np.zeros((20, 20, 20), np.float32)
    gt[2:7, 2:7, 2:7] = 1.0
    gt[12:17, 12:17, 12:17] = 1.0
    prob = np.zeros_like(gt)
    prob[2:7, 2:7, 2:7] = 0.9  # found down to t = 0.9
    prob[12:17, 12:17, 12:17] = 0.4  # found for t <= 0.4
    prob[2:7, 13:18, 13:18] = 0.6  # a false positive for t <= 0.6
    for case in ("a", "b"):
        write_image(tmp_path / "pred" / f"{case}.nii.gz", prob, geometry)
        write_image(tmp_path / "gt" / f"{case}.nii.gz", gt, geometry)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "o"),
                                 "--soft", "--froc", "0.3,0.5,0.7", "-q"])
    assert result.exit_code == 0, result.output
    froc = json.loads((tmp_path / "o" / "summary.json").read_text())["froc"]
    assert [(p["threshold"], p["sensitivity"], p["fp_per_case"]) for p in froc] == [
        (0.3, 1.0, 1.0), (0.5, 0.5, 1.0), (0.7, 0.5, 0.0)]


def test_cc_overall_pools_components_of_all_cases(tmp_path):
    geometry = Geometry(shape=(30, 30), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    gt_a = np.zeros((30, 30), np.uint8)
    gt_a[2:6, 2:6] = 1
    gt_a[20:24, 20:24] = 1
    gt_a[2:6, 20:24] = 1
    pred_a = gt_a.copy()
    pred_a[20:24, 20:24] = 0  # three components, one missed: cc_dice 1, 0, 1
    gt_b = np.zeros((30, 30), np.uint8)
    gt_b[10:14, 10:14] = 1
    pred_b = np.zeros_like(gt_b)  # one component, missed: cc_dice 0
    for case, (p, g) in {"a": (pred_a, gt_a), "b": (pred_b, gt_b)}.items():
        write_image(tmp_path / "pred" / f"{case}.nii.gz", p, geometry)
        write_image(tmp_path / "gt" / f"{case}.nii.gz", g, geometry)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt", tmp_path / "o", metrics=("cc_dice",),
                             return_details=True)
    entry = result.summary["labels"]["1"]["cc_dice"]
    assert entry["mean"] == pytest.approx((2 / 3 + 0) / 2)  # per case, then over cases (patient)
    assert entry["overall"]["mean"] == pytest.approx(2 / 4)  # all four components alike (overall)
    assert entry["overall"]["n_components"] == 4


def test_cli_refuses_chessboard_on_surfel_surfaces_with_one_line(tmp_path):
    pred, gt = _lesion_case()
    write_image(tmp_path / "pred" / "c1.nii.gz", pred, GEOMETRY_3D)
    write_image(tmp_path / "gt" / "c1.nii.gz", gt, GEOMETRY_3D)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "o"),
                                 "--distance", "chessboard", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "voxel" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "o2"),
                                 "--distance", "chessboard", "--surface", "voxel", "--metrics", "hd", "-q"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "o2" / "metrics.csv").read_text()
    assert ",voxel" in rows  # chessboard distances are in grid steps


def test_config_round_trips_every_new_option():
    config = EvaluationConfig(metrics=("nsd", "lesionwise_dice"), class_tolerances={"1": 2.0, "LV": 0.5},
                              class_mean=True, instances=False,
                              settings=MetricSettings(percentile=90, surface="voxel", distance="taxicab", beta=2.0,
                                                      boundary_width_mm=3.0, match_threshold=0.3,
                                                      match_inclusive=True, match_criterion="dice"))
    again = EvaluationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.settings_for(1, "x").tolerance_mm == 2.0 and again.settings_for(3, "LV").tolerance_mm == 0.5
    assert again.settings_for(2, "RV").tolerance_mm == 1.0


def test_evaluate_folder_takes_one_metric_name_as_a_string(tmp_path):
    """Once: evaluate_folder(metrics="dice") failed with "unknown metric 'd'" (the string was taken
    letter by letter), while EvaluationConfig and compare_masks read it as one name."""
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[1:4, 2:5, 1:4] = 1
    for side in ("pred", "gt"):
        write_image(tmp_path / side / "c1.nii.gz", gt, GEOMETRY_3D)
    table = evaluate_folder(tmp_path / "pred", tmp_path / "gt", metrics="dice")
    assert list(table["metric"]) == ["dice"] and table["value"].iloc[0] == 1.0


def test_a_boundary_width_below_the_spacing_fails_the_case_in_one_line(tmp_path):
    """`evaluate --metrics boundary_iou` on 1.5625 mm ACDC-like voxels with the default 1 mm band
    ended in a ZeroDivisionError traceback."""
    pred, gt = _lesion_case()
    coarse = Geometry.from_shape(gt.shape, spacing=(1.5625, 1.5625, 10.0))
    write_image(tmp_path / "pred" / "c1.nii.gz", pred, coarse)
    write_image(tmp_path / "gt" / "c1.nii.gz", gt, coarse)
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--metrics", "boundary_iou", "-q"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = " ".join(result.output.split()).split("error: ")[1:]
    named = f"{tmp_path / 'gt' / 'c1.nii.gz'}: boundary_iou: --boundary-width 1 mm"
    assert len(errors) == 1 and errors[0].startswith(named)
    assert "--boundary-width 1.5625 or more" in errors[0]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o2"), "--boundary-width", "1.5625"])
    assert result.exit_code == 0, result.output
