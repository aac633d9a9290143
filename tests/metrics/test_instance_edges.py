"""Instance metrics of component labellings (segqc.metrics.instance) on cases whose values are
computed by hand in the test."""

from __future__ import annotations

import numpy as np

from segqc.metrics.binary import MetricSettings
from segqc.metrics.instance import component_overlap, panoptic_metrics, panoptic_quality
from segqc.metrics.registry import EmptyPolicy


def test_component_pq_counts_unmatched_components_at_half_weight() -> None:
    """PQ = sum IoU / (TP + FP/2 + FN/2): one exact match, one missed and one spurious component
    give 1 / (1 + 0.5 + 0.5) = 0.5 (a full-weight FP/FN denominator would give 1/3)."""
    gt = np.zeros((12, 12, 12), bool)
    pred = np.zeros_like(gt)
    gt[1:4, 1:4, 1:4] = True  # matched exactly
    pred[1:4, 1:4, 1:4] = True
    gt[8:11, 1:4, 1:4] = True  # missed
    pred[1:4, 8:11, 8:11] = True  # spurious
    assert panoptic_quality(component_overlap(pred, gt)).value == 0.5


def test_sq_without_any_match_follows_the_pred_empty_rule() -> None:
    """Instances on both sides but none matched: SQ (a mean over no match) takes the policy's
    ``pred_empty`` rule, not its ``gt_empty`` rule; PQ and RQ are 0 by their formulas."""
    gt = np.zeros((10, 10), np.int32)
    pred = np.zeros_like(gt)
    gt[1:4, 1:4] = 1
    pred[6:9, 6:9] = 7  # no shared pixel
    settings = MetricSettings(empty=EmptyPolicy(pred_empty="best", gt_empty="nan"))
    got = {r.metric: r for r in panoptic_metrics(pred, gt, ("pq", "sq", "rq"), settings=settings)}
    assert got["sq"].value == 1.0
    assert got["sq"].empty == "no_match:best"
    assert got["pq"].value == 0.0 and got["rq"].value == 0.0
