"""The metric registry's empty-mask rules and name checks, against values stated by hand: the
``inf`` rule of a bounded metric, which situation an empty mask is in, and which names the
per-component prefix and the per-function checks accept."""

from __future__ import annotations

import math

import pytest

from segqc.metrics.registry import METRICS, EmptyPolicy, check_metric_names, empty_situation, parse_metric_names


def test_the_inf_rule_gives_a_bounded_metric_its_worst_value() -> None:
    """``inf`` is +inf only for unbounded distances; Dice (worst 0) and NSD (worst 0) get 0."""
    policy = EmptyPolicy(gt_empty="inf", pred_empty="inf")
    assert METRICS["dice"].empty_value("gt_empty", policy) == (0.0, "gt_empty:inf")
    assert METRICS["nsd"].empty_value("pred_empty", policy) == (0.0, "pred_empty:inf")
    assert METRICS["hd95"].empty_value("gt_empty", policy) == (math.inf, "gt_empty:inf")


@pytest.mark.parametrize(("n_pred", "n_gt", "situation"),
                         [(0, 0, "both_empty"), (5, 0, "gt_empty"), (0, 5, "pred_empty"), (3, 4, "")])
def test_empty_situation_names_the_empty_mask(n_pred: int, n_gt: int, situation: str) -> None:
    """An empty ground truth with a non-empty prediction is ``gt_empty``, and the other way round."""
    assert empty_situation(n_pred, n_gt) == situation


def test_the_per_component_prefix_takes_only_component_metrics() -> None:
    """``cc_dice`` is a per-component metric; ``cc_specificity`` names a known metric that has no
    per-component variant and is refused."""
    assert parse_metric_names("cc_dice, Dice") == ("cc_dice", "dice")
    with pytest.raises(ValueError, match="cc_specificity"):
        parse_metric_names("dice,cc_specificity")


def test_a_name_no_metric_has_is_refused_as_unknown_not_as_unsupported() -> None:
    """An unsupported but known metric says what the function computes; a made-up name says it is
    not a metric at all."""
    with pytest.raises(ValueError, match="does not compute hd"):
        check_metric_names(["dice", "hd"], ("dice", "iou"), "overlap")
    with pytest.raises(ValueError, match="unknown metric 'dise'"):
        check_metric_names("dise", ("dice", "iou"), "overlap")
