"""Panoptic Quality of instance maps (segqc.metrics.panoptic) against independent references:
MONAI's ``compute_panoptic_quality``, cases (arrays and expected numbers) from panoptica's own unit
tests, brute-force overlap counting and exhaustive matching, and hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from segqc.metrics.panoptic import (
    MatchCriterion,
    PanopticScores,
    instance_overlaps,
    match_instances,
    panoptic_quality,
    panoptic_scores,
)

# -- helpers --------------------------------------------------------------------------------------


def _random_instances(rng: np.random.Generator, shape: tuple[int, ...], n: int, sizes: tuple[int, int] = (4, 12)
                      ) -> np.ndarray:
    """Boxes with ids 1..n painted in turn (later ones cover earlier ones, so some get split or vanish)."""
    labels = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        corner = [int(rng.integers(0, s - 2)) for s in shape]
        size = [int(rng.integers(*sizes)) for _ in shape]
        labels[tuple(slice(c, c + w) for c, w in zip(corner, size))] = i
    return labels


def _perturbed(rng: np.random.Generator, labels: np.ndarray, max_id: int = 1000) -> np.ndarray:
    """A shifted, noisy copy of an instance map with ids renumbered at random (non-consecutive)."""
    out = np.roll(labels, int(rng.choice([-1, 1])), axis=int(rng.integers(labels.ndim)))
    out = np.where(rng.random(labels.shape) < 0.05, 0, out)
    ids = np.unique(out)
    new = rng.choice(np.arange(1, max_id), size=ids.size, replace=False)
    new[ids == 0] = 0
    lut = np.zeros(int(out.max()) + 1, np.int64)
    lut[ids] = new
    return lut[out]


def _random_pair(seed: int, shape: tuple[int, ...] = (64, 64), n: int = 25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = _random_instances(rng, shape, n)
    return _perturbed(rng, gt), gt


def _scores_close(actual: PanopticScores, expected: dict[str, float], rel: float = 1e-9) -> None:
    for key, value in expected.items():
        got = getattr(actual, key)
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got), f"{key}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(value, rel=rel, abs=1e-12), f"{key}: expected {value}, got {got}"


# -- overlaps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 40), (16, 16, 12)])
def test_instance_overlaps_matches_a_per_instance_brute_force(shape):
    rng = np.random.default_rng(7)
    gt = _random_instances(rng, shape, 20)
    pred = _perturbed(rng, gt)
    pred[pred == pred.max()] = -5  # a negative id and a huge id force the np.unique path
    gt[gt == 3] = 10**9
    pairs, intersection, pred_sizes, gt_sizes = instance_overlaps(pred, gt)

    p_ids = [int(i) for i in np.unique(pred) if i != 0]
    g_ids = [int(i) for i in np.unique(gt) if i != 0]
    assert pred_sizes.tolist() == [[i, int(np.sum(pred == i))] for i in p_ids]
    assert gt_sizes.tolist() == [[i, int(np.sum(gt == i))] for i in g_ids]
    expected = {}
    for p in p_ids:
        for g in g_ids:
            shared = int(np.sum((pred == p) & (gt == g)))
            if shared:
                expected[(p, g)] = shared
    assert {(int(p), int(g)): int(n) for (p, g), n in zip(pairs, intersection)} == expected
    assert len(pairs) == len(expected)


def test_touching_instances_stay_apart():
    # two GT instances sharing a border (columns 3|4), predicted exactly with other ids
    gt = np.zeros((6, 8), np.int16)
    gt[1:5, 1:4] = 1
    gt[1:5, 4:7] = 2
    pred = np.zeros_like(gt)
    pred[gt == 1] = 9
    pred[gt == 2] = 5
    s = panoptic_quality(pred, gt)
    _scores_close(s, {"tp": 2, "fp": 0, "fn": 0, "pq": 1.0, "sq": 1.0, "rq": 1.0, "sq_dice": 1.0})
    m = match_instances(pred, gt)
    assert m.gt_ids.tolist() == [1, 2] and m.pred_ids.tolist() == [9, 5]

    # one predicted instance covering both: two overlapping pairs of 12 voxels, IoU 12/24 = 0.5 each
    merged = (gt > 0).astype(np.int16)
    pairs, intersection, _, gt_sizes = instance_overlaps(merged, gt)
    assert pairs.tolist() == [[1, 1], [1, 2]] and intersection.tolist() == [12, 12]
    assert gt_sizes.tolist() == [[1, 12], [2, 12]]


# -- MONAI ----------------------------------------------------------------------------------------

# MONAI 1.x ``compute_panoptic_quality`` (monai/metrics/panoptic_quality.py): IoU only. A pair matches
# when IoU > threshold (strict). For threshold >= 0.5 it keeps every such pair (unique matching); for
# threshold < 0.5 it runs linear_sum_assignment on the dense IoU matrix of *all* pairs (maximum total
# IoU over all overlapping pairs, eligible or not) and only then drops the assigned pairs with
# IoU <= threshold. Scores: RQ = TP / (TP + FP/2 + FN/2 + smooth), SQ = sum IoU / (TP + smooth),
# PQ = sum IoU / (TP + FP/2 + FN/2 + smooth), smooth = smooth_numerator (default 1e-6; 0 here).
# Below 0.5 this differs from our rule (maximum total IoU among eligible pairs only): MONAI's
# assignment can spend an instance on a sub-threshold pair. It is reproduced with our matching at
# threshold 0 (every overlapping pair eligible) followed by the same filter.


def _monai(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[list[float], dict[str, float]]:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    p, g = torch.as_tensor(pred.astype(np.int32)), torch.as_tensor(gt.astype(np.int32))
    kwargs = {"match_iou_threshold": threshold, "smooth_numerator": 0.0}
    confusion = monai_metrics.compute_panoptic_quality(p, g, output_confusion_matrix=True, **kwargs).tolist()
    scores = {name: float(monai_metrics.compute_panoptic_quality(p, g, metric_name=name, **kwargs)) for name in
              ("pq", "sq", "rq")}
    return confusion, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.5, 0.7])
@pytest.mark.parametrize("method", ["hungarian", "unique"])
def test_matches_monai_at_and_above_half(seed, threshold, method):
    pred, gt = _random_pair(seed)
    (tp, fp, fn, iou_sum), monai_scores = _monai(pred, gt, threshold)
    ours = panoptic_quality(pred, gt, threshold=threshold, inclusive=False, method=method)
    assert tp > 0 and (ours.tp, ours.fp, ours.fn) == (tp, fp, fn)
    assert ours.sq * ours.tp == pytest.approx(iou_sum, rel=1e-6)  # MONAI's IoUs are float32
    for name in ("pq", "sq", "rq"):
        assert getattr(ours, name) == pytest.approx(monai_scores[name], rel=1e-6)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.3, 0.1])
def test_matches_monai_rule_below_half(seed, threshold):
    pred, gt = _random_pair(seed)
    (tp, fp, fn, iou_sum), monai_scores = _monai(pred, gt, threshold)
    # MONAI's rule: assignment over all overlapping pairs, then the threshold (see the comment above)
    emulated = panoptic_quality(pred, gt, threshold=threshold, method="monai")
    assert tp > 0 and (emulated.tp, emulated.fp, emulated.fn) == (tp, fp, fn)
    assert emulated.sq * emulated.tp == pytest.approx(iou_sum, rel=1e-6)
    for name in ("pq", "sq", "rq"):
        assert getattr(emulated, name) == pytest.approx(monai_scores[name], rel=1e-6)
    # our own rule maximises the total IoU among eligible pairs: never below MONAI's matched total
    ours = panoptic_quality(pred, gt, threshold=threshold)
    assert ours.sq * ours.tp >= iou_sum - 1e-5


def test_monai_rule_below_half_can_differ_from_ours():
    # along a row: G1 = [0, 20), G2 = [20, 43); P2 = [0, 7), P1 = [7, 29)
    # IoU(P2, G1) = 7/20 = 0.35, IoU(P1, G1) = 13/29 ~ 0.448, IoU(P1, G2) = 9/36 = 0.25.
    # MONAI at threshold 0.3 assigns over all pairs: P1-G2 + P2-G1 (0.6) beats P1-G1 (0.448), then
    # drops P1-G2 (0.25 <= 0.3): one match of IoU 0.35. Among eligible pairs only (ours) P1-G1 wins.
    gt = np.zeros((2, 45), np.int32)
    pred = np.zeros((2, 45), np.int32)
    gt[:, 0:20] = 1
    gt[:, 20:43] = 2
    pred[:, 0:7] = 2
    pred[:, 7:29] = 1
    (tp, fp, fn, iou_sum), _ = _monai(pred, gt, 0.3)
    assert (tp, fp, fn) == (1, 1, 1) and iou_sum == pytest.approx(0.35)
    ours = match_instances(pred, gt, threshold=0.3)
    assert ours.pred_ids.tolist() == [1] and ours.gt_ids.tolist() == [1] and ours.iou.tolist() == [13 / 29]
    monai_rule = match_instances(pred, gt, threshold=0.3, method="monai")
    assert monai_rule.pred_ids.tolist() == [2] and monai_rule.gt_ids.tolist() == [1]
    assert monai_rule.iou.tolist() == [0.35]


# -- panoptica ------------------------------------------------------------------------------------

# panoptica 2.1.7 (panoptica/instance_matcher.py, metrics/metrics.py): the default matcher,
# NaiveThresholdMatching(IoU, 0.5), is greedy: overlapping pairs sorted by descending score, each
# taken when both instances are still free and score >= threshold (``strict_threshold=False`` by
# default; True gives >). MaxBipartiteMatching runs linear_sum_assignment on cost 1 - score for
# eligible pairs (1 + 1e-6 for the others) and keeps assignments of cost < 1. With no match but some
# instances panoptica reports SQ = 0 where we report NaN (no matches to average); PQ = RQ = 0 alike.
# Panoptica runs connected components on its semantic input first; every case below has one
# connected blob per id, so the instance maps are the same.


def test_panoptica_golden_instance_case():
    # panoptica unit_tests/test_golden_values.py, _instance_case / GOLDEN_INSTANCE
    ref = np.zeros((50, 50), dtype=np.uint16)
    pred = np.zeros((50, 50), dtype=np.uint16)
    ref[5:15, 5:15] = 1
    pred[5:15, 5:15] = 1
    ref[20:30, 20:30] = 2
    pred[21:30, 20:30] = 2
    ref[40:48, 5:13] = 3
    pred[40:48, 40:48] = 4
    expected = {"tp": 2, "fp": 1, "fn": 1, "rq": 0.6666666666666666, "sq": 0.95, "pq": 0.6333333333333333,
                "sq_dice": 0.9736842105263157}
    _scores_close(panoptic_quality(pred, ref, threshold=0.5, inclusive=True), expected)  # panoptica's >=
    for method in ("hungarian", "unique"):
        _scores_close(panoptic_quality(pred, ref, threshold=0.5, inclusive=False, method=method), expected)


def test_panoptica_simple_evaluation():
    # panoptica unit_tests/test_panoptic_evaluator.py, test_simple_evaluation: tp 1, fp 0, sq = pq = 0.75
    ref = np.zeros((50, 50), dtype=np.uint16)
    pred = ref.copy()
    ref[20:40, 10:20] = 1
    pred[20:35, 10:20] = 2
    _scores_close(panoptic_quality(pred, ref, inclusive=True), {"tp": 1, "fp": 0, "fn": 0, "sq": 0.75, "pq": 0.75})


def test_panoptica_autc_case_iou_one_third():
    # panoptica unit_tests/test_golden_values.py, _autc_case: one pair with IoU 1/3 (Dice 1/2, the
    # ratio of its sq_dsc and sq AUTC values, 0.175 / 0.11666...); matched at threshold 0.1, not at 0.4
    ref = np.zeros((50, 50), dtype=np.uint16)
    pred = np.zeros((50, 50), dtype=np.uint16)
    ref[10:20, 10:30] = 1
    pred[10:20, 20:40] = 1
    assert panoptic_quality(pred, ref, threshold=0.1, inclusive=True).tp == 1
    assert panoptic_quality(pred, ref, threshold=0.4, inclusive=True).tp == 0
    m = match_instances(pred, ref, threshold=0.1)
    assert m.iou.tolist() == [1 / 3] and m.dice.tolist() == [0.5]
    # 100 / 300 is the double nearest 1/3: matched at threshold 1/3 only when inclusive
    assert panoptic_quality(pred, ref, threshold=1 / 3, inclusive=True).tp == 1
    assert panoptic_quality(pred, ref, threshold=1 / 3, inclusive=False).tp == 0


def test_panoptica_no_overlap_and_empty_cases():
    # panoptica unit_tests/test_matcher_variations.py, test_no_overlap_masks (28x28): tp 0, fp 1, fn 1,
    # rq = pq = 0 (panoptica's sq 0.0 is NaN here: no match)
    pred = np.zeros((28, 28), np.int32)
    ref = pred.copy()
    pred[1:14, 1:14] = 1
    ref[15:28, 15:28] = 1
    for method in ("hungarian", "unique"):
        _scores_close(panoptic_quality(pred, ref, method=method),
                      {"tp": 0, "fp": 1, "fn": 1, "rq": 0.0, "pq": 0.0, "sq": math.nan, "sq_dice": math.nan})
    # panoptica unit_tests/test_panoptic_evaluator.py, test_pred_empty / test_ref_empty / test_both_empty
    a = np.zeros((50, 50), np.uint16)
    b = a.copy()
    a[20:40, 10:20] = 1
    b[20:35, 10:20] = 2
    empty = np.zeros_like(a)
    _scores_close(panoptic_quality(empty, a), {"tp": 0, "fp": 0, "fn": 1, "pq": 0.0, "rq": 0.0})
    _scores_close(panoptic_quality(b, empty), {"tp": 0, "fp": 1, "fn": 0, "pq": 0.0, "rq": 0.0})
    _scores_close(panoptic_quality(empty, empty), {"tp": 0, "fp": 0, "fn": 0, "pq": math.nan, "sq": math.nan})


# -- hand cases -----------------------------------------------------------------------------------


def test_iou_exactly_half_is_matched_only_when_inclusive():
    gt = np.zeros((6, 6), np.int32)
    pred = np.zeros((6, 6), np.int32)
    pred[0:4, 0:2] = 3  # 8 pixels
    gt[0:4, 0:1] = 1  # 4 pixels inside: IoU 4/8 = 0.5, Dice 8/12 = 2/3
    _scores_close(panoptic_quality(pred, gt, threshold=0.5, inclusive=True),
                  {"tp": 1, "fp": 0, "fn": 0, "sq": 0.5, "pq": 0.5, "rq": 1.0, "sq_dice": 2 / 3})
    _scores_close(panoptic_quality(pred, gt, threshold=0.5, inclusive=False),
                  {"tp": 0, "fp": 1, "fn": 1, "sq": math.nan, "pq": 0.0, "rq": 0.0})
    # the same boundary with the Dice criterion (Dice 2/3 <=> IoU 1/2)
    assert panoptic_quality(pred, gt, criterion="dice", threshold=2 / 3, inclusive=True).tp == 1
    assert panoptic_quality(pred, gt, criterion="dice", threshold=2 / 3, inclusive=False).tp == 0
    assert panoptic_quality(pred, gt, criterion="dice", threshold=2 / 3, method="unique").tp == 0


def test_unique_method_is_refused_where_an_instance_can_have_two_partners():
    # one predicted instance split in two GT halves: IoU exactly 0.5 with both
    gt = np.zeros((4, 8), np.int32)
    gt[:, :4] = 1
    gt[:, 4:] = 2
    pred = (gt > 0).astype(np.int32)
    # hungarian: one of the two, TP 1, FN 1 -> SQ 0.5, RQ 1/1.5, PQ 1/3
    _scores_close(panoptic_quality(pred, gt, threshold=0.5, inclusive=True),
                  {"tp": 1, "fp": 0, "fn": 1, "sq": 0.5, "rq": 2 / 3, "pq": 1 / 3})
    assert panoptic_quality(pred, gt, threshold=0.5, inclusive=False, method="unique").tp == 0
    refused: list[dict] = [
        {"threshold": 0.5, "inclusive": True},
        {"threshold": 0.3},
        {"criterion": "dice", "threshold": 0.6},
        {"criterion": "dice", "threshold": 2 / 3, "inclusive": True},
    ]
    for options in refused:
        with pytest.raises(ValueError, match="unique"):
            match_instances(pred, gt, method="unique", **options)
    # allowed: strictly above the bounds
    match_instances(pred, gt, method="unique", threshold=0.5 + 1e-12, inclusive=True)
    match_instances(pred, gt, method="unique", criterion="dice", threshold=0.7, inclusive=True)


def test_hungarian_beats_greedy_at_a_low_threshold():
    # along a row: G1 = [0, 10), G2 = [10, 14); P2 = [0, 4), P1 = [4, 14)
    # IoU(P1, G1) = 6/14 = 3/7, IoU(P1, G2) = 4/10, IoU(P2, G1) = 4/10.
    # Greedy best-first takes P1-G1 (3/7) and strands P2 and G2: TP 1, PQ = (3/7) / 2 = 3/14.
    # The maximum-total matching is P1-G2 + P2-G1 (0.8 > 3/7): TP 2, SQ = PQ = 0.4.
    gt = np.zeros((3, 16), np.int32)
    pred = np.zeros((3, 16), np.int32)
    gt[:, 0:10] = 1
    gt[:, 10:14] = 2
    pred[:, 0:4] = 2
    pred[:, 4:14] = 1
    for threshold in (0.1, 0.3):
        m = match_instances(pred, gt, threshold=threshold)
        assert m.gt_ids.tolist() == [1, 2] and m.pred_ids.tolist() == [2, 1]
        assert m.iou == pytest.approx([0.4, 0.4])
        _scores_close(panoptic_scores(m), {"tp": 2, "fp": 0, "fn": 0, "sq": 0.4, "pq": 0.4, "rq": 1.0})
    # above 0.4 only P1-G1 is eligible
    _scores_close(panoptic_quality(pred, gt, threshold=0.41), {"tp": 1, "fp": 1, "fn": 1, "sq": 3 / 7, "pq": 3 / 14})


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("threshold", [0.05, 0.2])
def test_hungarian_total_equals_exhaustive_search(seed, threshold):
    # small crowded maps, where eligible pairs share instances; every one-to-one subset is tried
    rng = np.random.default_rng(100 + seed)
    gt = _random_instances(rng, (14, 14), 6, (2, 8))
    pred = _perturbed(rng, _random_instances(rng, (14, 14), 6, (2, 8)))
    pairs, inter, p_sizes, g_sizes = instance_overlaps(pred, gt)
    p_size, g_size = dict(p_sizes.tolist()), dict(g_sizes.tolist())
    candidates = []
    for (p, g), n in zip(pairs.tolist(), inter.tolist()):
        iou = n / (p_size[p] + g_size[g] - n)
        if iou > threshold:
            candidates.append((p, g, iou))
    best = 0.0
    for k in range(1, len(candidates) + 1):
        for subset in itertools.combinations(candidates, k):
            if len({c[0] for c in subset}) == k and len({c[1] for c in subset}) == k:
                best = max(best, sum(c[2] for c in subset))
    m = match_instances(pred, gt, threshold=threshold)
    assert float(m.iou.sum()) == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert len(set(m.pred_ids.tolist())) == m.pred_ids.size and len(set(m.gt_ids.tolist())) == m.gt_ids.size
    assert np.all(m.iou > threshold)


def test_dice_criterion():
    gt = np.zeros((12, 12), np.int32)
    pred = np.zeros((12, 12), np.int32)
    gt[1:6, 1:6] = 4  # 25 pixels
    pred[1:6, 1:3] = 1  # 10 pixels inside: IoU 0.4, Dice 20/35 = 4/7
    gt[8:10, 8:10] = 2  # exact match
    pred[8:10, 8:10] = 2
    _scores_close(panoptic_quality(pred, gt, criterion="iou", threshold=0.5),
                  {"tp": 1, "fp": 1, "fn": 1, "sq": 1.0, "rq": 0.5, "pq": 0.5, "sq_dice": 1.0})
    # Dice 4/7 > 0.5: matched; SQ stays the mean IoU, sq_dice the mean Dice
    _scores_close(panoptic_quality(pred, gt, criterion="dice", threshold=0.5),
                  {"tp": 2, "fp": 0, "fn": 0, "sq": 0.7, "rq": 1.0, "pq": 0.7, "sq_dice": (1 + 4 / 7) / 2})
    assert panoptic_quality(pred, gt, criterion="dice", threshold=4 / 7).tp == 1
    assert panoptic_quality(pred, gt, criterion="dice", threshold=4 / 7, inclusive=True).tp == 2


def test_3d_case():
    shape = (20, 20, 20)
    gt = np.zeros(shape, np.uint32)
    pred = np.zeros(shape, np.uint32)
    gt[2:6, 2:6, 2:6] = 40000  # 64 voxels
    pred[2:6, 2:6, 3:7] = 7  # shifted by one: 48 shared, union 80 -> IoU 0.6, Dice 96/128
    gt[10:15, 10:15, 10:15] = 3  # 125 voxels
    pred[10:15, 10:15, 10:14] = 8  # 100 inside -> IoU 0.8, Dice 200/225
    pred[17:19, 2:4, 17:19] = 9  # false positive
    expected = {"tp": 2, "fp": 1, "fn": 0, "sq": 0.7, "rq": 0.8, "pq": 0.56, "sq_dice": (0.75 + 200 / 225) / 2}
    for method in ("hungarian", "unique"):
        _scores_close(panoptic_quality(pred, gt, method=method), expected)
    m = match_instances(pred, gt)
    assert m.gt_ids.tolist() == [3, 40000] and m.pred_ids.tolist() == [8, 7]
    assert m.iou.tolist() == pytest.approx([0.8, 0.6]) and (m.n_pred, m.n_gt) == (3, 2)


def test_empty_inputs():
    empty = np.zeros((8, 8, 4), np.int32)
    _scores_close(panoptic_quality(empty, empty),
                  {"tp": 0, "fp": 0, "fn": 0, "pq": math.nan, "sq": math.nan, "rq": math.nan, "sq_dice": math.nan})
    gt = empty.copy()
    gt[1:3, 1:3, 1:3] = 1
    gt[5:7, 5:7, 1:3] = 2
    _scores_close(panoptic_quality(empty, gt), {"tp": 0, "fp": 0, "fn": 2, "pq": 0.0, "rq": 0.0, "sq": math.nan})
    _scores_close(panoptic_quality(gt, empty), {"tp": 0, "fp": 2, "fn": 0, "pq": 0.0, "rq": 0.0, "sq": math.nan})
    pairs, intersection, pred_sizes, gt_sizes = instance_overlaps(empty, empty)
    assert pairs.shape == (0, 2) and intersection.shape == (0,) and pred_sizes.shape == gt_sizes.shape == (0, 2)
    m = match_instances(empty, empty)
    assert (m.n_pred, m.n_gt, m.pred_ids.size) == (0, 0, 0)


@pytest.mark.parametrize("seed", range(5))
def test_unique_equals_hungarian_above_half(seed):
    pred, gt = _random_pair(seed, (24, 24, 16), 40)
    cases: list[tuple[MatchCriterion, float]] = [("iou", 0.5), ("iou", 0.65), ("dice", 2 / 3), ("dice", 0.8)]
    for criterion, threshold in cases:
        a = match_instances(pred, gt, criterion=criterion, threshold=threshold, method="hungarian")
        b = match_instances(pred, gt, criterion=criterion, threshold=threshold, method="unique")
        assert a.pred_ids.tolist() == b.pred_ids.tolist() and a.gt_ids.tolist() == b.gt_ids.tolist()
        assert a.pred_ids.size > 0


def test_input_and_option_errors():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="shape"):
        panoptic_quality(a, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="integer"):
        panoptic_quality(a.astype(float), a)
    with pytest.raises(ValueError, match="2D or 3D"):
        panoptic_quality(np.zeros(4, np.int32), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="threshold"):
        panoptic_quality(a, a, threshold=1.5)
    with pytest.raises(ValueError, match="criterion"):
        panoptic_quality(a, a, criterion="f1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        panoptic_quality(a, a, method="greedy")  # type: ignore[arg-type]
    # a boolean map is one instance
    b = np.zeros((4, 4), bool)
    b[:2] = True
    assert panoptic_quality(b, b.astype(np.uint8) * 5).tp == 1


def test_many_instances_in_3d():
    # 15 x 15 x 14 = 3150 cubes of 4^3 voxels; the prediction is the GT shifted by one voxel along x, so
    # at threshold 0.1 each predicted cube is eligible with its own cube (IoU 48/80 = 0.6; the last
    # layer, cut by the border: 48/64 = 0.75) and with the next one along x (16/112 = 1/7): chains of
    # 15 instances that need the assignment. Expected: every cube with its own, SQ = 0.61.
    cells = np.arange(1, 15 * 15 * 14 + 1).reshape(15, 15, 14)
    gt = np.kron(cells, np.ones((4, 4, 4), np.int64)).astype(np.int32)
    pred = np.zeros_like(gt)
    pred[1:] = gt[:-1] * 3
    m = match_instances(pred, gt, threshold=0.1)
    assert (m.n_pred, m.n_gt) == (3150, 3150)
    assert m.tp == 3150 and np.array_equal(m.pred_ids, 3 * m.gt_ids)
    s = panoptic_scores(m)
    assert s.sq == pytest.approx((2940 * 0.6 + 210 * 0.75) / 3150) and s.rq == 1.0
