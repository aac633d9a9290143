"""CC-metrics and connected components on 2D masks (PNG slices, microscopy), against scipy.ndimage
and hand-computed values.

Regression: on 2D input the default connectivity 26 means 8-connectivity, and cc3d 4.1.1 labels
*bool* 2D arrays wrongly with 8-connectivity (labels beyond n, labelled background pixels). Through
``evaluate_label_maps`` (which crops each class to its bounding box) this crashed with an
IndexError in ``_bounding_boxes`` on BU-BIL pairs, e.g. case B30.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segqc.evaluation.evaluate import EvaluationConfig, evaluate_label_maps
from segqc.io.images import read_label_map
from segqc.metrics import assign_regions, compare_components, label_components

EIGHT = np.ones((3, 3), dtype=bool)  # scipy structure of 8-connectivity
FOUR = ndimage.generate_binary_structure(2, 1)

# 5 x 3 pattern (rows = array axis 0). 8-connected components, by hand: {(0,0)} and the chain
# (1,2)-(2,2) -(2,2)/(3,1) diagonal- (3,1) -diagonals- (4,0), (4,2): 2 components of 1 and 5 pixels.
# 4-connected: {(0,0)}, {(1,2),(2,2)}, {(3,1)}, {(4,0)}, {(4,2)}: 5 components.
PATTERN = np.array(
    [[1, 0, 0],
     [0, 0, 1],
     [0, 0, 1],
     [0, 1, 0],
     [1, 0, 1]], dtype=bool)


def _by_name(results) -> dict:
    return {r.metric: r.value for r in results}


def _same_partition(labels: np.ndarray, reference: np.ndarray) -> bool:
    """Same foreground and a bijection between the label ids of the two labellings."""
    if not np.array_equal(labels > 0, reference > 0):
        return False
    fg = reference > 0
    pairs = np.unique(np.stack([labels[fg], reference[fg]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


# --------------------------------------------------------------------------------------------
# Connected components in 2D


@pytest.mark.parametrize("order", ["C", "F"])
def test_hand_labelled_2d_pattern_with_8_and_4_connectivity(order):
    mask = np.asarray(PATTERN, order=order)
    for connectivity in (26, 18, 8):
        labels, n = label_components(mask, connectivity=connectivity)
        assert n == 2
        assert sorted(np.bincount(labels.ravel())[1:].tolist()) == [1, 5]
        assert labels.max() == 2 and not labels[~PATTERN].any()
    for connectivity in (6, 4):
        labels, n = label_components(mask, connectivity=connectivity)
        assert n == 5
        assert sorted(np.bincount(labels.ravel())[1:].tolist()) == [1, 1, 1, 1, 2]
        assert not labels[~PATTERN].any()


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("connectivity, structure", [(26, EIGHT), (18, EIGHT), (8, EIGHT), (6, FOUR), (4, FOUR)])
def test_2d_components_of_random_masks_equal_scipy_label(order, connectivity, structure):
    rng = np.random.default_rng(7)
    for _ in range(60):
        shape = tuple(rng.integers(5, 70, size=2))
        noise = rng.random(shape) < rng.uniform(0.3, 0.7)
        mask = np.asarray(ndimage.binary_opening(noise) | (rng.random(shape) < 0.02), order=order)
        labels, n = label_components(mask, connectivity=connectivity)
        reference, n_ref = ndimage.label(mask, structure=structure)
        assert n == n_ref and labels.max() == n
        assert _same_partition(labels, reference)


def test_invalid_2d_connectivity_raises():
    with pytest.raises(ValueError, match="2D connectivity"):
        label_components(PATTERN, connectivity=10)


# --------------------------------------------------------------------------------------------
# The crash: per-component evaluation of a 2D pair through evaluate_label_maps


def test_evaluate_label_maps_per_component_on_generated_2d_pair_does_not_crash():
    """GT = the pattern, prediction = the pattern plus the background pixel (1, 1), which is
    8-adjacent to both GT components. Expected by hand (isotropic pixels): (1, 1) is at distance 1
    from (1, 2) (component B, 5 px) and sqrt(2) from (0, 0) (component A, 1 px), so it joins B's
    region: Dice A = 1, Dice B = 2*5/(6+5) = 10/11; one predicted component (all 7 pixels connected),
    matched."""
    gt = np.zeros((9, 7), dtype=np.uint8)
    gt[2:7, 2:5] = PATTERN
    pred = gt.copy()
    pred[3, 3] = 1
    table = evaluate_label_maps(pred, gt, (1.0, 1.0), EvaluationConfig(per_component=True, connectivity=26))
    values = dict(zip(table.loc[table["component"].isna(), "metric"], table.loc[table["component"].isna(), "value"]))
    assert values["cc_dice"] == pytest.approx((1.0 + 10 / 11) / 2, rel=1e-12)
    assert values["gt_components"] == 2 and values["gt_components_hit"] == 2
    assert values["pred_components"] == 1 and values["pred_components_unmatched"] == 0
    per_component = table[(table["metric"] == "cc_dice") & table["component"].notna()]["value"]
    assert sorted(per_component) == pytest.approx([10 / 11, 1.0], rel=1e-12)


def _voronoi_cc_dice(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, list[float]]:
    """Independent CC-Dice: scipy components (8-connectivity), each pixel's region = component of
    its nearest GT pixel by scipy's exact EDT feature transform (in mm), Dice per region."""
    gt_labels, n = ndimage.label(gt, structure=EIGHT)
    indices = ndimage.distance_transform_edt(gt_labels == 0, sampling=spacing, return_distances=False,
                                             return_indices=True)
    region = gt_labels[tuple(indices)]
    dices = []
    for k in range(1, n + 1):
        p = pred & (region == k)
        g = gt_labels == k
        dices.append(2.0 * np.count_nonzero(p & g) / (np.count_nonzero(p) + np.count_nonzero(g)))
    return float(np.mean(dices)), dices


def test_cc_dice_on_generated_2d_multi_component_case_equals_scipy_voronoi_reference():
    """Three diagonal 'cells' far apart (diagonal strokes are one component each only with
    8-connectivity), the prediction shifted and thinned, plus a false-positive speck in the
    corner; compared on an F-ordered bounding-box crop as evaluate passes it."""
    shape = (90, 80)
    rows, cols = np.indices(shape)
    gt = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    for r0, c0, length in ((5, 5, 25), (50, 10, 30), (20, 50, 20)):
        t = np.arange(length)
        gt[r0 + t, c0 + t] = True  # one-pixel diagonal stroke ...
        gt[r0 + t[::2], c0 + t[::2] + 1] = True  # ... with a pixel to its right on every other row
        pred[r0 + 1 + t[:-3], c0 + t[:-3]] = True  # shifted down by one, shortened
        pred[r0 + t, c0 + t] |= t % 3 != 0  # and part of the stroke itself
    pred[(rows - 82) ** 2 + (cols - 72) ** 2 <= 4] = True  # speck
    spacing = (0.5, 0.5)
    gt_c, pred_c = np.asfortranarray(gt[2:88, 3:78]), np.asfortranarray(pred[2:88, 3:78])

    # no predicted pixel is (nearly) equidistant from two components: the reference is unambiguous
    gt_labels, n = ndimage.label(gt_c, structure=EIGHT)
    assert n == 3
    distances = np.stack([ndimage.distance_transform_edt(gt_labels != k, sampling=spacing)
                          for k in range(1, n + 1)])[:, pred_c]
    distances.sort(axis=0)
    assert np.all(distances[1] - distances[0] > 0.5)

    expected_mean, expected = _voronoi_cc_dice(pred_c, gt_c, spacing)
    result = compare_components(pred_c, gt_c, spacing, metrics=("dice",), connectivity=26)
    assert _by_name(result.means)["cc_dice"] == pytest.approx(expected_mean, rel=1e-12)
    assert sorted(r.value for _, r in result.per_component) == pytest.approx(sorted(expected), rel=1e-12)
    assert 0.3 < min(expected) < max(expected) < 1.0  # not trivial
    detection = _by_name(result.detection)
    assert detection["gt_components"] == 3
    assert detection["pred_components"] == ndimage.label(pred_c, structure=EIGHT)[1]
    assignment = assign_regions(pred_c, gt_c, spacing, connectivity=26)
    assert assignment.pred_region.max() <= assignment.n_gt == 3


# --------------------------------------------------------------------------------------------
# Real data: BU-BIL microscopy masks (PNG, 2D)


@pytest.mark.parametrize("case, rater", [("B30", "rater_Person4_Amira.png"), ("B31", "rater_Person4_ImageJ.png")])
def test_real_bubil_pair_cc_dice_and_counts_equal_independent_computation(case, rater, shared_data):
    bubil = shared_data("bubil/BU-BIL_Dataset1")
    gt_image = read_label_map(bubil / case / "gold.png")
    pred_image = read_label_map(bubil / case / rater)
    gt, pred = gt_image.array, pred_image.array
    table = evaluate_label_maps(pred, gt, gt_image.geometry.spacing,
                                EvaluationConfig(per_component=True, connectivity=26))  # as `segqc evaluate`
    rows = table[table["component"].isna() & (table["label"] == "1")]
    values = dict(zip(rows["metric"], rows["value"]))

    g, p = gt == 1, pred == 1
    n_gt = ndimage.label(g, structure=EIGHT)[1]
    n_pred = ndimage.label(p, structure=EIGHT)[1]
    assert n_gt == 1  # one cell per image: its Voronoi region is the whole image
    dice = 2.0 * np.count_nonzero(p & g) / (np.count_nonzero(p) + np.count_nonzero(g))
    assert values["cc_dice"] == pytest.approx(dice, rel=1e-12)
    assert values["dice"] == pytest.approx(dice, rel=1e-12)
    assert 0.5 < dice < 1.0
    assert values["gt_components"] == n_gt
    assert values["pred_components"] == n_pred
    assert values["gt_components_hit"] == 1
    # with one component the region is the whole image: CC distances are the plain ones
    assert values["cc_hd95"] == pytest.approx(values["hd95"], rel=1e-12)
