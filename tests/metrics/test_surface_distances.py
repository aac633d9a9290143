"""Surface distances (segqc.metrics.surface) against independent references.

* surfel mode vs DeepMind ``surface-distance`` (distance transform over the corner grid),
* voxel mode vs MONAI and vs a scipy edge + Euclidean-distance-transform reference,
* analytic cases (translations, nested cubes, far-apart spheres).

The engine has two search paths: a bit-packed neighbourhood search for surfaces with at least
``_MIN_POINTS_FOR_RING_SEARCH`` points, and a k-d tree otherwise (and for points the
neighbourhood search does not resolve). Every reference comparison is run on the automatic path
and with each path forced, so both are covered on small and large, 2D and 3D, isotropic and
strongly anisotropic inputs, and on objects farther apart than the neighbourhood radius.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from scipy import ndimage
from voxel_surfaces import voxel_edges

from segqc.metrics import MetricSettings, compare_masks, extract_surface, surface_distances
from segqc.metrics import surface as surface_module
from segqc.metrics.surface import assd, average_distances, hausdorff, masd, nsd

RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Shapes


def _blob(rng: np.random.Generator, shape, sigma: float, fraction: float) -> np.ndarray:
    """Smoothed noise thresholded to keep ``fraction`` of the voxels: an irregular multi-blob mask."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 1.0 - fraction)


def _ball_mm(shape, spacing, centre_mm, radius_mm) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of ``centre_mm`` (a sphere in mm)."""
    grids = np.indices(shape, dtype=np.float64)
    d2 = sum((grids[i] * spacing[i] - centre_mm[i]) ** 2 for i in range(len(shape)))
    return d2 <= radius_mm**2


@functools.cache
def _case(name: str):
    """(pred, gt, spacing) of a named test case; deterministic (seeded). Cached: do not modify."""
    rng = np.random.default_rng(_SEEDS[name])
    if name == "small-3d-iso":
        shape, spacing = (14, 15, 16), (1.0, 1.0, 1.0)
        return _blob(rng, shape, 1.5, 0.2), _blob(rng, shape, 1.5, 0.2), spacing
    if name == "small-2d-aniso":
        shape, spacing = (30, 41), (0.7, 2.3)
        return _blob(rng, shape, 1.5, 0.25), _blob(rng, shape, 1.5, 0.25), spacing
    if name == "large-3d-iso":
        shape, spacing = (44, 44, 44), (1.0, 1.0, 1.0)
        return _blob(rng, shape, 2.0, 0.25), _blob(rng, shape, 2.0, 0.25), spacing
    if name == "large-3d-thick-slices":
        shape, spacing = (40, 40, 22), (0.5, 0.5, 5.0)
        return _blob(rng, shape, 2.0, 0.3), _blob(rng, shape, 2.0, 0.3), spacing
    if name == "large-3d-thin-last-axis":
        # last axis tiny and 140 long: neighbourhood offsets of ~26 bits across 3 packed words
        shape, spacing = (20, 22, 140), (5.0, 5.0, 0.2)
        return _blob(rng, shape, 2.0, 0.3), _blob(rng, shape, 2.0, 0.3), spacing
    if name == "large-3d-extreme-last-axis":
        # the neighbourhood radius would span more than 63 voxels along the last axis: it is capped
        shape, spacing = (18, 16, 150), (8.0, 8.0, 0.05)
        return _blob(rng, shape, 2.0, 0.3), _blob(rng, shape, 2.0, 0.3), spacing
    if name == "large-3d-oblique":
        shape, spacing = (30, 34, 70), (0.7, 1.3, 2.1)
        return _blob(rng, shape, 1.5, 0.3), _blob(rng, shape, 1.5, 0.3), spacing
    if name == "spheres-3d-aniso":
        shape, spacing = (48, 50, 20), (0.8, 0.9, 3.0)
        gt = _ball_mm(shape, spacing, (19.0, 22.0, 30.0), 15.0)
        pred = _ball_mm(shape, spacing, (21.5, 20.0, 31.0), 13.5)
        return pred, gt, spacing
    if name == "far-apart-3d":
        # two big spheres (> 4096 surface points each) ~60 mm apart: far beyond the
        # neighbourhood radius, so every point goes through the k-d tree fallback
        shape, spacing = (44, 44, 110), (1.0, 1.2, 0.9)
        gt = _ball_mm(shape, spacing, (21.0, 26.0, 22.0), 19.0)
        pred = _ball_mm(shape, spacing, (22.0, 25.0, 78.0), 17.0)
        return pred, gt, spacing
    if name == "large-2d-iso":
        shape, spacing = (260, 200), (1.0, 1.0)
        return _blob(rng, shape, 2.0, 0.3), _blob(rng, shape, 2.0, 0.3), spacing
    if name == "large-2d-aniso":
        shape, spacing = (220, 150), (0.3, 2.0)
        return _blob(rng, shape, 1.5, 0.3), _blob(rng, shape, 1.5, 0.3), spacing
    if name == "large-2d-thin-last-axis":
        shape, spacing = (70, 300), (4.0, 0.1)
        return _blob(rng, shape, 1.5, 0.3), _blob(rng, shape, 1.5, 0.3), spacing
    if name == "large-2d-extreme-last-axis":
        shape, spacing = (60, 260), (6.0, 0.02)
        return _blob(rng, shape, 1.5, 0.3), _blob(rng, shape, 1.5, 0.3), spacing
    if name == "far-apart-2d":
        shape, spacing = (400, 380), (0.6, 0.5)
        # jagged discs so that both contours exceed 4096 points
        noise = _blob(rng, shape, 0.6, 0.5)
        gt = _ball_mm(shape, spacing, (60.0, 50.0), 45.0) & noise
        pred = _ball_mm(shape, spacing, (180.0, 140.0), 40.0) & ~noise
        return pred, gt, spacing
    raise KeyError(name)


_SEEDS = {
    "small-3d-iso": 11,
    "small-2d-aniso": 12,
    "large-3d-iso": 13,
    "large-3d-thick-slices": 14,
    "large-3d-thin-last-axis": 15,
    "large-3d-extreme-last-axis": 23,
    "large-3d-oblique": 16,
    "spheres-3d-aniso": 17,
    "far-apart-3d": 18,
    "large-2d-iso": 19,
    "large-2d-aniso": 20,
    "large-2d-thin-last-axis": 21,
    "large-2d-extreme-last-axis": 24,
    "far-apart-2d": 22,
}
CASES = list(_SEEDS)
PATHS = ("auto", "ring", "kdtree")


@pytest.fixture
def search_path(monkeypatch):
    """Return a function that forces one of the two search paths (or restores the automatic one)."""
    default = surface_module._MIN_POINTS_FOR_RING_SEARCH

    def use(path: str) -> None:
        threshold = {"auto": default, "ring": 0, "kdtree": 10**12}[path]
        monkeypatch.setattr(surface_module, "_MIN_POINTS_FOR_RING_SEARCH", threshold)

    yield use


@functools.cache
def _surfel_reference(name: str) -> dict:
    import surface_distance as sd
    pred, gt, spacing = _case(name)
    return sd.compute_surface_distances(gt, pred, spacing)  # (mask_gt, mask_pred, spacing)


def _sorted_pairs(distances: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances and weights in a canonical order (ties in distance ordered by weight)."""
    key = np.round(distances, 9)
    order = np.lexsort((weights, key))
    return distances[order], weights[order]


# --------------------------------------------------------------------------------------------
# surfel mode vs DeepMind surface-distance


def test_case_set_exercises_both_search_paths_naturally():
    """The automatic path must meet surfaces on both sides of the ring-search threshold."""
    threshold = surface_module._MIN_POINTS_FOR_RING_SEARCH
    sizes = []
    for name in CASES:
        pred, gt, spacing = _case(name)
        sizes += [extract_surface(pred, spacing).size, extract_surface(gt, spacing).size]
    assert min(sizes) < threshold <= max(sizes)
    for name in ("far-apart-3d", "far-apart-2d", "large-3d-thin-last-axis", "large-2d-thin-last-axis"):
        pred, gt, spacing = _case(name)
        assert extract_surface(gt, spacing).size >= threshold, name
    # the extreme cases reach the cap of the neighbourhood along the packed (last) axis
    for name in ("large-3d-extreme-last-axis", "large-2d-extreme-last-axis"):
        _, _, spacing = _case(name)
        assert surface_module._ring_offsets(tuple(spacing))[2][-1] == 63, name


def test_area_weighted_percentile_matches_surface_distance_on_exact_cumulative_boundaries():
    """Percentiles landing exactly on a cumulative area fraction take the first element reaching it."""
    import surface_distance as sdlib
    rng = np.random.default_rng(5)
    cases = [np.ones(20), np.ones(40), rng.random(33), np.repeat([0.5, 0.25], 8)]
    for weights_gt in cases:
        for weights_pred in cases:
            d_gt = np.sort(rng.random(weights_gt.size) * 10)
            d_pred = np.sort(rng.random(weights_pred.size) * 10)
            sd = surface_module.SurfaceDistances(d_gt, weights_gt, d_pred, weights_pred, "surfel")
            ref = {"distances_gt_to_pred": d_gt, "surfel_areas_gt": weights_gt,
                   "distances_pred_to_gt": d_pred, "surfel_areas_pred": weights_pred}
            for percent in (5.0, 25.0, 50.0, 75.0, 95.0, 97.5, 100.0):
                assert hausdorff(sd, percent) == sdlib.compute_robust_hausdorff(ref, percent), percent


@pytest.mark.parametrize("name", CASES)
def test_sorted_distances_and_areas_match_surface_distance_on_every_search_path(name, search_path):
    ref = _surfel_reference(name)
    pred, gt, spacing = _case(name)
    ref_g = _sorted_pairs(ref["distances_gt_to_pred"], ref["surfel_areas_gt"])
    ref_p = _sorted_pairs(ref["distances_pred_to_gt"], ref["surfel_areas_pred"])
    for path in PATHS:
        search_path(path)
        sd = surface_distances(pred, gt, spacing)
        assert sd.mode == "surfel"
        # sorted ascending, as documented
        assert np.all(np.diff(sd.gt_to_pred) >= 0) and np.all(np.diff(sd.pred_to_gt) >= 0)
        for ours, theirs in ((sd.gt_to_pred, ref["distances_gt_to_pred"]),
                             (sd.pred_to_gt, ref["distances_pred_to_gt"])):
            assert ours.shape == theirs.shape, path
            np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-9, err_msg=path)
        g = _sorted_pairs(sd.gt_to_pred, sd.gt_weights)
        p = _sorted_pairs(sd.pred_to_gt, sd.pred_weights)
        np.testing.assert_allclose(g[1], ref_g[1], rtol=RTOL, err_msg=path)
        np.testing.assert_allclose(p[1], ref_p[1], rtol=RTOL, err_msg=path)


@pytest.mark.parametrize("name", CASES)
def test_hd_hd95_assd_masd_nsd_match_surface_distance(name):
    import surface_distance as sdlib
    ref = _surfel_reference(name)
    pred, gt, spacing = _case(name)
    sd = surface_distances(pred, gt, spacing)

    assert hausdorff(sd, 100) == pytest.approx(sdlib.compute_robust_hausdorff(ref, 100), rel=RTOL)
    for percent in (50.0, 95.0, 99.0):
        assert hausdorff(sd, percent) == pytest.approx(sdlib.compute_robust_hausdorff(ref, percent), rel=RTOL)

    ref_gt_avg, ref_pred_avg = sdlib.compute_average_surface_distance(ref)
    ours_gt_avg, ours_pred_avg = average_distances(sd)
    assert ours_gt_avg == pytest.approx(ref_gt_avg, rel=RTOL)
    assert ours_pred_avg == pytest.approx(ref_pred_avg, rel=RTOL)
    assert masd(sd) == pytest.approx(0.5 * (ref_gt_avg + ref_pred_avg), rel=RTOL)

    d_g, a_g = ref["distances_gt_to_pred"], ref["surfel_areas_gt"]
    d_p, a_p = ref["distances_pred_to_gt"], ref["surfel_areas_pred"]
    expected_assd = (np.sum(d_g * a_g) + np.sum(d_p * a_p)) / (np.sum(a_g) + np.sum(a_p))
    assert assd(sd) == pytest.approx(expected_assd, rel=RTOL)

    # tolerances chosen away from the lattice of possible distances
    for tolerance in (0.437, 1.0 + 1.0 / np.pi, 2.913, 7.77):
        assert nsd(sd, tolerance) == pytest.approx(
            sdlib.compute_surface_dice_at_tolerance(ref, tolerance), rel=RTOL, abs=1e-12
        )


@pytest.mark.parametrize("name", ["large-3d-thick-slices", "spheres-3d-aniso", "large-2d-aniso"])
def test_compare_masks_surfel_metrics_match_surface_distance(name):
    import surface_distance as sdlib
    ref = _surfel_reference(name)
    pred, gt, spacing = _case(name)
    settings = MetricSettings(tolerance_mm=1.234, percentile=95.0)
    got = {r.metric: r
           for r in compare_masks(pred, gt, spacing, metrics=("hd", "hd95", "masd", "nsd"), settings=settings)}
    assert all(r.empty == "" for r in got.values())
    assert got["hd"].value == pytest.approx(sdlib.compute_robust_hausdorff(ref, 100), rel=RTOL)
    assert got["hd95"].value == pytest.approx(sdlib.compute_robust_hausdorff(ref, 95), rel=RTOL)
    assert got["masd"].value == pytest.approx(np.mean(sdlib.compute_average_surface_distance(ref)), rel=RTOL)
    assert got["nsd"].value == pytest.approx(sdlib.compute_surface_dice_at_tolerance(ref, 1.234), rel=RTOL)


def test_far_apart_objects_are_farther_than_the_neighbourhood_radius():
    """Guard for the far-apart cases: their distances really lie beyond the ring radius."""
    for name in ("far-apart-3d", "far-apart-2d"):
        pred, gt, spacing = _case(name)
        _, radii, _ = surface_module._ring_offsets(tuple(float(s) for s in spacing))
        sd = surface_distances(pred, gt, spacing)
        assert sd.gt_to_pred[0] > 3 * radii[-1], name
        assert sd.pred_to_gt[0] > 3 * radii[-1], name


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.3, 2.0), (5.0, 0.2)])
def test_2d_contour_length_of_a_rectangle_is_its_perimeter_with_cut_corners(spacing):
    """Marching squares: straight sides are exact and each corner is cut by the diagonal of a
    half-voxel, so length = 2 (L0 + L1) - 4 (s0/2 + s1/2) + 4 * hypot(s0/2, s1/2)."""
    s0, s1 = spacing
    mask = np.zeros((20, 30), dtype=bool)
    mask[3:13, 4:23] = True  # 10 x 19 voxels
    expected = 2 * (10 * s0 + 19 * s1) - 4 * (s0 / 2 + s1 / 2) + 4 * np.hypot(s0 / 2, s1 / 2)
    assert extract_surface(mask, spacing).weights.sum() == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------
# voxel mode vs MONAI and a scipy reference


def _voxel_reference(pred, gt, spacing):
    """(gt->pred, pred->gt) sorted distances from an exact EDT of the other edge set."""
    ep, eg = voxel_edges(pred), voxel_edges(gt)
    to_pred = ndimage.distance_transform_edt(~ep, sampling=spacing)
    to_gt = ndimage.distance_transform_edt(~eg, sampling=spacing)
    return np.sort(to_pred[eg]), np.sort(to_gt[ep])


@pytest.mark.parametrize("name", CASES)
def test_voxel_mode_distances_match_edt_of_voxel_edges_on_every_search_path(name, search_path):
    pred, gt, spacing = _case(name)
    ref_g, ref_p = _voxel_reference(pred, gt, spacing)
    for path in PATHS:
        search_path(path)
        sd = surface_distances(pred, gt, spacing, mode="voxel")
        assert sd.mode == "voxel"
        np.testing.assert_allclose(sd.gt_to_pred, ref_g, rtol=RTOL, atol=1e-9, err_msg=path)
        np.testing.assert_allclose(sd.pred_to_gt, ref_p, rtol=RTOL, atol=1e-9, err_msg=path)
        assert np.all(sd.gt_weights == 1.0) and np.all(sd.pred_weights == 1.0)
        assert hausdorff(sd, 95) == pytest.approx(
            max(np.percentile(ref_g, 95), np.percentile(ref_p, 95)), rel=RTOL
        )


def _one_hot(mask: np.ndarray):
    import torch
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


@pytest.mark.parametrize("name", ["small-3d-iso", "large-3d-thick-slices", "spheres-3d-aniso", "large-2d-aniso"])
def test_voxel_mode_matches_monai_hausdorff_assd_and_surface_dice(name):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, gt, spacing = _case(name)
    tolerance = 1.0 + 1.0 / np.e
    settings = MetricSettings(surface="voxel", tolerance_mm=tolerance)
    got = {r.metric: r.value
           for r in compare_masks(pred, gt, spacing, metrics=("hd", "hd95", "assd", "nsd"), settings=settings)}
    y_pred, y = _one_hot(pred), _one_hot(gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(y_pred, y, include_background=False, spacing=spacing).item()
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing).item()
        asd = compute_average_surface_distance(y_pred, y, include_background=False, symmetric=True,
                                               spacing=spacing).item()
        surface_dice = compute_surface_dice(
            y_pred, y, class_thresholds=[tolerance], include_background=False, spacing=spacing
        ).item()
    assert got["hd"] == pytest.approx(hd, rel=1e-5)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert got["assd"] == pytest.approx(asd, rel=1e-5)
    assert got["nsd"] == pytest.approx(surface_dice, rel=1e-5)


# --------------------------------------------------------------------------------------------
# analytic cases


def _shift(mask: np.ndarray, axis: int, k: int) -> np.ndarray:
    out = np.zeros_like(mask)
    src = [slice(None)] * mask.ndim
    dst = [slice(None)] * mask.ndim
    src[axis], dst[axis] = slice(0, mask.shape[axis] - k), slice(k, None)
    out[tuple(dst)] = mask[tuple(src)]
    assert out.sum() == mask.sum(), "shift must not push voxels out of the image"
    return out


@pytest.mark.parametrize("mode", ["surfel", "voxel"])
@pytest.mark.parametrize(
    "spacing, axis, k",
    [((0.5, 0.5, 5.0), 2, 1), ((0.5, 0.5, 5.0), 0, 3), ((5.0, 5.0, 0.2), 2, 7), ((0.8, 1.7, 2.2), 1, 4)],
)
def test_blob_translated_along_one_axis_has_hausdorff_k_times_spacing(mode, spacing, axis, k, search_path):
    """For any shape and its copy translated by k voxels along one axis, both directed Hausdorff
    distances are exactly k * spacing[axis] (every point maps onto its translate; the extreme point
    along the axis has nothing closer)."""
    rng = np.random.default_rng(100 + k)
    shape = (36, 38, 40)
    gt = np.zeros(shape, dtype=bool)
    inner = tuple(slice(8, s - 8) for s in shape)
    gt[inner] = _blob(rng, tuple(s - 16 for s in shape), 2.0, 0.35)
    pred = _shift(gt, axis, k)
    for path in PATHS:
        search_path(path)
        sd = surface_distances(pred, gt, spacing, mode=mode)
        assert sd.gt_to_pred[-1] == pytest.approx(k * spacing[axis], rel=1e-12)
        assert sd.pred_to_gt[-1] == pytest.approx(k * spacing[axis], rel=1e-12)
        assert hausdorff(sd, 100) == pytest.approx(k * spacing[axis], rel=1e-12)
        assert nsd(sd, k * spacing[axis] * 1.000001) == 1.0


def test_far_apart_spheres_hausdorff_is_the_translation_and_minimum_is_the_gap():
    """A voxelised sphere and its copy shifted by k voxels along z: HD = k * s_z and the closest
    surface points are the facing poles, (k - extent) * s_z apart, extent measured in corners."""
    spacing = (0.9, 0.9, 1.1)
    shape = (46, 46, 150)
    gt = _ball_mm(shape, spacing, (20.7, 20.7, 24.2), 18.0)
    k = 90
    pred = _shift(gt, 2, k)
    extent = np.ptp(np.flatnonzero(gt.any(axis=(0, 1)))) + 1  # voxels along z
    sd = surface_distances(pred, gt, spacing)
    assert extract_surface(gt, spacing).size >= surface_module._MIN_POINTS_FOR_RING_SEARCH
    assert hausdorff(sd, 100) == pytest.approx(k * spacing[2], rel=1e-12)
    assert sd.gt_to_pred[0] == pytest.approx((k - extent) * spacing[2], rel=1e-12)
    assert sd.pred_to_gt[0] == pytest.approx((k - extent) * spacing[2], rel=1e-12)


@pytest.mark.parametrize("mode", ["surfel", "voxel"])
def test_concentric_cubes_hausdorff_is_corner_to_corner_distance(mode):
    """GT cube of side 10 voxels around a prediction cube of side 6 (2-voxel margin): the farthest
    GT point is a cube vertex, 2 voxels away along every axis from the nearest prediction vertex."""
    spacing = np.array([0.5, 1.5, 2.0])
    gt = np.zeros((14, 14, 14), dtype=bool)
    gt[2:12, 2:12, 2:12] = True
    pred = np.zeros_like(gt)
    pred[4:10, 4:10, 4:10] = True
    sd = surface_distances(pred, gt, spacing, mode=mode)
    assert hausdorff(sd, 100) == pytest.approx(2 * np.linalg.norm(spacing), rel=1e-12)
    assert sd.gt_to_pred[-1] == pytest.approx(2 * np.linalg.norm(spacing), rel=1e-12)
    # every prediction surface point is at least 2 voxels from the GT surface along every axis;
    # the faces normal to the thinnest axis attain it
    assert sd.pred_to_gt[0] == pytest.approx(2 * spacing.min(), rel=1e-12)


@pytest.mark.parametrize("mode", ["surfel", "voxel"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_identical_masks_have_zero_distances_and_full_nsd(mode, ndim):
    rng = np.random.default_rng(7)
    shape = (90, 70) if ndim == 2 else (30, 26, 34)
    mask = _blob(rng, shape, 1.5, 0.3)
    spacing = (0.7, 3.0, 1.1)[:ndim]
    sd = surface_distances(mask, mask.copy(), spacing, mode=mode)
    assert sd.gt_to_pred.size > 0
    assert np.all(sd.gt_to_pred == 0) and np.all(sd.pred_to_gt == 0)
    got = {r.metric: r.value
           for r in compare_masks(mask, mask, spacing, settings=MetricSettings(surface=mode, tolerance_mm=0.0))}
    for name in ("hd", "hd95", "assd", "masd"):
        assert got[name] == 0.0, name
    assert got["nsd"] == 1.0
    assert got["dice"] == 1.0 and got["iou"] == 1.0


def test_nsd_is_monotone_in_tolerance_and_reaches_one_at_the_hausdorff_distance():
    pred, gt, spacing = _case("large-3d-oblique")
    sd = surface_distances(pred, gt, spacing)
    tolerances = np.linspace(0.0, hausdorff(sd, 100) * 1.2, 40)
    values = np.array([nsd(sd, t) for t in tolerances])
    assert np.all(np.diff(values) >= 0)
    assert values[0] < 0.5 < values[-1]
    assert nsd(sd, hausdorff(sd, 100)) == 1.0
    assert nsd(sd, 0.999 * hausdorff(sd, 100)) < 1.0


def test_hd95_with_percentile_100_equals_hd():
    pred, gt, spacing = _case("spheres-3d-aniso")
    got = compare_masks(pred, gt, spacing, metrics=("hd", "hd95"), settings=MetricSettings(percentile=100.0))
    assert got[0].value == got[1].value > 0


def test_inputs_are_not_modified_and_nonbool_inputs_are_accepted():
    pred, gt, spacing = _case("small-3d-iso")
    p8, g8 = pred.astype(np.uint8) * 3, gt.astype(np.float32)
    before = (p8.copy(), g8.copy())
    a = compare_masks(p8, g8, spacing)
    b = compare_masks(pred, gt, spacing)
    assert [r.value for r in a] == pytest.approx([r.value for r in b], nan_ok=True)
    np.testing.assert_array_equal(p8, before[0])
    np.testing.assert_array_equal(g8, before[1])


@pytest.mark.parametrize(
    "pred_shape, gt_shape, spacing",
    [((4, 4, 4), (4, 4, 5), (1, 1, 1)), ((4, 4, 4), (4, 4, 4), (1, 1)), ((4, 4), (4, 4), (1, 0)),
     ((4, 4), (4, 4), (1, np.nan))],
)
def test_bad_shapes_and_spacings_raise(pred_shape, gt_shape, spacing):
    with pytest.raises(ValueError):
        surface_distances(np.ones(pred_shape, bool), np.ones(gt_shape, bool), spacing)


@pytest.mark.parametrize("position", range(1, 9))
def test_nsd_at_a_tolerance_of_exactly_one_voxel_step_does_not_depend_on_position(position):
    """Two 3x3 plates one step apart along an axis of 1.2 mm spacing, tolerance 1.2 mm: every
    surface element is exactly one step from the other surface, wherever the plates sit (distances
    come from integer grid offsets times the spacing, as DeepMind's distance transform gives them;
    differences of mm coordinates would be 1.2 +- 1 ulp and flip the comparison by position)."""
    import surface_distance as sdlib

    spacing = (1.5, 1.2, 3.0)
    gt = np.zeros((6, 14, 6), dtype=bool)
    pred = np.zeros_like(gt)
    gt[1:4, position, 1:4] = True
    pred[1:4, position + 1, 1:4] = True
    reference = sdlib.compute_surface_dice_at_tolerance(sdlib.compute_surface_distances(gt, pred, spacing), 1.2)
    for mode in ("surfel", "voxel"):
        (r,) = compare_masks(pred, gt, spacing, metrics=("nsd",), settings=MetricSettings(surface=mode,
                                                                                          tolerance_mm=1.2))
        expected = reference if mode == "surfel" else 1.0  # voxel surfaces: every voxel one step away
        assert r.value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1e3, 1e9])
def test_distances_scale_with_spacing_down_to_a_femtometre_and_up_to_a_thousand_km(scale):
    """Once: spacing 1e154 mm raised an IndexError and 1e-170 mm gave HD95 0 (squared distances
    overflowed / underflowed); spacings within the supported range scale the result exactly, and
    those beyond it are refused in one line."""
    from segqc.metrics import hd95

    diagonal = np.eye(20, dtype=bool)
    unit = hd95(diagonal, diagonal[::-1], (1.0, 1.0)).value
    assert unit > 10
    assert hd95(diagonal, diagonal[::-1], (scale, scale)).value == pytest.approx(unit * scale, rel=1e-9)
    for extreme in (1e-170, 1e154):
        with pytest.raises(ValueError, match="mm is outside"):
            hd95(diagonal, diagonal[::-1], (extreme, extreme))
