"""evaluate_label_maps on a generated multi-class phantom (and, for the reference checks, on a real
ACDC label map) and a perturbed copy, against numpy and surface-distance evaluated on the full-size
masks (so per-class cropping must not matter); per-component rows of an analytic case counted by hand."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from segqc.evaluation.evaluate import COLUMNS, EvaluationConfig, evaluate_label_maps
from segqc.io import read_label_map
from segqc.io.labels import LabelSet
from segqc.metrics import EmptyPolicy, MetricSettings, compare_components
from segqc.synthetic import multiclass_phantom, paint_ellipsoid

CASE = "ACDC_patient002_frame01"
NAMES = {1: "RV", 2: "MYO", 3: "LV"}
DISTANCES = ("hd", "hd95", "assd", "masd", "nsd")
SPACING = (1.25, 1.25, 5.0)


def _phantom() -> np.ndarray:
    """Heart-like phantom (1 = a side cavity, 2 = a wall around 3 = a cavity) on an anisotropic grid,
    with a second, separate component of class 2."""
    gt = multiclass_phantom((72, 72, 14), SPACING, seed=5)
    paint_ellipsoid(gt, (62, 62, 7), (4, 4, 1.5), 2)
    return gt


def _acdc_case(shared_data):
    image = read_label_map(shared_data("acdc/labelsTr") / f"{CASE}.nii.gz")
    return image.array, tuple(float(s) for s in image.geometry.spacing)


def _perturb(gt: np.ndarray) -> np.ndarray:
    """RV shifted 3 voxels along x, MYO eroded in-plane, LV dilated in-plane (later classes win)."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    pred = np.zeros_like(gt)
    pred[ndimage.binary_dilation(gt == 3, structure=in_plane)] = 3
    pred[ndimage.binary_erosion(gt == 2, structure=in_plane)] = 2
    pred[np.roll(gt == 1, 3, axis=0)] = 1
    return pred


def _pair(gt: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred = _perturb(gt)
    assert all((gt == c).any() and (pred == c).any() for c in (1, 2, 3))
    return pred, gt, tuple(spacing)


@pytest.fixture(scope="module")
def phantom():
    return _pair(_phantom(), SPACING)


@pytest.fixture(scope="module", params=["phantom", "acdc"])
def pair(request):
    """The phantom pair, then the same perturbation of a real ACDC label map."""
    if request.param == "phantom":
        return request.getfixturevalue("phantom")
    return _pair(*_acdc_case(request.getfixturevalue("shared_data")))


def _case_rows(frame) -> dict:
    """(label, metric) -> (value, empty) for the rows without a component id."""
    plain = frame[frame["component"].isna()]
    return {(str(label), metric): (value, empty)
            for label, metric, value, empty in zip(plain["label"], plain["metric"], plain["value"], plain["empty"])}


def test_per_class_and_region_metrics_match_numpy_and_surface_distance_on_full_masks(pair):
    import surface_distance as sdlib

    pred, gt, spacing = pair
    config = EvaluationConfig(
        settings=MetricSettings(tolerance_mm=2.1),
        label_set=LabelSet(names=NAMES, regions={"heart": (1, 2, 3)}),
    )
    frame = evaluate_label_maps(pred, gt, spacing, config, case="p002")
    assert list(frame.columns) == COLUMNS
    assert set(frame["case"]) == {"p002"}
    rows = _case_rows(frame)
    targets = {"1": (pred == 1, gt == 1), "2": (pred == 2, gt == 2), "3": (pred == 3, gt == 3),
               "heart": (pred > 0, gt > 0)}
    names = dict(zip(frame["label"].astype(str), frame["label_name"]))
    assert names == {"1": "RV", "2": "MYO", "3": "LV", "heart": "heart"}
    voxel_ml = np.prod(spacing) / 1000
    for label, (p, g) in targets.items():
        tp = np.sum(p & g)
        assert rows[(label, "dice")][0] == pytest.approx(2 * tp / (p.sum() + g.sum()), rel=1e-12), label
        assert rows[(label, "iou")][0] == pytest.approx(tp / np.sum(p | g), rel=1e-12), label
        assert rows[(label, "volume_gt")][0] == pytest.approx(g.sum() * voxel_ml, rel=1e-12), label
        assert rows[(label, "rvd")][0] == pytest.approx((p.sum() - g.sum()) / g.sum(), rel=1e-12), label
        ref = sdlib.compute_surface_distances(g, p, spacing)  # full-size masks, no cropping
        assert rows[(label, "hd")][0] == pytest.approx(sdlib.compute_robust_hausdorff(ref, 100), rel=1e-6), label
        assert rows[(label, "hd95")][0] == pytest.approx(sdlib.compute_robust_hausdorff(ref, 95), rel=1e-6), label
        assert rows[(label, "masd")][0] == pytest.approx(np.mean(sdlib.compute_average_surface_distance(ref)), rel=1e-6)
        assert rows[(label, "nsd")][0] == pytest.approx(sdlib.compute_surface_dice_at_tolerance(ref, 2.1), rel=1e-6)
        assert all(rows[(label, m)][1] == "" for m in ("dice", "hd95", "nsd"))
    # the perturbations are visible: the shifted class 1 is 3 voxels (3.75 mm phantom, 4.6875 mm ACDC) off
    assert rows[("1", "hd")][0] == pytest.approx(3 * spacing[0], rel=1e-12)


def test_voxel_mode_hd95_per_class_matches_monai_on_full_masks(phantom):
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred, gt, spacing = phantom
    config = EvaluationConfig(metrics=("hd95",), settings=MetricSettings(surface="voxel"))
    rows = _case_rows(evaluate_label_maps(pred, gt, spacing, config))
    for label in (1, 2, 3):
        p, g = pred == label, gt == label
        one_hot = [torch.from_numpy(np.stack([~m, m])[None].astype(np.float32)) for m in (p, g)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_hausdorff_distance(*one_hot, include_background=False, percentile=95, spacing=spacing).item()
        # MONAI takes the quantile in float32: its position (n - 1) * 0.95 is off by up to ~n * 6e-8, which
        # moves the interpolated value by that fraction of a gap between order statistics (3.5e-5 relative
        # on MYO, with 6514 points); the distances themselves agree to float32 precision.
        assert rows[(str(label), "hd95")][0] == pytest.approx(ref, rel=1e-4)


def test_labels_absent_from_both_maps_give_tagged_both_empty_rows(phantom):
    pred, gt, spacing = phantom
    config = EvaluationConfig(label_set=LabelSet().restricted_to((1, 2, 3, 4)),
                              settings=MetricSettings(empty=EmptyPolicy(both_empty="nan")))
    rows = _case_rows(evaluate_label_maps(pred, gt, spacing, config))
    for metric in ("dice", "iou", "precision", "recall", "hd", "hd95", "assd", "masd", "nsd"):
        value, empty = rows[("4", metric)]
        assert math.isnan(value) and empty == "both_empty:nan", metric
    assert rows[("4", "rvd")][1] == "both_empty:undefined"
    for metric in ("tp", "fp", "fn", "volume_pred", "volume_gt"):
        assert rows[("4", metric)] == (0.0, ""), metric
    assert rows[("1", "dice")][1] == ""
    # no untagged NaN anywhere in the table
    frame = evaluate_label_maps(pred, gt, spacing, config)
    assert not ((frame["value"].isna()) & (frame["empty"] == "")).any()


def test_label_only_in_prediction_gives_gt_empty_worst_rows(phantom):
    pred, gt, spacing = phantom
    pred = pred.copy()
    pred[5:9, 5:9, 2:4] = 7
    rows = _case_rows(evaluate_label_maps(pred, gt, spacing, EvaluationConfig(metrics=("dice", "hd95", "volume_pred"))))
    assert rows[("7", "dice")] == (0.0, "gt_empty:worst")
    assert rows[("7", "hd95")] == (50.0, "gt_empty:worst")
    assert rows[("7", "volume_pred")][0] == pytest.approx(32 * np.prod(spacing) / 1000)


def test_subject_level_nsd_is_the_mean_over_classes_present_in_either_map(phantom):
    """Label ``all`` of the NSD (QCResUNet's subject-level target): surface-distance's NSD of the
    classes present in either map, averaged — a class only in the ground truth counts 0, a class
    in neither map does not count; two all-background maps follow the both-empty rule."""
    import surface_distance as sdlib

    from segqc.qc.qcresunet.train import true_quality

    pred, gt, spacing = phantom
    pred = np.where(pred == 1, 0, pred)  # class 1 missed: in the ground truth only
    config = EvaluationConfig(metrics=("dice", "nsd"), multiclass_all=True, settings=MetricSettings(tolerance_mm=2.1),
                              label_set=LabelSet(names=NAMES, regions={"heart": (1, 2, 3)}).restricted_to((1, 2, 3, 4)))
    rows = _case_rows(evaluate_label_maps(pred, gt, spacing, config))
    per_class = [sdlib.compute_surface_dice_at_tolerance(sdlib.compute_surface_distances(gt == c, pred == c, spacing),
                                                         2.1) for c in (2, 3)]
    expected = (0.0 + sum(per_class)) / 3  # classes 1 (missed), 2, 3; class 4 is in neither map
    assert rows[("all", "nsd")] == (pytest.approx(expected, rel=1e-6), "")
    assert rows[("4", "nsd")][1].startswith("both_empty")
    # the QCResUNet training target of the same pair
    assert true_quality(pred, gt, spacing, [(1,), (2,), (3,)], tolerance_mm=2.1)[1, 0] == pytest.approx(expected)
    empty = np.zeros_like(gt)
    value, tag = _case_rows(evaluate_label_maps(empty, empty, spacing, config))[("all", "nsd")]
    assert math.isnan(value) and tag.startswith("both_empty")
    assert ("all", "nsd") not in _case_rows(evaluate_label_maps(pred, gt, spacing, replace(config, metrics=("dice",))))
    # a class absent from both maps stays out even where the policy scores it (best = 1)
    best = replace(config, settings=MetricSettings(tolerance_mm=2.1, empty=EmptyPolicy(both_empty="best")))
    rows = _case_rows(evaluate_label_maps(pred, gt, spacing, best))
    assert rows[("4", "nsd")][0] == 1.0 and rows[("all", "nsd")] == (pytest.approx(expected, rel=1e-6), "")
    assert _case_rows(evaluate_label_maps(empty, empty, spacing, best))[("all", "nsd")] == (1.0, "both_empty:best")


def test_per_component_rows_equal_component_metrics_of_full_size_masks(pair):
    pred, gt, spacing = pair
    config = EvaluationConfig(metrics=("dice", "hd95", "nsd"), per_component=True)
    frame = evaluate_label_maps(pred, gt, spacing, config)
    for label in (1, 2, 3):
        sub = frame[frame["label"].astype(str) == str(label)]
        n_components = ndimage.label(gt == label, structure=np.ones((3, 3, 3)))[1]
        per = sub[sub["component"].notna()]
        assert sorted(set(per["component"].astype(int))) == list(range(1, n_components + 1))
        full = compare_components(pred == label, gt == label, spacing, metrics=("dice", "hd95", "nsd"))
        expected = {(k, f"cc_{r.metric}"): r.value for k, r in full.per_component}
        got = {(int(c), m): v for c, m, v in zip(per["component"], per["metric"], per["value"])}
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-12), (label, key)
        means = _case_rows(sub)
        for r in full.means + full.detection:
            assert means[(str(label), r.metric)][0] == pytest.approx(r.value, rel=1e-12)
        if n_components == 1:
            assert means[(str(label), "cc_dice")][0] == pytest.approx(means[(str(label), "dice")][0], rel=1e-12)
    assert ndimage.label(gt == 2, structure=np.ones((3, 3, 3)))[1] > 1, "the case has a multi-component class"


def test_non_integer_or_negative_label_maps_are_rejected():
    gt = np.zeros((5, 5, 5), dtype=np.uint8)
    with pytest.raises(ValueError):
        evaluate_label_maps(gt.astype(np.float32), gt, (1, 1, 1))
    with pytest.raises(ValueError):
        evaluate_label_maps(gt.astype(np.int16) - 1, gt, (1, 1, 1))
    with pytest.raises(ValueError):
        evaluate_label_maps(gt[:4], gt, (1, 1, 1))


def test_boolean_label_maps_are_evaluated_as_label_1():
    gt = np.zeros((10, 10, 10), dtype=bool)
    gt[2:6, 2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[3:6, 2:6, 2:6] = True
    rows = _case_rows(evaluate_label_maps(pred, gt, (1.0, 1.0, 1.0), EvaluationConfig(metrics=("dice",))))
    assert rows[("1", "dice")][0] == pytest.approx(2 * 48 / (48 + 64))


def test_per_component_rows_of_three_cubes_two_of_them_hit_are_the_hand_counted_values():
    """Three 4x4x4 cubes of class 1 (A, B, C along x); the prediction covers A exactly, half of B
    (32 voxels), nothing of C, and adds a 2x2x2 blob between A and B that is nearer to A (its Voronoi
    region) without touching it. By hand, per component (TP, predicted voxels in the region, GT):
    A (64, 72, 64): Dice 128/136, precision 64/72, recall 1; B (32, 32, 64): Dice 64/96, precision 1,
    recall 1/2; C: no prediction in its region, worst (0) with the pred_empty tag. Detection: 3 GT
    components, 2 hit, 1 missed; 3 predicted components, 1 (the blob) overlapping none."""
    gt = np.zeros((40, 12, 12), dtype=np.uint8)
    for x in (2, 16, 30):
        gt[x:x + 4, 4:8, 4:8] = 1
    pred = np.zeros_like(gt)
    pred[2:6, 4:8, 4:8] = 1  # A
    pred[16:18, 4:8, 4:8] = 1  # half of B
    pred[8:10, 4:6, 4:6] = 1  # 3 voxels from A, 7 from B
    config = EvaluationConfig(metrics=("dice", "precision", "recall"), per_component=True)
    frame = evaluate_label_maps(pred, gt, (1.0, 1.0, 1.0), config)
    per = frame[frame["component"].notna()]
    by_component = {int(c): {} for c in per["component"]}
    for c, metric, value, empty in zip(per["component"], per["metric"], per["value"], per["empty"]):
        by_component[int(c)][metric] = (value, empty)
    assert len(by_component) == 3
    expected = sorted([
        {"cc_dice": 128 / 136, "cc_precision": 64 / 72, "cc_recall": 1.0},
        {"cc_dice": 64 / 96, "cc_precision": 1.0, "cc_recall": 0.5},
        {"cc_dice": 0.0, "cc_precision": 0.0, "cc_recall": 0.0},
    ], key=lambda row: row["cc_dice"])
    got = sorted(by_component.values(), key=lambda row: row["cc_dice"][0])
    for want, have in zip(expected, got):
        for metric, value in want.items():
            assert have[metric][0] == pytest.approx(value, rel=1e-12), (metric, have)
    assert all(empty == "pred_empty:worst" for _, empty in got[0].values())
    assert all(empty == "" for row in got[1:] for _, empty in row.values())
    rows = _case_rows(frame)
    assert rows[("1", "cc_dice")][0] == pytest.approx((128 / 136 + 64 / 96 + 0.0) / 3, rel=1e-12)
    assert rows[("1", "cc_precision")][0] == pytest.approx((64 / 72 + 1.0 + 0.0) / 3, rel=1e-12)
    assert rows[("1", "cc_recall")][0] == pytest.approx((1.0 + 0.5 + 0.0) / 3, rel=1e-12)
    assert rows[("1", "cc_dice")][1] == "pred_empty:worst x1"
    counts = {m: rows[("1", m)][0] for m in ("gt_components", "gt_components_hit", "gt_components_missed",
                                              "pred_components", "pred_components_unmatched")}
    assert counts == {"gt_components": 3, "gt_components_hit": 2, "gt_components_missed": 1,
                      "pred_components": 3, "pred_components_unmatched": 1}
    # the whole-mask Dice for comparison: 2 x 96 TP / (104 predicted + 192 GT)
    assert rows[("1", "dice")][0] == pytest.approx(2 * 96 / (104 + 192), rel=1e-12)


def test_a_huge_label_value_is_evaluated_like_a_small_one():
    """A class value of 2^31 - 1 (int32 maps allow it) raised MemoryError: the per-class boxes
    kept one slot per value up to the largest."""
    gt = np.zeros((20, 20, 10), np.int32)
    gt[5:15, 5:15, 2:8] = 1
    pred = np.roll(gt, 2, axis=0)
    config = EvaluationConfig(metrics=("dice", "hd95"))
    small = evaluate_label_maps(pred, gt, (1.0, 1.0, 2.0), config, case="c")
    huge = evaluate_label_maps(pred * (2**31 - 1), gt * (2**31 - 1), (1.0, 1.0, 2.0), config, case="c")
    assert list(huge["label"]) == ["2147483647"] * 2
    np.testing.assert_allclose(huge["value"], small["value"])
    assert small.loc[small.metric == "dice", "value"].item() == pytest.approx(2 * 8 * 10 * 6 / (2 * 600))
