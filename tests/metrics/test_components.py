"""CC-metrics (generalized Voronoi regions of the GT components) against CCMetrics, MONAI, scipy's
feature transform, brute-force distances and the thesis' analytic claims."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from segqc.metrics import MetricSettings, assign_regions, compare_components, compare_masks, label_components

ISO = (1.0, 1.0, 1.0)


def _ball(shape, centre, radius) -> np.ndarray:
    grids = np.indices(shape, dtype=np.float64)
    return sum((grids[i] - centre[i]) ** 2 for i in range(len(shape))) <= radius**2


def _blob(rng, shape, sigma, fraction) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 1.0 - fraction)


def _one_hot(mask: np.ndarray) -> np.ndarray:
    return np.stack([~mask, mask])[None].astype(np.float32)


def _by_name(results) -> dict:
    return {r.metric: r.value for r in results}


def _feature_transform_regions(gt_labels: np.ndarray, sampling=None) -> np.ndarray:
    """Region of every voxel: the label of its nearest GT voxel per scipy's exact EDT feature transform."""
    indices = ndimage.distance_transform_edt(gt_labels == 0, sampling=sampling, return_distances=False,
                                             return_indices=True)
    return gt_labels[tuple(indices)]


def _squared_distance_to_components(points: np.ndarray, gt_labels: np.ndarray, n: int, scale) -> np.ndarray:
    """Brute force: (n_points, n + 1) squared distances (column k: to component k; column 0 unused)."""
    gt_index = np.flatnonzero(gt_labels)
    coords = np.stack(np.unravel_index(gt_index, gt_labels.shape), axis=1) * scale
    labels = gt_labels.reshape(-1)[gt_index]
    points = points * scale
    out = np.full((points.shape[0], n + 1), np.inf)
    for k in range(1, n + 1):
        ck = coords[labels == k]
        for start in range(0, points.shape[0], 1024):
            chunk = points[start:start + 1024]
            out[start:start + 1024, k] = ((chunk[:, None, :] - ck[None]) ** 2).sum(-1).min(axis=1)
    return out


# --------------------------------------------------------------------------------------------
# A case without Voronoi ties near any predicted voxel


def _tie_free_case():
    """Four GT spheres far apart; prediction: one shifted, one shrunk, one grown, one missed, plus a
    false-positive blob that is clearly nearest to the first sphere."""
    shape = (48, 48, 48)
    gt = (_ball(shape, (12, 12, 12), 5) | _ball(shape, (12, 34, 30), 4) | _ball(shape, (36, 14, 34), 6)
          | _ball(shape, (36, 36, 10), 3))
    pred = (_ball(shape, (13, 12, 12), 5) | _ball(shape, (12, 34, 30), 3) | _ball(shape, (36, 15, 34), 7)
            | _ball(shape, (22, 12, 12), 1.5))
    return pred, gt


def test_tie_free_case_has_a_clear_nearest_component_and_matches_the_feature_transform():
    pred, gt = _tie_free_case()
    assignment = assign_regions(pred, gt, ISO, voronoi_units="voxel")
    assert assignment.n_gt == 4 == ndimage.label(gt, structure=np.ones((3, 3, 3)))[1]
    points = np.stack(np.unravel_index(assignment.pred_index, gt.shape), axis=1)
    d2 = np.sort(_squared_distance_to_components(points, assignment.gt_labels, 4, 1.0)[:, 1:], axis=1)
    assert np.all(np.sqrt(d2[:, 1]) - np.sqrt(d2[:, 0]) > 3.0), \
        "every predicted voxel is >3 voxels closer to one component"
    expected = _feature_transform_regions(assignment.gt_labels).reshape(-1)[assignment.pred_index]
    np.testing.assert_array_equal(assignment.pred_region, expected)
    # the same in mm on this isotropic grid
    mm = assign_regions(pred, gt, (2.0, 2.0, 2.0), voronoi_units="mm")
    np.testing.assert_array_equal(mm.pred_region, expected)


def test_cc_dice_matches_ccmetrics_and_monai_per_component_dice_on_tie_free_case():
    import CCMetrics as ccmetrics
    import monai.metrics as monai_metrics
    import torch

    pred, gt = _tie_free_case()
    ours = compare_components(pred, gt, ISO, metrics=("dice",), voronoi_units="voxel")
    cc_dice = _by_name(ours.means)["cc_dice"]

    reference = ccmetrics.CCDiceMetric()
    reference(_one_hot(pred), _one_hot(gt))
    assert cc_dice == pytest.approx(reference.cc_aggregate().item(), rel=1e-6)
    per_component = sorted(float(v) for v in torch.cat([b.reshape(-1) for b in reference.get_buffer()]))
    assert sorted(r.value for _, r in ours.per_component) == pytest.approx(per_component, rel=1e-6)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_dice = monai_metrics.DiceMetric(per_component=True, include_background=False)
        value = monai_dice(torch.from_numpy(_one_hot(pred)), torch.from_numpy(_one_hot(gt))).item()
    assert cc_dice == pytest.approx(value, rel=1e-6)
    # and the case is not trivial: the components really differ in quality
    assert min(per_component) == 0.0 and max(per_component) < 1.0


def test_cc_hd95_and_cc_nsd_match_ccmetrics_in_voxel_mode_on_tie_free_case():
    import CCMetrics as ccmetrics
    pred, gt = _tie_free_case()
    settings = MetricSettings(surface="voxel", tolerance_mm=1.0)
    ours = compare_components(pred, gt, ISO, metrics=("hd95", "nsd"), settings=settings, voronoi_units="voxel")
    means = _by_name(ours.means)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = ccmetrics.CCHausdorffDistance95Metric(metric_worst_score=50)
        hd95(_one_hot(pred), _one_hot(gt))
        surface_dice = ccmetrics.CCSurfaceDiceMetric(class_thresholds=[1.0])
        surface_dice(_one_hot(pred), _one_hot(gt))
    assert means["cc_hd95"] == pytest.approx(hd95.cc_aggregate().item(), rel=1e-6)
    assert means["cc_nsd"] == pytest.approx(surface_dice.cc_aggregate().item(), rel=1e-6)
    ours_hd = sorted(r.value for _, r in ours.per_component if r.metric == "hd95")
    assert 50.0 in ours_hd, "the missed component scores the worst distance"


def test_detection_counts_on_constructed_case():
    pred, gt = _tie_free_case()
    detection = _by_name(compare_components(pred, gt, ISO).detection)
    assert detection == {
        "gt_components": 4.0,
        "gt_components_hit": 3.0,
        "gt_components_missed": 1.0,
        "pred_components": 4.0,
        "pred_components_unmatched": 1.0,
    }


def test_a_component_whose_region_holds_only_a_near_miss_is_missed_not_hit():
    """Detection counts overlap, not region membership: a predicted blob next to (not touching) a GT
    component falls in its region but neither hits it nor is matched."""
    gt = np.zeros((30, 30, 30), dtype=bool)
    gt[3:8, 3:8, 3:8] = True
    gt[18:24, 18:24, 18:24] = True
    pred = np.zeros_like(gt)
    pred[3:8, 3:8, 3:8] = True  # exact
    pred[18:24, 18:24, 26:28] = True  # 2 voxels beyond the second cube
    cc = compare_components(pred, gt, ISO, metrics=("dice", "hd"))
    assert _by_name(cc.detection) == {
        "gt_components": 2.0,
        "gt_components_hit": 1.0,
        "gt_components_missed": 1.0,
        "pred_components": 2.0,
        "pred_components_unmatched": 1.0,
    }
    rows = {(k, r.metric): r for k, r in cc.per_component}
    near = [k for k in (1, 2) if rows[(k, "dice")].value == 0.0]
    assert len(near) == 1 and rows[(near[0], "dice")].empty == "", "the region is not empty: Dice 0 is natural"
    # HD: the cube's far face (z = 18) lies straight below the slab's near face (z = 26), same footprint
    assert rows[(near[0], "hd")].value == pytest.approx(26 - 18, rel=1e-12)


def test_per_component_metrics_in_mm_equal_full_size_region_masks_on_anisotropic_grid():
    """Each component's metrics equal those of (prediction within its region) vs (the component),
    evaluated on the full image with surface-distance; regions from scipy's feature transform in mm."""
    import surface_distance as sdlib
    spacing = (0.7, 0.9, 2.5)
    pred, gt = _tie_free_case()
    ours = compare_components(pred, gt, spacing, metrics=("dice", "hd95", "nsd", "assd"),
                              settings=MetricSettings(tolerance_mm=1.3), voronoi_units="mm")
    labels, n = label_components(gt)
    regions = _feature_transform_regions(labels, sampling=spacing)
    rows = {(k, r.metric): r.value for k, r in ours.per_component}
    for k in range(1, n + 1):
        component = labels == k
        in_region = pred & (regions == k)
        if not in_region.any():
            assert rows[(k, "dice")] == 0.0 and rows[(k, "hd95")] == 50.0
            continue
        expected_dice = 2 * np.sum(in_region & component) / (in_region.sum() + component.sum())
        assert rows[(k, "dice")] == pytest.approx(expected_dice)
        ref = sdlib.compute_surface_distances(component, in_region, spacing)
        assert rows[(k, "hd95")] == pytest.approx(sdlib.compute_robust_hausdorff(ref, 95), rel=1e-6)
        assert rows[(k, "nsd")] == pytest.approx(sdlib.compute_surface_dice_at_tolerance(ref, 1.3), rel=1e-6)
        full = _by_name(compare_masks(in_region, component, spacing, metrics=("assd",)))
        assert rows[(k, "assd")] == pytest.approx(full["assd"], rel=1e-12)


def _many_lesions():
    """Dozens of small GT lesions of varied size and a large flat slab (very different crop
    cross-sections), a noisy prediction, and a predicted blob far from every lesion."""
    rng = np.random.default_rng(70)
    shape = (64, 60, 36)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    field /= field.std()
    gt = field > 2.4
    gt[5:50, 5:55, 31:33] = True
    noisy = ndimage.gaussian_filter(field + 0.6 * rng.standard_normal(shape), 0.6)
    pred = noisy > 1.9 * noisy.std()
    pred[5:50, 5:55, 32:34] = True
    # a small blob at the point farthest from every lesion
    far = ndimage.distance_transform_edt(~gt, sampling=(0.8, 1.1, 2.5))[1:-1, 1:-1, 1:-1]
    x, y, z = np.unravel_index(np.argmax(far), far.shape)
    pred[x:x + 3, y:y + 3, z:z + 3] = True
    return pred, gt


def _voxel_edge_distances(source: np.ndarray, target: np.ndarray, spacing) -> np.ndarray:
    structure = ndimage.generate_binary_structure(3, 1)
    edges_s = source & ~ndimage.binary_erosion(source, structure=structure, border_value=0)
    edges_t = target & ~ndimage.binary_erosion(target, structure=structure, border_value=0)
    return np.sort(ndimage.distance_transform_edt(~edges_t, sampling=spacing)[edges_s])


@pytest.mark.parametrize("mode", ["surfel", "voxel"])
def test_cc_distance_metrics_of_many_components_match_per_region_full_size_references(mode):
    """Each component's distances (however the implementation batches components) equal those of
    the full-size masks (prediction in the component's region, component): surface-distance in
    surfel mode, an EDT of the voxel edges in voxel mode."""
    spacing = (0.8, 1.1, 2.5)
    pred, gt = _many_lesions()
    tolerance = 1.77
    settings = MetricSettings(surface=mode, tolerance_mm=tolerance)
    ours = compare_components(pred, gt, spacing, metrics=("hd", "hd95", "assd", "masd", "nsd"), settings=settings)
    rows = {(k, r.metric): r.value for k, r in ours.per_component}
    assignment = assign_regions(pred, gt, spacing)
    labels, n = assignment.gt_labels, assignment.n_gt
    assert n >= 40
    region = np.zeros(gt.size, dtype=np.int64)
    region[assignment.pred_index] = assignment.pred_region
    region = region.reshape(gt.shape)
    import surface_distance

    sdlib = surface_distance if mode == "surfel" else None
    checked_far = False
    boxes = ndimage.find_objects(np.where(gt, labels, region))
    for k in range(1, n + 1):
        # crop (with a one-voxel margin, so voxel edges at the crop border are unchanged) for speed
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in boxes[k - 1])
        component, in_region = labels[box] == k, region[box] == k
        if not in_region.any():
            assert rows[(k, "hd")] == 50.0
            continue
        if mode == "surfel":
            ref = sdlib.compute_surface_distances(component, in_region, spacing)
            expected = {
                "hd": sdlib.compute_robust_hausdorff(ref, 100),
                "hd95": sdlib.compute_robust_hausdorff(ref, 95),
                "masd": float(np.mean(sdlib.compute_average_surface_distance(ref))),
                "nsd": sdlib.compute_surface_dice_at_tolerance(ref, tolerance),
            }
            d = np.concatenate([ref["distances_gt_to_pred"], ref["distances_pred_to_gt"]])
            w = np.concatenate([ref["surfel_areas_gt"], ref["surfel_areas_pred"]])
            expected["assd"] = float(np.sum(d * w) / np.sum(w))
        else:
            g2p = _voxel_edge_distances(component, in_region, spacing)
            p2g = _voxel_edge_distances(in_region, component, spacing)
            both = np.concatenate([g2p, p2g])
            expected = {
                "hd": max(g2p[-1], p2g[-1]),
                "hd95": max(np.percentile(g2p, 95), np.percentile(p2g, 95)),
                "assd": float(both.mean()),
                "masd": 0.5 * (g2p.mean() + p2g.mean()),
                "nsd": float(np.mean(both <= tolerance)),
            }
        for metric, value in expected.items():
            assert rows[(k, metric)] == pytest.approx(value, rel=1e-6, abs=1e-12), (k, metric)
        checked_far |= expected["hd"] > 12.0  # ~3x the neighbourhood-search radius at this spacing
    assert checked_far, "the far predicted blob must give some region a distance beyond the ring radius"


# --------------------------------------------------------------------------------------------
# Ties


@pytest.mark.parametrize(
    "ndim, units, spacing",
    [(2, "voxel", (1.0, 1.0)), (3, "voxel", (0.5, 1.0, 2.0)), (2, "mm", (0.5, 2.0)), (3, "mm", (1.0, 0.5, 2.0))],
)
def test_assignment_is_a_nearest_component_and_differs_from_feature_transform_only_on_exact_ties(ndim, units, spacing):
    """Spacings are dyadic so squared distances are exact in floating point: 'equidistant' is exact."""
    rng = np.random.default_rng(40 + ndim + (units == "mm"))
    shape = (110, 100) if ndim == 2 else (30, 28, 26)
    scale = np.ones(ndim) if units == "voxel" else np.asarray(spacing)
    differing = 0
    for _ in range(3):
        gt = _blob(rng, shape, 1.5, 0.06)
        pred = _blob(rng, shape, 1.5, 0.15)
        assignment = assign_regions(pred, gt, spacing, voronoi_units=units)
        labels, n = assignment.gt_labels, assignment.n_gt
        assert n > 10
        points = np.stack(np.unravel_index(assignment.pred_index, shape), axis=1)
        d2 = _squared_distance_to_components(points, labels, n, scale)
        nearest = d2.min(axis=1)
        rows = np.arange(points.shape[0])
        # ours is always at the minimal distance (exactly)
        np.testing.assert_array_equal(d2[rows, assignment.pred_region], nearest)
        # GT voxels keep their own component
        inside = labels.reshape(-1)[assignment.pred_index] > 0
        np.testing.assert_array_equal(assignment.pred_region[inside], labels.reshape(-1)[assignment.pred_index][inside])
        reference = _feature_transform_regions(labels, sampling=None if units == "voxel" else spacing)
        reference = reference.reshape(-1)[assignment.pred_index]
        diff = np.flatnonzero(assignment.pred_region != reference)
        differing += diff.size
        np.testing.assert_array_equal(d2[diff, assignment.pred_region[diff]], d2[diff, reference[diff]])
    assert differing > 0, "random cases should contain Voronoi ties, or this test checks nothing"


# --------------------------------------------------------------------------------------------
# Thesis claims


def _three_spheres():
    shape = (64, 64, 40)
    large = _ball(shape, (18, 20, 20), 12)
    medium = _ball(shape, (46, 22, 20), 7)
    small = _ball(shape, (40, 50, 20), 3)
    return large, medium, small


def test_removing_the_smallest_of_three_spheres_moves_cc_dice_much_more_than_dice():
    large, medium, small = _three_spheres()
    gt = large | medium | small
    structure = ndimage.generate_binary_structure(3, 1)
    cc_values, dice_values = [1.0], [1.0]
    eroded = small.copy()
    while eroded.any():
        eroded = ndimage.binary_erosion(eroded, structure=structure)
        pred = large | medium | eroded
        cc_values.append(_by_name(compare_components(pred, gt, ISO, metrics=("dice",)).means)["cc_dice"])
        dice_values.append(_by_name(compare_masks(pred, gt, ISO, metrics=("dice",)))["dice"])
        if eroded.any():
            expected_small = 2 * eroded.sum() / (eroded.sum() + small.sum())
            assert cc_values[-1] == pytest.approx((1 + 1 + expected_small) / 3, rel=1e-12)
    assert np.all(np.diff(cc_values) < 0) and np.all(np.diff(dice_values) < 0)
    a, b, c = large.sum(), medium.sum(), small.sum()
    assert cc_values[-1] == pytest.approx(2 / 3, rel=1e-12)
    assert dice_values[-1] == pytest.approx(2 * (a + b) / (2 * (a + b) + c), rel=1e-12)
    for cc, d in zip(cc_values[1:], dice_values[1:]):
        assert (1 - cc) > 20 * (1 - d), "CC-Dice weighs the small sphere like the large ones"


def test_cc_hd95_reacts_alike_to_eroding_large_or_small_sphere_while_hd95_ignores_the_small_one():
    large, medium, small = _three_spheres()
    gt = large | medium | small
    structure = ndimage.generate_binary_structure(3, 1)
    pred_small = large | medium | ndimage.binary_erosion(small, structure=structure)
    pred_large = ndimage.binary_erosion(large, structure=structure) | medium | small
    settings = MetricSettings()

    def both(pred):
        cc = _by_name(compare_components(pred, gt, ISO, metrics=("hd95",), settings=settings).means)["cc_hd95"]
        return cc, _by_name(compare_masks(pred, gt, ISO, metrics=("hd95",), settings=settings))["hd95"]

    cc_small, hd_small = both(pred_small)
    cc_large, hd_large = both(pred_large)
    assert both(gt) == (0.0, 0.0)
    assert cc_small > 0 and cc_large > 0
    assert 0.5 < cc_small / cc_large < 2.0
    assert hd_large >= 1.0
    assert hd_small < 0.1 * hd_large


# --------------------------------------------------------------------------------------------
# Connectivity and Voronoi units


def test_connectivity_decides_whether_diagonal_neighbours_are_one_component():
    corner = np.zeros((10, 10, 10), dtype=bool)
    corner[2:5, 2:5, 2:5] = True
    corner[5:8, 5:8, 5:8] = True  # touches the first cube at one vertex
    edge = np.zeros_like(corner)
    edge[2:5, 2:5, 2:5] = True
    edge[5:8, 5:8, 2:5] = True  # shares an edge
    counts = {}
    for name, mask in (("corner", corner), ("edge", edge)):
        for connectivity in (6, 18, 26):
            detection = _by_name(compare_components(mask, mask, ISO, connectivity=connectivity).detection)
            counts[(name, connectivity)] = (detection["gt_components"], detection["pred_components"])
    assert counts == {("corner", 6): (2, 2), ("corner", 18): (2, 2), ("corner", 26): (1, 1),
                      ("edge", 6): (2, 2), ("edge", 18): (1, 1), ("edge", 26): (1, 1)}
    square = np.zeros((6, 6), dtype=bool)
    square[1, 1] = square[2, 2] = True
    assert _by_name(compare_components(square, square, (1, 1), connectivity=6).detection)["gt_components"] == 2
    assert _by_name(compare_components(square, square, (1, 1), connectivity=26).detection)["gt_components"] == 1


@pytest.mark.parametrize("connectivity, rank", [(6, 1), (18, 2), (26, 3)])
def test_label_components_partition_equals_scipy_label(connectivity, rank):
    rng = np.random.default_rng(connectivity)
    mask = rng.random((25, 26, 27)) < 0.08
    labels, n = label_components(mask, connectivity=connectivity)
    ref, n_ref = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, rank))
    assert n == n_ref > 100
    # same partition: a bijection between label ids
    pairs = np.unique(np.stack([labels[mask], ref[mask]]), axis=1)
    assert pairs.shape[1] == n


def test_voronoi_units_mm_and_voxel_pick_different_components_on_anisotropic_grid():
    """A predicted voxel P: component A is 2 voxels away along z (8 mm at 4 mm slices), component B
    5 voxels away along x (5 mm). Nearest in voxels: A; nearest in mm: B."""
    spacing = (1.0, 1.0, 4.0)
    gt = np.zeros((24, 20, 20), dtype=bool)
    gt[10, 10, 12] = True  # A: 1 voxel
    gt[15:18, 10, 10] = True  # B: 3 voxels
    pred = gt.copy()
    pred[10, 10, 10] = True  # P
    p_index = np.ravel_multi_index((10, 10, 10), gt.shape)
    result = {}
    for units in ("voxel", "mm"):
        assignment = assign_regions(pred, gt, spacing, voronoi_units=units)
        labels = assignment.gt_labels
        region_of_p = assignment.pred_region[assignment.pred_index == p_index][0]
        result[units] = {"A": labels[10, 10, 12], "B": labels[15, 10, 10]}, region_of_p
    (ids, region_voxel), (_, region_mm) = result["voxel"], result["mm"]
    assert region_voxel == ids["A"] and region_mm == ids["B"]
    cc_voxel = _by_name(compare_components(pred, gt, spacing, metrics=("dice",), voronoi_units="voxel").means)
    cc_mm = _by_name(compare_components(pred, gt, spacing, metrics=("dice",), voronoi_units="mm").means)
    # voxel: A gets P -> Dice 2*1/(2+1), B exact; mm: A exact, B gets P -> 2*3/(4+3)
    assert cc_voxel["cc_dice"] == pytest.approx((2 / 3 + 1) / 2, rel=1e-12)
    assert cc_mm["cc_dice"] == pytest.approx((1 + 6 / 7) / 2, rel=1e-12)


def test_invalid_component_options_raise():
    mask = np.ones((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError):
        compare_components(mask, mask, ISO, connectivity=8)
    with pytest.raises(ValueError):
        assign_regions(mask, mask, ISO, voronoi_units="inch")
    with pytest.raises(ValueError):
        compare_components(mask, mask[:3], ISO)


def _two_lesions() -> tuple[np.ndarray, np.ndarray]:
    """GT: two 4^3 cubes 25 voxels apart along y; pred: the first cube and a cube 8 voxels off the second."""
    gt = np.zeros((20, 40, 20), bool)
    gt[5:9, 5:9, 5:9] = True
    gt[5:9, 30:34, 5:9] = True
    pred = np.zeros_like(gt)
    pred[5:9, 5:9, 5:9] = True
    pred[5:9, 22:26, 5:9] = True
    return pred, gt


@pytest.mark.parametrize("spacing", [(1, 0, 1), (1, -1, 1), (1, np.nan, 1), (1, 1), "abc"])
def test_compare_components_refuses_a_bad_spacing(spacing):
    """Once: spacing (1, 0, 1) moved the Voronoi border and gave cc_dice 0.4 instead of 0.5; (1, 1)
    was a numpy broadcast error and NaN a k-d tree error."""
    pred, gt = _two_lesions()
    assert _by_name(compare_components(pred, gt, ISO, metrics=("dice",)).means)["cc_dice"] == 0.5
    with pytest.raises((ValueError, TypeError), match="spacing"):
        compare_components(pred, gt, spacing, metrics=("dice",))
    with pytest.raises((ValueError, TypeError), match="spacing"):
        assign_regions(pred, gt, spacing)


def test_assign_regions_refuses_masks_of_different_shapes():
    """Once: a ground truth one slice shorter was read with the prediction's flat indices."""
    pred, gt = _two_lesions()
    with pytest.raises(ValueError, match=r"pred shape \(20, 40, 20\) differs from gt shape \(19, 40, 20\)"):
        assign_regions(pred, gt[:-1], ISO)


@pytest.mark.parametrize("empty_gt", [False, True])
@pytest.mark.parametrize("metric", ["pq", "specificity", "volume_pred"])
def test_compare_components_refuses_metrics_it_does_not_compute_whatever_the_ground_truth(metric, empty_gt):
    """Once: pq and specificity were accepted with an empty ground truth (cc_pq 0.0) and refused
    otherwise, specificity with a message naming n_total, which compare_components does not take."""
    pred, gt = _two_lesions()
    gt = np.zeros_like(gt) if empty_gt else gt
    with pytest.raises(ValueError, match=rf"compare_components does not compute {metric}; supported: dice, iou"):
        compare_components(pred, gt, ISO, metrics=("dice", metric))


def test_compare_components_takes_a_bare_metric_name_as_one_metric():
    pred, gt = _two_lesions()
    assert [r.metric for r in compare_components(pred, gt, ISO, metrics="dice").means] == ["cc_dice"]


@pytest.mark.parametrize("ndim", [2, 3])
def test_read_only_masks_give_the_same_components_and_scores(ndim):
    """Once: a read-only bool mask (memory-mapped, or a cached array) made cc3d raise "buffer source
    array is read-only" from every component metric; inputs are only read."""
    from segqc.metrics import instance_metrics, lesion_scores

    rng = np.random.default_rng(ndim)
    shape = (40, 36) if ndim == 2 else (20, 18, 16)
    gt = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2) > 0.4
    pred = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2) > 0.4
    frozen_pred, frozen_gt = pred.copy(), gt.copy()
    frozen_pred.flags.writeable = frozen_gt.flags.writeable = False
    structure = np.ones((3,) * ndim)
    _, n_scipy = ndimage.label(gt, structure=structure)
    assert label_components(frozen_gt)[1] == n_scipy > 1
    spacing = (1.0,) * ndim
    assert [r.value for r in compare_components(frozen_pred, frozen_gt, spacing).means] == pytest.approx(
        [r.value for r in compare_components(pred, gt, spacing).means], nan_ok=True)
    assert lesion_scores(frozen_pred, frozen_gt, spacing) == lesion_scores(pred, gt, spacing)
    assert [r.value for r in instance_metrics(frozen_pred, frozen_gt)] == pytest.approx(
        [r.value for r in instance_metrics(pred, gt)])
