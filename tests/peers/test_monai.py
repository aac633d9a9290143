"""Parity with MONAI (installed in the test extra): the definitions and options MONAI has that
segqc matches — confusion-matrix metrics, chessboard/taxicab surface distances, directed
Hausdorff and average distances, per-class NSD tolerances (``class_thresholds``), generalized
Dice, and MONAI's ``inf`` for an empty ground truth.

MONAI works on voxel surfaces (a mask voxel with a 6-neighbour outside), so segqc is asked with
``surface="voxel"``. Chessboard and taxicab distances are in grid steps: MONAI uses the spacing
only for Euclidean distances.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from peers._cases import blob, flipped_pair
from segqc.evaluation.evaluate import EvaluationConfig, evaluate_label_maps
from segqc.metrics.binary import MetricSettings, compare_masks
from segqc.metrics.multiclass import generalized_dice
from segqc.metrics.registry import EmptyPolicy

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")






def _one_hot(mask: np.ndarray):
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


CASES = [(1, (40, 36, 30)), (2, (90, 80)), (3, (24, 30, 28))]

# segqc name -> MONAI confusion-matrix metric name
CONFUSION = {
    "recall": "sensitivity",
    "specificity": "specificity",
    "precision": "precision",
    "npv": "negative predictive value",
    "fnr": "miss rate",
    "fpr": "fall out",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "fbeta": "f1 score",
    "mcc": "matthews correlation coefficient",
}


@pytest.mark.parametrize("seed, shape", CASES)
def test_confusion_matrix_metrics_match_monai(seed, shape):
    pred, gt = flipped_pair(seed, shape)
    got = {r.metric: r.value for r in compare_masks(pred, gt, (1.0,) * gt.ndim, metrics=tuple(CONFUSION) + ("tn",))}
    matrix = monai_metrics.get_confusion_matrix(_one_hot(pred), _one_hot(gt), include_background=False)
    tp, fp, tn, fn = (float(v) for v in matrix[0, 0])
    assert got["tn"] == tn
    for ours, theirs in CONFUSION.items():
        value = monai_metrics.compute_confusion_matrix_metric(theirs, matrix)[0, 0].item()
        assert got[ours] == pytest.approx(value, rel=1e-5), ours
    # F-beta with beta != 1 against the formula on MONAI's counts
    beta = 2.0
    (r,) = compare_masks(pred, gt, (1.0,) * gt.ndim, metrics=("fbeta",), settings=MetricSettings(beta=beta))
    assert r.value == pytest.approx((1 + beta**2) * tp / ((1 + beta**2) * tp + beta**2 * fn + fp), rel=1e-12)


def test_true_negatives_count_the_whole_image_not_the_class_crop():
    """evaluate_label_maps crops each class to its bounding box; TN must still count the whole image
    (as MONAI's confusion matrix over the full one-hot map), less the ignored voxels."""
    pred, gt = flipped_pair(4, (40, 36, 30))
    labels_pred, labels_gt = pred.astype(np.uint8), gt.astype(np.uint8)
    labels_gt[:3] = 0  # make the class crop smaller than the image
    labels_pred[:3] = 0
    table = evaluate_label_maps(labels_pred, labels_gt, (1.0, 1.0, 1.0),
                                EvaluationConfig(metrics=("tn", "specificity", "mcc", "accuracy")))
    got = dict(zip(table["metric"], table["value"]))
    matrix = monai_metrics.get_confusion_matrix(_one_hot(labels_pred > 0), _one_hot(labels_gt > 0),
                                                include_background=False)
    assert got["tn"] == float(matrix[0, 0, 2])
    for ours, theirs in (("specificity", "specificity"), ("accuracy", "accuracy"),
                         ("mcc", "matthews correlation coefficient")):
        assert got[ours] == pytest.approx(monai_metrics.compute_confusion_matrix_metric(theirs, matrix)[0, 0].item(),
                                          rel=1e-5)


@pytest.mark.parametrize("norm", ["chessboard", "taxicab"])
@pytest.mark.parametrize("seed, shape", CASES)
def test_chessboard_and_taxicab_distances_match_monai(norm, seed, shape):
    pred, gt = flipped_pair(seed, shape)
    spacing = (0.7, 1.3, 2.0)[: gt.ndim]  # MONAI ignores it for these norms, and so must segqc
    settings = MetricSettings(surface="voxel", distance=norm)
    got = {r.metric: r.value for r in compare_masks(
        pred, gt, spacing, metrics=("hd", "hd95", "hd_pred_to_gt", "assd", "asd"), settings=settings)}
    y_pred, y = _one_hot(pred), _one_hot(gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = monai_metrics.compute_hausdorff_distance(y_pred, y, distance_metric=norm).item()
        hd95 = monai_metrics.compute_hausdorff_distance(y_pred, y, distance_metric=norm, percentile=95).item()
        directed = monai_metrics.compute_hausdorff_distance(y_pred, y, distance_metric=norm, directed=True).item()
        assd = monai_metrics.compute_average_surface_distance(y_pred, y, symmetric=True, distance_metric=norm).item()
        asd = monai_metrics.compute_average_surface_distance(y_pred, y, symmetric=False, distance_metric=norm).item()
    assert got["hd"] == pytest.approx(hd, rel=1e-6)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-6)
    assert got["hd_pred_to_gt"] == pytest.approx(directed, rel=1e-6)
    assert got["assd"] == pytest.approx(assd, rel=1e-6)
    assert got["asd"] == pytest.approx(asd, rel=1e-6)
    euclid = compare_masks(pred, gt, spacing, metrics=("hd",), settings=MetricSettings(surface="voxel"))[0].value
    assert got["hd"] != pytest.approx(euclid)  # the norm is really used


@pytest.mark.parametrize("seed, shape", CASES)
def test_directed_euclidean_distances_match_monai_with_spacing(seed, shape):
    pred, gt = flipped_pair(seed, shape)
    spacing = (0.7, 1.3, 2.0)[: gt.ndim]
    got = {r.metric: r.value for r in compare_masks(
        pred, gt, spacing, metrics=("hd_pred_to_gt", "hd95_pred_to_gt", "asd"),
        settings=MetricSettings(surface="voxel"))}
    y_pred, y = _one_hot(pred), _one_hot(gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = monai_metrics.compute_hausdorff_distance(y_pred, y, directed=True, spacing=spacing).item()
        hd95 = monai_metrics.compute_hausdorff_distance(y_pred, y, directed=True, percentile=95, spacing=spacing).item()
        asd = monai_metrics.compute_average_surface_distance(y_pred, y, symmetric=False, spacing=spacing).item()
    assert got["hd_pred_to_gt"] == pytest.approx(hd, rel=1e-5)
    assert got["hd95_pred_to_gt"] == pytest.approx(hd95, rel=1e-5)
    assert got["asd"] == pytest.approx(asd, rel=1e-5)


def test_per_class_nsd_tolerances_match_monai_class_thresholds():
    rng = np.random.default_rng(5)
    shape = (40, 44, 36)
    gt = np.zeros(shape, np.uint8)
    gt[blob(rng, shape, 2.0, 0.5)] = 1
    gt[blob(rng, shape, 2.0, 0.9) & (gt == 0)] = 2
    pred = gt.copy()
    pred[blob(rng, shape, 1.0, 1.3)] = 0
    pred[blob(rng, shape, 1.0, 1.4) & (pred == 0)] = 2
    spacing = (1.0, 0.8, 1.5)
    thresholds = {1: 0.9, 2: 2.6}
    config = EvaluationConfig(metrics=("nsd",), settings=MetricSettings(surface="voxel"),
                              class_tolerances={str(k): v for k, v in thresholds.items()})
    table = evaluate_label_maps(pred, gt, spacing, config)
    got = {int(label): value for label, value in zip(table["label"], table["value"])}
    one_hot = [torch.from_numpy(np.stack([m == c for c in range(3)])[None].astype(np.float32)) for m in (pred, gt)]
    monai_nsd = monai_metrics.compute_surface_dice(one_hot[0], one_hot[1], class_thresholds=[0.9, 2.6],
                                                   include_background=False, spacing=spacing)[0]
    assert got[1] == pytest.approx(monai_nsd[0].item(), rel=1e-5)
    assert got[2] == pytest.approx(monai_nsd[1].item(), rel=1e-5)
    # a class named in class_tolerances gets its own tolerance, the others the default
    default = evaluate_label_maps(pred, gt, spacing, EvaluationConfig(metrics=("nsd",),
                                                                      settings=MetricSettings(surface="voxel")))
    assert dict(zip(default["label"], default["value"]))["1"] != pytest.approx(got[1])


@pytest.mark.parametrize("weighting", ["square", "simple", "uniform"])
def test_generalized_dice_matches_monai(weighting):
    rng = np.random.default_rng(6)
    shape = (30, 34, 26)
    gt = np.zeros(shape, np.uint8)
    gt[blob(rng, shape, 2.0, 0.3)] = 1
    gt[blob(rng, shape, 1.5, 1.2) & (gt == 0)] = 2
    gt[blob(rng, shape, 1.0, 2.0)] = 3
    pred = gt.copy()
    pred[blob(rng, shape, 1.0, 1.1)] = 0
    pred[blob(rng, shape, 1.0, 1.6)] = 3
    one_hot = [torch.from_numpy(np.stack([m == c for c in range(4)])[None].astype(np.float32)) for m in (pred, gt)]
    monai_value = monai_metrics.compute_generalized_dice(one_hot[0], one_hot[1], include_background=False,
                                                         weight_type=weighting, sum_over_classes=True).item()
    assert generalized_dice(pred, gt, [1, 2, 3], weighting=weighting).value == pytest.approx(monai_value, rel=1e-5)
    # a class absent from the GT takes the largest weight of the present ones (MONAI's rule)
    gt_absent = np.where(gt == 2, 0, gt)
    one_hot_gt = torch.from_numpy(np.stack([gt_absent == c for c in range(4)])[None].astype(np.float32))
    monai_absent = monai_metrics.compute_generalized_dice(one_hot[0], one_hot_gt, include_background=False,
                                                          weight_type=weighting, sum_over_classes=True).item()
    assert generalized_dice(pred, gt_absent, [1, 2, 3], weighting=weighting).value == pytest.approx(monai_absent,
                                                                                                     rel=1e-5)


def test_inf_empty_rule_reproduces_monai_for_an_empty_ground_truth():
    pred = np.zeros((20, 20, 20), bool)
    pred[5:9, 5:9, 5:9] = True
    gt = np.zeros_like(pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd = monai_metrics.compute_hausdorff_distance(_one_hot(pred), _one_hot(gt)).item()
    assert monai_hd == float("inf")
    policy = EmptyPolicy(gt_empty="inf")
    results = compare_masks(pred, gt, (1.0,) * 3, metrics=("hd", "hd95", "assd", "dice", "nsd"),
                            settings=MetricSettings(surface="voxel", empty=policy))
    got = {r.metric: (r.value, r.empty) for r in results}
    assert got["hd"] == (float("inf"), "gt_empty:inf")
    assert got["hd95"][0] == float("inf") and got["assd"][0] == float("inf")
    assert got["dice"][0] == 0.0 and got["nsd"][0] == 0.0  # bounded metrics: their worst value
