"""Empty-mask policy: every situation x rule x metric returns the documented value and tag.

Expected values are written down from the metric definitions (Dice-like scores: best 1, worst 0;
distances: best 0 mm, worst = the policy's worst distance), not read from the registry.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from segqc.metrics import (
    EmptyPolicy,
    MetricSettings,
    compare_components,
    compare_masks,
    component_overlap,
    instance_metrics,
    lesion_dice,
    panoptic_quality,
    soft_dice,
)

SCORES = ("dice", "iou", "precision", "recall", "nsd")
DISTANCES = ("hd", "hd95", "assd", "masd")
ALL = ("dice", "iou", "precision", "recall", "tp", "fp", "fn", "volume_pred", "volume_gt", "rvd") + DISTANCES + ("nsd",)
SITUATIONS = ("both_empty", "gt_empty", "pred_empty")
RULES = ("nan", "best", "worst")
SPACING = (0.5, 2.0, 3.0)  # 3 mm^3 per voxel


def _expected(metric: str, rule: str, worst_mm: float) -> float:
    if rule == "nan":
        return math.nan
    if metric in SCORES:
        return 1.0 if rule == "best" else 0.0
    return 0.0 if rule == "best" else worst_mm


def _masks(situation: str) -> tuple[np.ndarray, np.ndarray]:
    cube = np.zeros((9, 10, 11), dtype=bool)
    cube[2:5, 3:7, 4:9] = True  # 60 voxels
    empty = np.zeros_like(cube)
    return {"both_empty": (empty, empty), "gt_empty": (cube, empty), "pred_empty": (empty, cube)}[situation]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("mode", ["surfel", "voxel"])
@pytest.mark.parametrize("situation, rule", list(itertools.product(SITUATIONS, RULES)))
def test_every_comparison_metric_returns_the_rule_value_and_tag(situation, rule, mode):
    worst_mm = 73.5
    policy = EmptyPolicy(**{situation: rule}, worst_distance_mm=worst_mm)
    pred, gt = _masks(situation)
    results = compare_masks(pred, gt, SPACING, metrics=ALL, settings=MetricSettings(surface=mode, empty=policy))
    got = {r.metric: r for r in results}
    for metric in SCORES + DISTANCES:
        expected = _expected(metric, rule, worst_mm)
        assert _same(got[metric].value, expected), (metric, got[metric])
        assert got[metric].empty == f"{situation}:{rule}", metric


@pytest.mark.parametrize("situation", SITUATIONS)
def test_measures_are_untagged_and_exact_in_every_situation(situation):
    pred, gt = _masks(situation)
    got = {r.metric: r for r in compare_masks(pred, gt, SPACING, metrics=ALL)}
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    expected = {"tp": 0.0, "fp": float(n_pred), "fn": float(n_gt),
                "volume_pred": n_pred * 3.0 / 1000, "volume_gt": n_gt * 3.0 / 1000}
    for metric, value in expected.items():
        assert got[metric].value == pytest.approx(value, abs=1e-15), metric
        assert got[metric].empty == "", metric


def test_rvd_is_undefined_without_gt_and_minus_one_for_empty_prediction():
    got = {s: compare_masks(*_masks(s), SPACING, metrics=("rvd",))[0] for s in SITUATIONS}
    assert math.isnan(got["both_empty"].value) and got["both_empty"].empty == "both_empty:undefined"
    assert math.isnan(got["gt_empty"].value) and got["gt_empty"].empty == "gt_empty:undefined"
    assert got["pred_empty"].value == -1.0 and got["pred_empty"].empty.startswith("pred_empty")
    # and rvd ignores the empty rules: it is a measure
    best = EmptyPolicy(both_empty="best", gt_empty="best", pred_empty="best")
    again = compare_masks(*_masks("gt_empty"), SPACING, metrics=("rvd",), settings=MetricSettings(empty=best))[0]
    assert math.isnan(again.value)


def test_default_policy_is_nan_for_both_empty_and_worst_50mm_otherwise():
    policy = EmptyPolicy()
    assert (policy.both_empty.value, policy.gt_empty.value, policy.pred_empty.value) == ("nan", "worst", "worst")
    got = {r.metric: r for r in compare_masks(*_masks("pred_empty"), SPACING, metrics=("dice", "hd95", "nsd"))}
    assert got["dice"].value == 0.0 and got["dice"].empty == "pred_empty:worst"
    assert got["hd95"].value == 50.0 and got["hd95"].empty == "pred_empty:worst"
    assert got["nsd"].value == 0.0


@pytest.mark.parametrize("kwargs", [dict(worst_distance_mm=0.0), dict(worst_distance_mm=math.inf),
                                    dict(worst_distance_mm=math.nan), dict(gt_empty="terrible")])
def test_invalid_policies_raise(kwargs):
    with pytest.raises(ValueError):
        EmptyPolicy(**kwargs)


def test_non_empty_masks_are_never_tagged():
    pred, _ = _masks("gt_empty")
    _, gt = _masks("pred_empty")
    gt = np.roll(gt, 1, axis=2)
    assert all(r.empty == "" for r in compare_masks(pred, gt, SPACING, metrics=("dice", "hd", "nsd", "rvd")))


def _all_policies():
    for rules in itertools.product(RULES, repeat=3):
        yield EmptyPolicy(*rules)


def test_all_zero_inputs_never_give_a_silent_nan():
    """Whatever the policy, a NaN anywhere (binary, per-component, instance, soft) carries a tag."""
    shapes = [(6, 7), (4, 5, 6), (1, 1, 1)]
    for shape, policy in itertools.product(shapes, _all_policies()):
        spacing = (1.3,) * len(shape)
        zeros = np.zeros(shape, dtype=np.uint8)
        one = zeros.copy()
        one.flat[0] = 1
        for pred, gt in ((zeros, zeros), (one, zeros), (zeros, one)):
            for mode in ("surfel", "voxel"):
                settings = MetricSettings(surface=mode, empty=policy)
                results = list(compare_masks(pred, gt, spacing, metrics=ALL, settings=settings))
                cc = compare_components(pred, gt, spacing, metrics=("dice", "iou", "rvd", "hd95", "nsd"),
                                        settings=settings)
                results += [r for _, r in cc.per_component] + cc.means + cc.detection
                results += instance_metrics(pred, gt, connectivity=26, empty=policy)
                results.append(soft_dice(pred.astype(float), gt.astype(float), empty=policy))
                for r in results:
                    assert not (math.isnan(r.value) and r.empty == ""), (shape, policy, r)
                    assert not math.isinf(r.value), r


@pytest.mark.parametrize("situation, rule", list(itertools.product(("both_empty", "gt_empty"), RULES)))
def test_component_means_follow_the_policy_without_gt_components(situation, rule):
    pred, gt = _masks(situation)
    policy = EmptyPolicy(**{situation: rule}, worst_distance_mm=33.0)
    cc = compare_components(pred, gt, SPACING, metrics=("dice", "hd95", "nsd"), settings=MetricSettings(empty=policy))
    assert cc.per_component == []
    got = {r.metric: r for r in cc.means}
    for metric in ("dice", "hd95", "nsd"):
        assert _same(got[f"cc_{metric}"].value, _expected(metric, rule, 33.0))
        assert got[f"cc_{metric}"].empty == f"{situation}:{rule}"


@pytest.mark.parametrize("rule", RULES)
def test_component_without_prediction_follows_the_pred_empty_rule(rule):
    gt = np.zeros((20, 20, 20), dtype=bool)
    gt[2:6, 2:6, 2:6] = True
    gt[12:17, 12:17, 12:17] = True
    pred = np.zeros_like(gt)
    pred[2:6, 2:6, 2:6] = True  # first component exact, second missed
    policy = EmptyPolicy(pred_empty=rule, worst_distance_mm=40.0)
    cc = compare_components(pred, gt, (1.0, 1.0, 1.0), metrics=("dice", "hd95"), settings=MetricSettings(empty=policy))
    rows = {(k, r.metric): r for k, r in cc.per_component}
    missed = [k for k in (1, 2) if rows[(k, "dice")].empty]
    assert len(missed) == 1
    k = missed[0]
    assert _same(rows[(k, "dice")].value, _expected("dice", rule, 40.0))
    assert _same(rows[(k, "hd95")].value, _expected("hd95", rule, 40.0))
    assert rows[(k, "hd95")].empty == f"pred_empty:{rule}"
    other = 3 - k
    assert rows[(other, "dice")].value == 1.0 and rows[(other, "hd95")].value == 0.0
    means = {r.metric: r.value for r in cc.means}
    if rule == "nan":  # NaN components are left out of the mean
        assert means["cc_dice"] == 1.0
    else:
        assert means["cc_dice"] == pytest.approx((1.0 + _expected("dice", rule, 40.0)) / 2)
        assert means["cc_hd95"] == pytest.approx((0.0 + _expected("hd95", rule, 40.0)) / 2)


@pytest.mark.parametrize("situation, rule", list(itertools.product(SITUATIONS, RULES)))
def test_instance_metrics_follow_the_policy(situation, rule):
    pred, gt = _masks(situation)
    policy = EmptyPolicy(**{situation: rule})
    for r in instance_metrics(pred, gt, ("pq", "lesion_dice"), empty=policy):
        assert _same(r.value, _expected("dice", rule, 50.0)), r
        assert r.empty == f"{situation}:{rule}"


@pytest.mark.parametrize("rule", RULES)
def test_soft_dice_without_ground_truth_follows_the_policy(rule):
    gt = np.zeros((4, 4))
    pred = np.zeros((4, 4))
    pred[1, 1] = 0.8
    got = soft_dice(pred, gt, empty=EmptyPolicy(gt_empty=rule))
    assert _same(got.value, _expected("dice", rule, 50.0)) and got.empty == f"gt_empty:{rule}"
    both = soft_dice(np.zeros((4, 4)), gt, empty=EmptyPolicy(both_empty=rule))
    assert _same(both.value, _expected("dice", rule, 50.0)) and both.empty == f"both_empty:{rule}"


def test_the_old_policy_keyword_still_works_with_a_deprecation_warning():
    gt = np.zeros((4, 4), dtype=bool)
    pred = gt.copy()
    pred[1, 1] = True
    policy = EmptyPolicy(gt_empty="best")
    with pytest.warns(DeprecationWarning, match="renamed empty="):
        old = soft_dice(pred.astype(float), gt.astype(float), policy=policy)
    assert old.value == 1.0 and old.empty == "gt_empty:best"
    with pytest.warns(DeprecationWarning, match="renamed empty="):
        rows = instance_metrics(pred, gt, ("pq", "lesion_dice"), policy=policy)
    assert [(r.value, r.empty) for r in rows] == [(1.0, "gt_empty:best")] * 2
    overlap = component_overlap(pred, gt)
    for function in (panoptic_quality, lesion_dice):
        with pytest.warns(DeprecationWarning):
            assert function(overlap, policy=policy).value == 1.0
        assert function(overlap, empty=policy).value == 1.0
        with pytest.raises(TypeError, match="once"):
            function(overlap, empty=policy, policy=policy)
