"""Parity with MetricsReloaded (github.com/Project-MONAI/MetricsReloaded, not on PyPI, not installed).

Read: ``MetricsReloaded/metrics/pairwise_measures.py`` (``BinaryPairwiseMeasures``) as stored at
commits 00219d05d09e and 5e7bd851783a, ``MetricsReloaded/utility/utils.py`` (``MorphologyOps``) at
076e2fc80a17, and the unit tests ``test/test_metrics/test_pairwise_measures.py`` at bfec35a7feca
(and the older 09d63adfdd77) and ``test/test_metrics/test_pairwise_measures_neuropoly.py`` at
3dc77ca6d89d. Every case, array and expected number below is transcribed from those tests (named in
a comment) and checked both within MetricsReloaded's own tolerance and against the exact value
worked out by hand from its definition.

Definitions compared (MetricsReloaded name -> segqc metric):

* Border: ``MorphologyOps.border_map`` = mask minus ``ndimage.binary_erosion(mask)`` with scipy's
  default (face-connected, cross) structuring element and ``border_value=0``, i.e. the mask voxels
  with a 6-neighbour (4 in 2D) outside, the image edge counting as outside. That is segqc's
  ``surface="voxel"``, used for every distance metric here.
* Distances: ``ndimage.distance_transform_edt(1 - border, sampling=pixdim)`` read at the other
  mask's border voxels: exact Euclidean distances in mm between border voxel centres.
  ``measured_hausdorff_distance`` -> ``hd``; ``measured_hausdorff_distance_perc`` (``hd_perc``,
  default 95) = max of the two DIRECTED ``np.percentile`` (linear) -> ``hd95`` (not the pooled
  ``hd95_pooled``); ``measured_average_distance`` (ASSD) = sum of both directed distance sums over
  the total number of border voxels -> ``assd`` (pooled); ``measured_masd`` = mean of the two
  directed means -> ``masd``; ``normalised_surface_distance`` (``dict_args["nsd"]``, default 1) =
  border voxels of both masks within ``<= tau`` of the other border over all border voxels ->
  ``nsd`` (pooled, NOT the mean of the two directed fractions ``nsd_mean``).
* Counts: ``specificity``, ``negative_predictive_values`` (npv), ``accuracy``,
  ``balanced_accuracy`` (mean of sensitivity and specificity), ``matthews_correlation_coefficient``
  (binary formula), ``cohens_kappa`` ((p_o - p_e)/(1 - p_e), p_e summed over the values present in
  the reference, which equals the two-class sum for binary masks), ``fbeta`` (``dict_args
  ["beta"]``), ``intersection_over_union``, ``dsc``, ``sensitivity``/``recall``,
  ``positive_predictive_values``, ``absolute_volume_difference_ratio``/``vol_diff``
  (|Vref - Vpred|/Vref -> ``abs_rvd``), ``rel_vol_error`` (100 (Vpred - Vref)/Vref -> 100 ``rvd``),
  ``youden_index`` and ``positive_likelihood_ratio`` (checked as recall + specificity - 1 and
  recall/(1 - specificity) of segqc's values). Not in segqc: ``fppi``, ``net_benefit_treated``,
  ``normalised_expected_cost``, the multi-class measures, lesion-wise measures.
* Shape: ``boundary_iou`` (``boundary_dist``) and ``centreline_dsc`` (the expected values of the
  newer tests; the older cases live in ``tests/metrics/test_shape.py``).

Empty masks (MetricsReloaded's conventions, reproduced with an :class:`EmptyPolicy` where segqc
allows it): the distances are NaN when either mask is empty (newest tests; 0 for two empty masks in
the older ``test_distance_empty``), and ``worse_dist`` (the image diagonal in mm) is provided for
aggregation; NSD, boundary IoU and clDice are NaN for two empty masks; sensitivity is NaN for an
empty reference; specificity is NaN for an all-positive reference; fbeta is NaN for two empty masks
(newest test; 1 in older versions); ``dsc`` is 1 for two empty masks; for one empty mask dsc,
fbeta and NSD are 0 and ``vol_diff`` is 1 (empty prediction).

Disagreements (``xfail(strict=True)``): ``negative_predictive_values`` is 0, not undefined, when the
prediction has no negatives but the reference has (segqc: NaN, "undefined"); ``vol_diff`` is
``inf`` for an empty reference with a non-empty prediction (segqc ``abs_rvd``: NaN, "undefined").
With ``tau`` equal to a one-voxel step of a spacing that is not a binary fraction (1.2 mm) the NSD
must not depend on the objects' position (tested).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from segqc.metrics.binary import MetricSettings, compare_masks
from segqc.metrics.registry import EmptyPolicy
from segqc.metrics.shape import boundary_iou
from segqc.metrics.surface import extract_surface

VOXEL = MetricSettings(surface="voxel")
SQRT2, SQRT5 = math.sqrt(2.0), math.sqrt(5.0)


def _values(pred, gt, metrics, settings=VOXEL, spacing=None) -> dict[str, float]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    spacing = (1.0,) * gt.ndim if spacing is None else spacing
    return {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=metrics, settings=settings)}


def _close(value: float, expected: float, atol: float) -> bool:
    return abs(value - expected) <= atol


# --------------------------------------------------------------------------------------------
# Data of test_pairwise_measures.py (module level there)

# Figure 10 for distance metrics: 5x5 reference square, prediction = square plus a 9-pixel cross.
P_REF = np.zeros([11, 11])
P_REF[3:8, 3:8] = 1
P_PRED = np.zeros([11, 11])
P_PRED[3:8, 3:8] = 1
P_PRED[5, 1:10] = 1
P_PRED[1:10, 5] = 1

# SN 2.10: 4x4 reference; 2x2 prediction inside it (pred210_1); 6x6 prediction around it (pred210_2).
REF210 = np.zeros([14, 14])
REF210[5:9, 5:9] = 1
PRED210_1 = np.zeros([14, 14])
PRED210_1[6:8, 6:8] = 1
PRED210_2 = np.zeros([14, 14])
PRED210_2[4:10, 4:10] = 1

# Figure 5c: a 3x3 square plus an isolated annotation-error pixel; the prediction is the square.
REF5C = np.zeros([14, 14])
REF5C[1, 1] = 1
REF5C[9:12, 9:12] = 1
PRED5C = np.zeros([14, 14])
PRED5C[9:12, 9:12] = 1

# SN 2.9 (1D vectors)
PRED29_1 = np.concatenate([np.ones([45]), np.zeros([5]), np.ones([10]), np.zeros([40])])
REF29_1 = np.concatenate([np.ones([50]), np.zeros([50])])
PRED29_2 = np.concatenate([np.ones([81]), np.zeros([9]), np.ones([2]), np.zeros([8])])
REF29_2 = np.concatenate([np.ones([90]), np.zeros([10])])

# SN 2.17
PRED217_1 = np.concatenate([np.ones([6]), np.zeros([94])])
PRED217_2 = np.zeros([100])
REF217 = np.concatenate([np.ones([3]), np.zeros([97])])

# Figure 38
F38_PRED = np.concatenate([np.ones([1499]), np.zeros([501])])
F38_REF = np.concatenate([np.ones([1999]), np.zeros([1])])

# Figure 27 a
F27_REF1 = np.concatenate([np.ones([70]), np.zeros([1])])
F27_PRED1 = np.concatenate([np.ones([40]), np.zeros([30]), np.ones([1])])

# SN 2.11 (test_accuracy)
REF211_1 = np.concatenate([np.ones([30]), np.zeros([75])])
PRED211_1 = np.ones([105])
REF211_2 = np.concatenate([np.ones([35]), np.zeros([70])])
PRED211_2 = np.concatenate([np.ones([20]), np.zeros([15]), np.ones([60]), np.zeros([10])])

# Small structures (test_fbeta, older test file)
P_LARGE_REF = np.zeros((11, 11))
P_LARGE_REF[2:5, 2:9] = 1
P_LARGE_REF[5:9, 2:6] = 1
P_LARGE_PRED1 = P_LARGE_REF.copy()
P_LARGE_PRED1[8, 2] = 0

# SN 2.12 (boundary IoU)
REF212 = np.zeros([22, 22])
REF212[2:21, 2:21] = 1
PRED212 = np.zeros([22, 22])
PRED212[3:21, 2:21] = 1


def _ref214() -> np.ndarray:
    ref = np.zeros([24, 24])
    for rows, cols in [((1, 10), (7, 12)), ((10, 12), (3, 19)), ((12, 15), (3, 5)), ((12, 15), (15, 19)),
                       ((14, 20), (15, 17)), ((14, 15), (1, 5)), ((14, 17), (2, 3)), ((14, 19), (4, 5)),
                       ((17, 18), (4, 8)), ((14, 15), (15, 24)), ((12, 15), (22, 23)), ((14, 17), (21, 22)),
                       ((17, 20), (5, 6)), ((17, 22), (12, 13)), ((19, 20), (12, 17)), ((18, 19), (15, 20))]:
        ref[rows[0]:rows[1], cols[0]:cols[1]] = 1
    ref[17, 19] = 1
    return ref


# Figure SN 2.14 (clDice): a branching vessel tree, a truncated copy and a thinned copy.
REF214 = _ref214()
PRED214_1 = np.zeros([24, 24])
PRED214_1[1:10, 7:12] = 1
PRED214_1[10:12, 3:15] = 1
PRED214_2 = REF214.copy()
for _rows, _cols in [((10, 14), (3, 4)), ((10, 11), (3, 9)), ((10, 11), (10, 19)), ((1, 11), (7, 9)),
                     ((1, 11), (10, 12)), ((10, 14), (18, 19)), ((12, 14), (15, 17)), ((14, 19), (15, 16))]:
    PRED214_2[_rows[0]:_rows[1], _cols[0]:_cols[1]] = 0


# --------------------------------------------------------------------------------------------
# The border and the distances: segqc's voxel surface is MetricsReloaded's border map


def _mr_border(mask: np.ndarray) -> np.ndarray:
    """MorphologyOps.border_map: the mask minus its binary erosion (scipy defaults)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, level: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > level * field.std()


@pytest.mark.parametrize("seed, shape", [(0, (30, 34)), (1, (18, 20, 16)), (2, (12, 40))])
def test_border_map_is_the_voxel_surface(seed, shape):
    # random blobs that touch the image edge: the edge counts as outside in both
    mask = _blob(np.random.default_rng(seed), shape, 2.0, 0.0)
    assert mask.any() and mask[0].any()
    surface = extract_surface(mask, (1.0,) * mask.ndim, mode="voxel")
    ours = {tuple(c) for c in surface.coordinates().astype(int).tolist()}
    assert ours == {tuple(c) for c in np.argwhere(_mr_border(mask)).tolist()}


def _mr_distances(pred, ref, pixdim, tau=1.0, perc=95.0) -> dict[str, float]:
    """BinaryPairwiseMeasures.border_distance / measured_distance / normalised_surface_distance,
    written from their definitions: distance maps to each border, read at the other border."""
    bp, br = _mr_border(pred), _mr_border(ref)
    to_ref = ndimage.distance_transform_edt(~br, sampling=pixdim)[bp]  # pred border -> ref border
    to_pred = ndimage.distance_transform_edt(~bp, sampling=pixdim)[br]  # ref border -> pred border
    both = np.concatenate([to_ref, to_pred])
    return {
        "hd": float(both.max()),
        "hd95": float(max(np.percentile(to_ref, perc), np.percentile(to_pred, perc))),
        "assd": float(both.mean()),
        "masd": float(0.5 * (to_ref.mean() + to_pred.mean())),
        "nsd": float(np.count_nonzero(both <= tau) / both.size),
    }


@pytest.mark.parametrize("seed, shape, pixdim", [(3, (40, 36), (0.7, 1.3)), (4, (20, 22, 18), (2.5, 0.8, 1.1)),
                                                 (5, (24, 24, 12), (1.0, 1.0, 3.0))])
def test_distances_follow_the_border_distance_maps(seed, shape, pixdim):
    rng = np.random.default_rng(seed)
    ref = _blob(rng, shape, 2.0, 0.4)
    pred = ref ^ _blob(rng, shape, 1.0, 1.2)
    tau = 1.5
    expected = _mr_distances(pred, ref, pixdim, tau=tau)
    settings = MetricSettings(surface="voxel", tolerance_mm=tau)
    got = _values(pred, ref, tuple(expected), settings, spacing=pixdim)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


# --------------------------------------------------------------------------------------------
# Distance cases transcribed from test_pairwise_measures.py


def test_figure10_assd_masd_nsd():
    # test_assd (0.44, atol 0.01), test_masd (0.425, atol 0.001), test_nsd (nsd=1: 0.89, atol 0.01),
    # test_nsd2 (nsd=2: 1.0, atol 0.01), test_intersection_over_union (0.76), test_dsc_fbeta (0.862;
    # its dict_args {"fbeta": 2} is not the "beta" key, so beta stays 1).
    # By hand: ref border = 16 (ring of the 5x5 square). The cross makes the 4 mid-edge pixels of the
    # square interior to pred; pred border = 12 ring pixels + 2 per arm (8) = 20.
    # ref -> pred: 12 x 0 and the 4 mid-edge pixels at 1 (their sideways neighbours) -> sum 4.
    # pred -> ref: 12 x 0; per arm 1 and 2 -> 4 x 1 + 4 x 2 = 12.
    # ASSD = (4 + 12)/(16 + 20) = 4/9; MASD = (4/16 + 12/20)/2 = 0.425; NSD(1) = (16 + 16)/36 = 8/9
    # (the mean of the directed fractions would be (1 + 16/20)/2 = 0.9); NSD(2) = 1.
    # dice = 2*25/(25 + 33) = 25/29, iou = 25/33.
    got = _values(P_PRED, P_REF, ("assd", "masd", "nsd", "nsd_mean", "iou", "dice", "fbeta"))
    assert _close(got["assd"], 0.44, 0.01) and got["assd"] == pytest.approx(4 / 9, rel=1e-12)
    assert _close(got["masd"], 0.425, 0.001) and got["masd"] == pytest.approx(0.425, rel=1e-12)
    assert _close(got["nsd"], 0.89, 0.01) and got["nsd"] == pytest.approx(8 / 9, rel=1e-12)
    assert got["nsd_mean"] == pytest.approx(0.9, rel=1e-12)
    assert _close(got["iou"], 0.76, 0.01) and got["iou"] == pytest.approx(25 / 33, rel=1e-12)
    for name in ("dice", "fbeta"):
        assert _close(got[name], 0.862, 0.001) and got[name] == pytest.approx(25 / 29, rel=1e-12)
    (nsd2,) = _values(P_PRED, P_REF, ("nsd",), MetricSettings(surface="voxel", tolerance_mm=2.0)).values()
    assert _close(nsd2, 1.0, 0.01) and nsd2 == 1.0


@pytest.mark.parametrize(
    "pred, hd, masd, assd, nsd, exact",
    [
        # pred210_1 (2x2 inside the 4x4): ref border 12 (4 corners at sqrt2 from pred, 8 edge pixels
        # at 1), pred border 4 (all at 1 from ref). HD sqrt2; ASSD (4 sqrt2 + 8 + 4)/16 = (3 + sqrt2)/4;
        # MASD ((8 + 4 sqrt2)/12 + 1)/2; NSD (8 + 4)/16 = 0.75 (directed mean would be 5/6).
        (PRED210_1, 1.41, 1.07, 1.10, 0.75,
         (SQRT2, ((8 + 4 * SQRT2) / 12 + 1) / 2, (3 + SQRT2) / 4, 0.75)),
        # pred210_2 (6x6 around the 4x4): ref border 12, all at 1; pred border 20: 4 corners at sqrt2,
        # 16 at 1. HD sqrt2; ASSD (12 + 16 + 4 sqrt2)/32 = (7 + sqrt2)/8; MASD (1 + (16 + 4 sqrt2)/20)/2;
        # NSD (12 + 16)/32 = 0.875.
        (PRED210_2, 1.41, 1.04, 1.05, 0.875,
         (SQRT2, (1 + (16 + 4 * SQRT2) / 20) / 2, (7 + SQRT2) / 8, 0.875)),
    ],
)
def test_sn210_hausdorff_masd_assd_nsd(pred, hd, masd, assd, nsd, exact):
    # test_hausdorff_distances_s210, test_masd_s210, test_assd_s210, test_nsd_s210 (atol 0.01)
    got = _values(pred, REF210, ("hd", "masd", "assd", "nsd"))
    for name, expected, value in zip(("hd", "masd", "assd", "nsd"), (hd, masd, assd, nsd), exact):
        assert _close(got[name], expected, 0.01), name
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_figure5c_hausdorff_and_percentile():
    # test_hausdorff_distance_5c / test_hd (hd_perc 95): HD 11.31 and HD95 6.79 (atol 0.01).
    # By hand: ref border = the isolated pixel + the 8-pixel ring; pred border = the same ring.
    # ref -> pred: 8 x 0 and (1,1) -> (9,9) = 8 sqrt2 = 11.3137; pred -> ref: 8 x 0.
    # hd_perc = max of the directed np.percentile: ref -> pred at position 0.95 * 8 = 7.6 between 0 and
    # 8 sqrt2 -> 0.6 * 8 sqrt2 = 6.7882 (pred -> ref 0). Pooled (17 values, position 15.2) would be
    # 0.2 * 8 sqrt2 = 2.2627: MetricsReloaded's percentile HD is segqc's hd95, not hd95_pooled.
    got = _values(PRED5C, REF5C, ("hd", "hd95", "hd95_pooled", "hd95_gt_to_pred"))
    assert _close(got["hd"], 11.31, 0.01) and got["hd"] == pytest.approx(8 * SQRT2, rel=1e-12)
    assert _close(got["hd95"], 6.79, 0.01) and got["hd95"] == pytest.approx(0.6 * 8 * SQRT2, rel=1e-12)
    assert got["hd95_gt_to_pred"] == got["hd95"]
    assert got["hd95_pooled"] == pytest.approx(0.2 * 8 * SQRT2, rel=1e-12)


def test_anisotropic_pixdim_by_hand():
    # Not in MetricsReloaded's tests: SN 2.10's pred210_2 with pixdim (1, 2) (rows 1 mm, columns
    # 2 mm), values from border_distance's definition. ref border 12: top/bottom-row pixels (8, corners
    # included) at 1 (the pred row above/below), left/right-column non-corner pixels (4) at 2 (the pred
    # column beside). pred border 20: top/bottom non-corner (8) at 1, left/right non-corner (8) at 2,
    # corners (4) at sqrt(1 + 4) = sqrt5 from the ref corner.
    # HD sqrt5; hd_perc 95: ref -> pred [1 x 8, 2 x 4] -> 2, pred -> ref [1 x 8, 2 x 8, sqrt5 x 4] at
    # position 18.05 -> sqrt5; hd_perc 50: ref -> pred position 5.5 -> 1, pred -> ref position 9.5 -> 2.
    # ASSD (8 + 8 + 8 + 16 + 4 sqrt5)/32 = (10 + sqrt5)/8; MASD (16/12 + (24 + 4 sqrt5)/20)/2;
    # NSD(1) (8 + 8)/32 = 0.5; NSD(2) (12 + 16)/32 = 0.875.
    pixdim = (1.0, 2.0)
    got = _values(PRED210_2, REF210, ("hd", "hd95", "assd", "masd", "nsd"), spacing=pixdim)
    assert got["hd"] == pytest.approx(SQRT5, rel=1e-12)
    assert got["hd95"] == pytest.approx(SQRT5, rel=1e-12)
    assert got["assd"] == pytest.approx((10 + SQRT5) / 8, rel=1e-12)
    assert got["masd"] == pytest.approx((16 / 12 + (24 + 4 * SQRT5) / 20) / 2, rel=1e-12)
    assert got["nsd"] == pytest.approx(0.5, rel=1e-12)
    median = _values(PRED210_2, REF210, ("hd95",), MetricSettings(surface="voxel", percentile=50), pixdim)
    assert median["hd95"] == pytest.approx(2.0, rel=1e-12)
    nsd2 = _values(PRED210_2, REF210, ("nsd",), MetricSettings(surface="voxel", tolerance_mm=2.0), pixdim)
    assert nsd2["nsd"] == pytest.approx(0.875, rel=1e-12)


@pytest.mark.parametrize(
    "pred_box, ref_box, dsc, nsd, vol_diff",
    [
        # test_non_empty_ref_and_pred: ref[4:5, 3:6] (1x3x10 = 30 voxels), pred[4:8, 2:5] (4x3x10 =
        # 120), overlap [4, 3:5] (20): dsc 40/150, vol_diff |30 - 120|/30 = 3, rel_vol_error 300;
        # nsd: ref border 30 (one voxel thick), pred border 120 - 16 = 104; within 1 voxel: all 30 ref
        # voxels, pred's row 4 (30) and, in row 5, column 4 (10) and column 3 at z = 0, 9 (2) ->
        # 72/134 = 36/67 = 0.5373134328358209.
        (((4, 8), (2, 5)), ((4, 5), (3, 6)), 0.26666666666666666, 0.5373134328358209, 3.0),
        # test_non_empty_ref_and_pred_multi_class, label 1: ref[4, 6:10] (40), pred[4:8, 5:8] (120),
        # overlap [4, 6:8] (20): dsc 40/160, vol_diff 2, nsd 0.5.
        (((4, 8), (5, 8)), ((4, 5), (6, 10)), 0.25, 0.5, 2.0),
    ],
)
def test_neuropoly_3d_cases(pred_box, ref_box, dsc, nsd, vol_diff):
    # test_pairwise_measures_neuropoly.py (compute_metrics_reloaded: default dict_args, unit pixdim;
    # assertAlmostEqual, 7 places)
    def box(rows_cols):
        mask = np.zeros((10, 10, 10))
        (r0, r1), (c0, c1) = rows_cols
        mask[r0:r1, c0:c1] = 1
        return mask

    got = _values(box(pred_box), box(ref_box), ("dice", "fbeta", "nsd", "abs_rvd", "rvd"))
    assert got["dice"] == pytest.approx(dsc, abs=1e-7)
    assert got["fbeta"] == pytest.approx(dsc, abs=1e-7)
    assert got["nsd"] == pytest.approx(nsd, abs=1e-7)
    assert got["abs_rvd"] == pytest.approx(vol_diff, abs=1e-7)
    assert 100 * got["rvd"] == pytest.approx(100 * vol_diff, abs=1e-7)  # rel_vol_error, pred larger


# --------------------------------------------------------------------------------------------
# Confusion-matrix and overlap metrics


def _youden(r):
    return r["recall"] + r["specificity"] - 1


def _lr_plus(r):
    return r["recall"] / (1 - r["specificity"])


# (MetricsReloaded test, pred, ref, segqc metric or derived function, expected, atol, exact value by hand)
COUNT_CASES = [
    # SN 2.9 #1: TP 45, FN 5, FP 10, TN 40. SN 2.9 #2: TP 81, FN 9, FP 2, TN 8.
    ("test_matthews_correlation_coefficient_29", PRED29_1, REF29_1, "mcc", 0.70, 0.01,
     (45 * 40 - 10 * 5) / math.sqrt(55 * 50 * 50 * 45)),
    ("test_matthews_correlation_coefficient_29", PRED29_2, REF29_2, "mcc", 0.56, 0.02,
     (81 * 8 - 2 * 9) / math.sqrt(83 * 90 * 10 * 17)),
    ("test_negative_predictive_value", PRED29_1, REF29_1, "npv", 0.889, 0.001, 40 / 45),
    ("test_negative_predictive_value", PRED29_2, REF29_2, "npv", 0.47, 0.01, 8 / 17),
    ("test_positive_predictive_value", PRED29_1, REF29_1, "precision", 0.82, 0.01, 45 / 55),
    ("test_positive_predictive_value", PRED29_2, REF29_2, "precision", 0.98, 0.01, 81 / 83),
    ("test_balanced_accuracy2", PRED29_1, REF29_1, "balanced_accuracy", 0.85, 0.01, (0.9 + 0.8) / 2),
    ("test_balanced_accuracy2", PRED29_2, REF29_2, "balanced_accuracy", 0.85, 0.01, (0.9 + 0.8) / 2),
    # kappa: p_o = 0.85, p_e = (55*50 + 45*50)/100^2 = 0.5; p_o = 0.89, p_e = (83*90 + 17*10)/100^2 = 0.764
    ("test_cohenskappa", PRED29_1, REF29_1, "kappa", 0.70, 0.01, (0.85 - 0.5) / (1 - 0.5)),
    ("test_cohenskappa", PRED29_2, REF29_2, "kappa", 0.53, 0.01, (0.89 - 0.764) / (1 - 0.764)),
    ("test_fbeta", PRED29_1, REF29_1, "fbeta", 0.86, 0.01, 90 / 105),
    ("test_fbeta", PRED29_2, REF29_2, "fbeta", 0.94, 0.01, 162 / 173),
    ("test_youden_index2", PRED29_1, REF29_1, _youden, 0.70, 0.01, 0.9 + 0.8 - 1),
    ("test_youden_index2", PRED29_2, REF29_2, _youden, 0.70, 0.01, 0.9 + 0.8 - 1),
    ("test_positive_likelihood_ratio", PRED29_1, REF29_1, _lr_plus, 4.5, 0.01, 0.9 / 0.2),
    ("test_positive_likelihood_ratio", PRED29_2, REF29_2, _lr_plus, 4.5, 0.01, 0.9 / 0.2),
    # Figure 38: TP 1499, FN 500, FP 0, TN 1
    ("test_matthews_correlation_coefficient", F38_PRED, F38_REF, "mcc", 0.0386, 0.001,
     1499 / math.sqrt(1499 * 1999 * 1 * 501)),
    ("test_cohenskappa2", F38_PRED, F38_REF, "kappa", 0.003, 0.001,
     (0.75 - (1499 * 1999 + 501 * 1) / 2000**2) / (1 - (1499 * 1999 + 501 * 1) / 2000**2)),
    ("test_balanced_accuracy2 (09d63ad)", F38_PRED, F38_REF, "balanced_accuracy", 0.87, 0.01,
     (1499 / 1999 + 1) / 2),
    ("test_youden_index2 (09d63ad)", F38_PRED, F38_REF, _youden, 0.75, 0.01, 1499 / 1999),
    # SN 2.17: TP 3, FP 3, FN 0, TN 94; empty prediction: TP 0, FN 3, FP 0, TN 97
    ("test_specificity", PRED217_1, REF217, "specificity", 0.97, 0.01, 94 / 97),
    ("test_specificity", PRED217_2, REF217, "specificity", 1.00, 0.01, 1.0),
    ("test_sensitivity", PRED217_1, REF217, "recall", 1.00, 0.01, 1.0),
    ("test_sensitivity", PRED217_2, REF217, "recall", 0.00, 0.01, 0.0),
    # SN 2.11: TP 30, FP 75, TN 0, FN 0; TP 20, FN 15, FP 60, TN 10
    ("test_accuracy", PRED211_1, REF211_1, "accuracy", 0.286, 0.001, 30 / 105),
    ("test_accuracy", PRED211_2, REF211_2, "accuracy", 0.286, 0.001, 30 / 105),
    # Figure 27 a: TP 40 of 70
    ("test_sens", F27_PRED1, F27_REF1, "recall", 0.57, 0.01, 40 / 70),
    # small structure: ref 21 + 16 = 37 pixels, pred 36 of them
    ("test_fbeta (09d63ad)", P_LARGE_PRED1, P_LARGE_REF, "fbeta", 0.986, 0.001, 72 / 73),
    # SN 2.14: pred1 (69 pixels) and pred2 (72) lie inside the 138-pixel ref
    ("test_dsc_s214", PRED214_1, REF214, "dice", 0.666, 0.01, 138 / 207),
    ("test_dsc_s214", PRED214_2, REF214, "dice", 0.685, 0.01, 144 / 210),
]


@pytest.mark.parametrize("source, pred, ref, metric, expected, atol, exact", COUNT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(COUNT_CASES)])
def test_count_metrics(source, pred, ref, metric, expected, atol, exact):
    names = ("recall", "specificity") if callable(metric) else (metric,)
    got = _values(pred, ref, names)
    value = metric(got) if callable(metric) else got[metric]
    assert _close(value, expected, atol), source
    assert value == pytest.approx(exact, rel=1e-12, abs=1e-15), source


@pytest.mark.parametrize(
    "pred, counts, n_pred, n_neg_pred",
    [
        # test_tp / test_fp / test_fn_map / test_tn (SN 2.10): (TP, FP, FN, TN); test_n_pos_pred 4/36,
        # test_n_neg_pred 192/160
        (PRED210_1, (4, 0, 12, 180), 4, 192),
        (PRED210_2, (16, 20, 0, 160), 36, 160),
    ],
)
def test_sn210_confusion_counts(pred, counts, n_pred, n_neg_pred):
    got = _values(pred, REF210, ("tp", "fp", "fn", "tn"))
    assert (got["tp"], got["fp"], got["fn"], got["tn"]) == counts
    # test_n_pos_ref 16, test_n_neg_ref 180
    assert got["tp"] + got["fn"] == 16 and got["tn"] + got["fp"] == 180
    assert got["tp"] + got["fp"] == n_pred and got["tn"] + got["fn"] == n_neg_pred


def test_sn339_confusion_matrix():
    # test_confusion_matrix: MultiClassPairwiseMeasures.confusion_matrix (prediction in rows,
    # reference in columns) = [[4, 11], [6, 9]]: TN 4, FN 11, FP 6, TP 9.
    mask_ref = np.zeros([5, 6])
    mask_ref[0:5, 0:4] = 1
    mask_pred = np.zeros([5, 6])
    mask_pred[1:4, 1:6] = 1
    got = _values(mask_pred, mask_ref, ("tn", "fn", "fp", "tp"))
    assert [[got["tn"], got["fn"]], [got["fp"], got["tp"]]] == [[4, 11], [6, 9]]


def test_voldiff_and_fbeta_with_beta_2():
    # test_voldiff: equal 2x2 squares, shifted -> absolute_volume_difference_ratio 0.
    ref = np.zeros([14, 14])
    pred = np.zeros([14, 14])
    ref[2:4, 2:4] = 1
    pred[3:5, 3:5] = 1
    assert _values(pred, ref, ("abs_rvd",))["abs_rvd"] == 0.0
    # fbeta with dict_args {"beta": 2} on SN 2.9 #1 (by hand, not in the tests):
    # (1 + 4) P R / (4 P + R) with P = 45/55, R = 0.9 -> 5 * 45 / (5 * 45 + 4 * 5 + 10) = 225/255.
    got = _values(PRED29_1, REF29_1, ("fbeta",), MetricSettings(beta=2.0))
    precision, recall = 45 / 55, 0.9
    assert got["fbeta"] == pytest.approx(5 * precision * recall / (4 * precision + recall), rel=1e-12)
    assert got["fbeta"] == pytest.approx(225 / 255, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Shape metrics of the newer tests


def test_boundary_iou_s212():
    # test_boundary_iou (newer file): boundary_dist 1 -> 0.6 and boundary_dist 2 -> 0.8, atol 0.1.
    # By hand (width 1: see tests/metrics/test_shape.py, 53/89). Width 2 = the two outer layers:
    # ref (rows 2..20, cols 2..20) band 19^2 - 15^2 = 136; pred (rows 3..20) band 18*19 - 14*15 = 132.
    # Shared: row 3 (19), row 4 (ref's band has only columns 2, 3, 19, 20 there: 4), rows 5..18
    # (4 columns each: 56), rows 19-20 (38) -> 117; IoU 117/(136 + 132 - 117) = 117/151 = 0.775.
    for definition in ("metricsreloaded", "distance"):
        one = boundary_iou(PRED212, REF212, (1.0, 1.0), 1.0, definition=definition)
        two = boundary_iou(PRED212, REF212, (1.0, 1.0), 2.0, definition=definition)
        assert _close(one, 0.6, 0.1) and one == pytest.approx(53 / 89, rel=1e-12)
        assert _close(two, 0.8, 0.1) and two == pytest.approx(117 / 151, rel=1e-12)
    got = _values(PRED212, REF212, ("boundary_iou",), MetricSettings(boundary_width_mm=2.0))
    assert got["boundary_iou"] == pytest.approx(117 / 151, rel=1e-12)


@pytest.mark.parametrize("pred, expected", [(PRED214_1, 0.475), (PRED214_2, 0.78)])
def test_cldice_s214(pred, expected):
    # test_cldsc_s214 (atol 0.01)
    (value,) = _values(pred, REF214, ("cldice",)).values()
    assert _close(value, expected, 0.01)


# --------------------------------------------------------------------------------------------
# Empty masks

ALL_NAN = EmptyPolicy(both_empty="nan", gt_empty="nan", pred_empty="nan")
DISTANCES = ("hd", "hd95", "masd", "assd")


@pytest.mark.parametrize("pred_empty, ref_empty", [(False, True), (True, False), (True, True)])
def test_distances_are_nan_for_an_empty_mask(pred_empty, ref_empty):
    # test_distance_empty_ref / test_distance_empty_pred / test_distance_empty_pred_and_ref (bfec35a):
    # measured_distance -> all four NaN. segqc's distances need a 2D/3D mask, so the 100-long SN 2.9
    # vectors are passed as a 1 x 100 image.
    pred = (PRED29_1 * (0 if pred_empty else 1))[None]
    ref = (REF29_1 * (0 if ref_empty else 1))[None]
    got = _values(pred, ref, DISTANCES, MetricSettings(surface="voxel", empty=ALL_NAN))
    assert all(math.isnan(v) for v in got.values())


def test_two_empty_masks():
    # test_empty_ref_pred_nsd_biou: NSD, boundary IoU and clDice NaN (segqc's default policy)
    empty = np.zeros([14, 14])
    got = _values(empty, empty, ("nsd", "boundary_iou", "cldice"))
    assert all(math.isnan(v) for v in got.values())
    # test_empty_reference: pred = ref = [0] -> fbeta NaN and sensitivity NaN; pred = ref = [1] ->
    # specificity NaN (no reference negative)
    got = _values(np.array([0]), np.array([0]), ("fbeta", "recall"))
    assert math.isnan(got["fbeta"]) and math.isnan(got["recall"])
    (spec,) = compare_masks(np.array([1]), np.array([1]), (1.0,), metrics=("specificity",))
    assert math.isnan(spec.value) and spec.empty == "undefined"
    # test_pairwise_measures_neuropoly.py::test_empty_ref_and_pred: dsc 1 (BinaryPairwiseMeasures.dsc
    # returns 1 for two empty masks) -> both_empty="best"; nsd NaN, vol_diff NaN
    zero = np.zeros((10, 10, 10))
    got = _values(zero, zero, ("dice",), MetricSettings(empty=EmptyPolicy(both_empty="best")))
    assert got["dice"] == 1.0
    got = _values(zero, zero, ("nsd", "abs_rvd"))
    assert math.isnan(got["nsd"]) and math.isnan(got["abs_rvd"])


@pytest.mark.parametrize("pred_empty", [True, False])
def test_one_empty_mask_neuropoly(pred_empty):
    # test_empty_pred / test_empty_ref (neuropoly): dsc 0, fbeta 0, nsd 0 (segqc's default "worst");
    # empty prediction: vol_diff 1.0, rel_vol_error -100.
    mask = np.zeros((10, 10, 10))
    mask[5:7, 2:5] = 1
    zero = np.zeros((10, 10, 10))
    pred, ref = (zero, mask) if pred_empty else (mask, zero)
    got = _values(pred, ref, ("dice", "fbeta", "nsd"))
    assert got == {"dice": 0.0, "fbeta": 0.0, "nsd": 0.0}
    if pred_empty:
        got = _values(pred, ref, ("abs_rvd", "rvd"))
        assert got["abs_rvd"] == 1.0 and 100 * got["rvd"] == -100.0


def test_worse_dist_as_the_worst_distance():
    # test_calculate_worse_dist: worse_dist = image diagonal in mm, 19.80 for 14 x 14 and 31.30 with
    # pixdim [1, 2]. With it as worst_distance_mm, segqc reports it for a missed object.
    for pixdim, expected in (((1.0, 1.0), 19.80), ((1.0, 2.0), 31.30)):
        diagonal = math.hypot(*(n * s for n, s in zip(REF210.shape, pixdim)))
        assert _close(diagonal, expected, 0.01)
        policy = EmptyPolicy(worst_distance_mm=diagonal)
        results = compare_masks(np.zeros_like(REF210), REF210, pixdim, metrics=DISTANCES,
                                settings=MetricSettings(surface="voxel", empty=policy))
        assert all(r.value == diagonal and r.empty == "pred_empty:worst" for r in results)


# --------------------------------------------------------------------------------------------
# Disagreements


def test_nsd_with_tau_equal_to_one_voxel_step():
    # Not in MetricsReloaded's tests: two vertical 4-pixel lines one column apart, pixdim (1, 1.2),
    # dict_args {"nsd": 1.2}: every border pixel is exactly 1.2 mm from the other line -> NSD 1 at every
    # column. segqc's nsd is 0 at columns 3, 4, 6 and 9.
    pixdim = (1.0, 1.2)
    settings = MetricSettings(surface="voxel", tolerance_mm=1.2)
    values = {}
    for col in range(1, 12):
        ref = np.zeros((6, 14), dtype=bool)
        ref[1:5, col] = True
        pred = np.zeros((6, 14), dtype=bool)
        pred[1:5, col + 1] = True
        assert _mr_distances(pred, ref, pixdim, tau=1.2)["nsd"] == 1.0
        values[col] = _values(pred, ref, ("nsd",), settings, spacing=pixdim)["nsd"]
    assert values == {col: 1.0 for col in range(1, 12)}


@pytest.mark.xfail(strict=True, reason="MetricsReloaded's negative_predictive_values returns 0 when the "
                   "prediction has no negatives but the reference has; segqc's npv is NaN (undefined, 0/0)")
def test_npv_without_predicted_negatives_is_zero():
    # test_accuracy's SN 2.11 #1: the prediction is all positive (TN = FN = 0), the reference has 75
    # negatives -> negative_predictive_values: "Nothing negative in pred but should be" -> 0.
    assert _values(PRED211_1, REF211_1, ("npv",))["npv"] == 0.0


@pytest.mark.xfail(strict=True, reason="MetricsReloaded's vol_diff |Vref - Vpred|/Vref is inf for an empty "
                   "reference and a non-empty prediction; segqc's abs_rvd is NaN (undefined)")
def test_vol_diff_of_an_empty_reference_is_inf():
    # test_pairwise_measures_neuropoly.py::test_empty_ref: 'vol_diff': np.inf
    pred = np.zeros((10, 10, 10))
    pred[5:7, 2:5] = 1
    assert _values(pred, np.zeros((10, 10, 10)), ("abs_rvd",))["abs_rvd"] == math.inf
