"""Boundary IoU, centreline Dice and centre-of-mass distance (segqc.metrics.shape).

References used here, all independent of the module's code path:

* hand-counted boundary bands and IoUs of squares, cubes and shifted copies (counts in comments),
* brute-force bands: for every mask voxel, the minimum Euclidean distance in mm to an explicit list
  of outside voxel centres (``"distance"``) or of border voxels found by checking face neighbours
  (``"metricsreloaded"``), computed with ``scipy.spatial.distance.cdist`` on the full zero-padded
  volume (no distance transform, no cropping),
* thinning facts that follow from the algorithms' deletion rules (a one-voxel line is a fixed
  point) and symmetry arguments for thick tubes,
* the MetricsReloaded cases and expected numbers, transcribed from its
  ``test/test_metrics/test_pairwise_measures.py`` (``test_boundary_iou``, ``test_cldsc``,
  ``test_com_dist``), with the exact values derived by hand next to them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from segqc.metrics.shape import (
    BoundaryDefinition,
    boundary_band,
    boundary_iou,
    centre_of_mass_mm,
    cl_dice,
    com_distance,
    skeleton,
    topology_precision_sensitivity,
)

DEFINITIONS: tuple[BoundaryDefinition, ...] = ("distance", "metricsreloaded")


# --------------------------------------------------------------------------------------------
# Shapes and brute-force references


def _box(shape, start, size) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return m


def _blob(rng: np.random.Generator, shape, sigma: float = 1.5, fraction: float = 0.35) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 1.0 - fraction)


def _coords_mm(mask: np.ndarray, spacing) -> np.ndarray:
    return np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)


def _brute_band_distance(mask: np.ndarray, spacing, width_mm: float) -> np.ndarray:
    """Mask voxels whose centre is within width_mm (<=) of the centre of an outside voxel; the
    array is padded with one layer of outside voxels (image border = background)."""
    padded = np.pad(mask, 1)
    outside = _coords_mm(~padded, spacing)
    inside_idx = np.argwhere(padded)
    d = cdist(inside_idx * np.asarray(spacing, dtype=np.float64), outside).min(axis=1)
    band = np.zeros_like(padded)
    keep = inside_idx[d <= width_mm + 1e-9]
    band[tuple(keep.T)] = True
    return band[(slice(1, -1),) * mask.ndim]


def _brute_band_mr(mask: np.ndarray, spacing, width_mm: float) -> np.ndarray:
    """MetricsReloaded's band from its definition: border = mask voxels with a face neighbour
    outside (or beyond the array edge); band = mask voxels at distance < width_mm from a border voxel."""
    padded = np.pad(mask, 1)
    border = np.zeros_like(padded)
    for axis in range(padded.ndim):
        for step in (-1, 1):
            border |= padded & ~np.roll(padded, step, axis=axis)  # roll wraps only into the zero pad
    inside_idx = np.argwhere(padded)
    d = cdist(inside_idx * np.asarray(spacing, dtype=np.float64), _coords_mm(border, spacing)).min(axis=1)
    band = np.zeros_like(padded)
    keep = inside_idx[d < width_mm - 1e-9]
    band[tuple(keep.T)] = True
    return band[(slice(1, -1),) * mask.ndim]


def _brute_biou(pred, gt, spacing, width_mm, definition: str) -> float:
    brute = _brute_band_distance if definition == "distance" else _brute_band_mr
    pb = brute(pred, spacing, width_mm)
    gb = brute(gt, spacing, width_mm)
    return np.count_nonzero(pb & gb) / np.count_nonzero(pb | gb)


# --------------------------------------------------------------------------------------------
# Boundary IoU: hand-counted cases


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_band_of_a_square_is_counted_by_hand(definition):
    sq = _box((16, 16), (3, 3), (10, 10))
    # width 1: the one-voxel ring, 100 - 8*8 = 36; width 2: 100 - 6*6 = 64; width 4: 100 - 2*2 = 96
    assert np.count_nonzero(boundary_band(sq, (1, 1), 1.0, definition=definition)) == 36
    assert np.count_nonzero(boundary_band(sq, (1, 1), 2.0, definition=definition)) == 64
    assert np.count_nonzero(boundary_band(sq, (1, 1), 4.0, definition=definition)) == 96
    # non-integer widths: a voxel k deep is k voxels from the outside but k - 1 from the border, so
    # "distance" keeps depth <= 4.9 (96) while MetricsReloaded's "< 4.9 from the border" keeps depth 5 too
    expected = 96 if definition == "distance" else 100
    assert np.count_nonzero(boundary_band(sq, (1, 1), 4.9, definition=definition)) == expected
    # ring = mask minus its interior
    ring = sq & ~_box((16, 16), (4, 4), (8, 8))
    assert np.array_equal(boundary_band(sq, (1, 1), 1.0, definition=definition), ring)


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_boundary_iou_of_squares_shifted_by_one_voxel(definition):
    gt = _box((16, 16), (3, 3), (10, 10))
    pred = _box((16, 16), (4, 3), (10, 10))  # one row down
    # width 1: rings of 36. Shared: row 4 (gt side voxels, 2), row 12 (pred side voxels, 2) and the
    # two side columns on rows 5..11 (7 x 2 = 14) -> 18; union 72 - 18 = 54 -> 1/3.
    assert boundary_iou(pred, gt, (1, 1), 1.0, definition=definition) == pytest.approx(18 / 54, abs=1e-15)
    # width 2: bands of 64. gt rows 3,4,11,12 full and 4 side voxels on rows 5..10; pred rows 4,5,12,13
    # full and 4 side voxels on rows 6..11. Shared: row 4: 10, row 5: 4, rows 6..10: 5 x 4, row 11: 4,
    # row 12: 10 -> 48; union 128 - 48 = 80 -> 0.6.
    assert boundary_iou(pred, gt, (1, 1), 2.0, definition=definition) == pytest.approx(48 / 80, abs=1e-15)


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_boundary_iou_of_cubes_shifted_by_one_voxel_in_mm(definition):
    gt = _box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    pred = _box((10, 10, 10), (3, 2, 2), (6, 6, 6))
    # width = one voxel: shells of 216 - 64 = 152. Along axis 0 gt has full 6x6 faces at slices 2 and
    # 7 and 20-voxel rings on 3..6; pred faces at 3 and 8, rings on 4..7. Shared: slice 3 (ring of gt
    # in pred's face) 20, slices 4..6 ring/ring 3 x 20, slice 7: 20 -> 100; union 304 - 100 = 204.
    expected = 100 / 204
    assert boundary_iou(pred, gt, (1, 1, 1), 1.0, definition=definition) == pytest.approx(expected, abs=1e-15)
    # the same in mm: 2 mm voxels with a 2 mm band (a width taken in voxels would be two voxels deep)
    assert boundary_iou(pred, gt, (2, 2, 2), 2.0, definition=definition) == pytest.approx(expected, abs=1e-15)
    # 0.5 mm voxels, 1.5 mm = 3 voxels: bands 216 - 0 = 216 (the cube is 6 deep) -> plain IoU 180/252
    assert boundary_iou(pred, gt, (0.5, 0.5, 0.5), 1.5, definition=definition) == pytest.approx(180 / 252)


def test_anisotropic_spacing_changes_the_band_as_expected():
    sq = _box((16, 16), (3, 3), (10, 10))
    # spacing (1, 3): a voxel at depth k0 from a top/bottom face is k0 mm inside, at depth k1 from a
    # left/right face 3*k1 mm inside; dt = min(k0, 3 k1).
    band = boundary_band(sq, (1, 3), 1.0)
    assert np.count_nonzero(band) == 20  # only rows 3 and 12
    assert band[3].sum() == 10 and band[12].sum() == 10
    assert np.count_nonzero(boundary_band(sq, (1, 3), 2.9)) == 40  # rows at depth 1..2 on both faces
    # width 3: rows at depth <= 3 (6 rows, 60) plus the outer columns of the 4 middle rows (8) -> 68
    assert np.count_nonzero(boundary_band(sq, (1, 3), 3.0)) == 68
    assert np.count_nonzero(boundary_band(sq, (3, 1), 1.0)) == 20  # transposed: only the columns
    # floating point: 3 * 0.1 mm != 0.3 mm, yet a voxel three 0.1 mm steps deep is within 0.3 mm
    assert np.count_nonzero(boundary_band(sq, (0.1, 0.1), 0.3)) == 100 - 4 * 4


def test_anisotropic_boundary_iou_counted_by_hand():
    gt = _box((16, 16), (3, 3), (10, 10))
    pred = _box((16, 16), (3, 4), (10, 10))  # one column right
    # spacing (1, 3), width 1 mm: bands are rows 3 and 12 only (10 voxels each); shifted by one
    # column each row shares 9 -> 18 / (40 - 18) = 9/11
    assert boundary_iou(pred, gt, (1, 3), 1.0) == pytest.approx(18 / 22, abs=1e-15)
    # isotropic it is the ring case: 1/3
    assert boundary_iou(pred, gt, (1, 1), 1.0) == pytest.approx(1 / 3, abs=1e-15)


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_width_beyond_the_objects_gives_the_plain_iou(definition):
    rng = np.random.default_rng(3)
    for shape, spacing in (((20, 24), (0.7, 1.3)), ((12, 14, 16), (2.0, 0.6, 1.1))):
        pred = _blob(rng, shape)
        gt = _blob(rng, shape)
        iou = np.count_nonzero(pred & gt) / np.count_nonzero(pred | gt)
        for width in (1e4, math.inf):
            assert boundary_iou(pred, gt, spacing, width, definition=definition) == pytest.approx(iou, abs=1e-15)


def test_metricsreloaded_case_test_boundary_iou():
    # MetricsReloaded test_pairwise_measures.py::test_boundary_iou (expected 0.6 with atol 0.1 and
    # np.round(value, 1) == 0.6), default boundary_dist=1. By hand: gt ring (19x19) 72 voxels, pred
    # ring (18x19) 70, shared: row 20 (19) + columns 2 and 20 on rows 3..19 (34) = 53;
    # union 72 + 70 - 53 = 89 -> 53/89 = 0.5955.
    f21_ref = np.zeros([22, 22])
    f21_ref[2:21, 2:21] = 1
    f21_pred = np.zeros([22, 22])
    f21_pred[3:21, 2:21] = 1
    for definition in DEFINITIONS:
        value = boundary_iou(f21_pred, f21_ref, (1, 1), 1.0, definition=definition)
        assert value == pytest.approx(53 / 89, abs=1e-15)
        assert np.round(value, 1) == 0.6


# --------------------------------------------------------------------------------------------
# Boundary IoU: brute-force references, cropping, the two definitions


@pytest.mark.parametrize("definition", DEFINITIONS)
@pytest.mark.parametrize(
    "shape,spacing",
    [((18, 21), (1.0, 1.0)), ((18, 21), (0.6, 1.7)), ((9, 11, 10), (1.0, 1.0, 1.0)), ((9, 11, 10), (2.5, 0.8, 1.2))],
)
def test_boundary_iou_matches_brute_force_on_the_full_volume(definition, shape, spacing):
    rng = np.random.default_rng(sum(shape))
    for trial in range(4):
        pred = _blob(rng, shape)
        gt = _blob(rng, shape)
        if trial % 2 == 0:  # touch the image border: it must count as background
            pred[0] |= pred[1]
            gt[:, -1] |= gt[:, -2]
        for width in (min(spacing), 1.0, 1.9, 2.5, 3.4):
            got = boundary_iou(pred, gt, spacing, width, definition=definition)
            want = _brute_biou(pred, gt, spacing, width, definition)
            assert got == pytest.approx(want, abs=1e-12), (trial, width)
            brute = _brute_band_distance if definition == "distance" else _brute_band_mr
            assert np.array_equal(boundary_band(pred, spacing, width, definition=definition),
                                  brute(pred, spacing, width))


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_cropping_to_the_bounding_box_equals_the_full_volume(definition):
    rng = np.random.default_rng(11)
    small_p = _blob(rng, (10, 12, 9))
    small_g = _blob(rng, (10, 12, 9))
    spacing = (1.5, 0.7, 1.0)
    ref = _brute_biou(small_p, small_g, spacing, 2.2, definition)
    # the same objects at the corner of, and inside, much larger volumes
    for offset in ((0, 0, 0), (7, 3, 11), (30, 28, 31)):
        big_p = np.zeros((40, 40, 40), dtype=bool)
        big_g = np.zeros((40, 40, 40), dtype=bool)
        sl = tuple(slice(o, o + n) for o, n in zip(offset, small_p.shape))
        big_p[sl] = small_p
        big_g[sl] = small_g
        assert boundary_iou(big_p, big_g, spacing, 2.2, definition=definition) == pytest.approx(ref, abs=1e-12)


def test_the_definitions_agree_at_one_voxel_and_differ_at_a_concave_corner():
    rng = np.random.default_rng(5)
    for shape in ((20, 22), (10, 12, 11)):
        for _ in range(3):
            p = _blob(rng, shape)
            g = _blob(rng, shape)
            sp = (1.0,) * len(shape)
            assert boundary_iou(p, g, sp, 1.0) == boundary_iou(p, g, sp, 1.0, definition="metricsreloaded")
            # and at an isotropic spacing s with width s
            s2 = (0.8,) * len(shape)
            assert boundary_iou(p, g, s2, 0.8) == boundary_iou(p, g, s2, 0.8, definition="metricsreloaded")
    # An L shape: 8x8 square minus its 4x4 top-left quarter. Its concave corner is the outside voxel
    # (5, 5). Voxel (6, 7) is sqrt(1 + 4) = 2.24 voxels from it (outside a 2-voxel "distance" band)
    # but sqrt(2) from the border voxel (5, 6) (inside MetricsReloaded's band for boundary_dist=2).
    ell = _box((12, 12), (2, 2), (8, 8)) & ~_box((12, 12), (2, 2), (4, 4))
    a = boundary_band(ell, (1, 1), 2.0)
    b = boundary_band(ell, (1, 1), 2.0, definition="metricsreloaded")
    assert sorted(map(tuple, np.argwhere(a != b).tolist())) == [(6, 7), (7, 6)]
    assert b[6, 7] and not a[6, 7]


# --------------------------------------------------------------------------------------------
# Centreline Dice


def test_metricsreloaded_case_test_cldsc():
    # MetricsReloaded test_pairwise_measures.py::test_cldsc (expected 0.86 and 0.67, atol 0.01).
    # By hand (Zhang thinning): the 5-pixel L of ref loses its corner pixel (3, 1) (its two
    # neighbours stay 8-connected), S(ref) = {(1,1), (2,1), (3,2), (3,3)}; likewise S(pred1) =
    # {(2,1), (3,2), (3,3)}; the straight 3-pixel pred2 is its own skeleton.
    # pred1: Tprec = 3/3, Tsens = 3/4 -> 2 * 0.75 / 1.75 = 6/7. pred2: Tprec = 1, Tsens = 2/4 -> 2/3.
    ref_small = np.zeros((14, 14))
    ref_small[1:4, 1:2] = 1
    ref_small[3:4, 1:4] = 1
    pred_small1 = np.zeros((14, 14))
    pred_small1[2:4, 1:2] = 1
    pred_small1[3:4, 1:4] = 1
    pred_small2 = np.zeros((14, 14))
    pred_small2[3:4, 1:4] = 1
    assert cl_dice(pred_small1, ref_small) == pytest.approx(6 / 7, abs=1e-15)
    assert cl_dice(pred_small2, ref_small) == pytest.approx(2 / 3, abs=1e-15)
    assert topology_precision_sensitivity(pred_small1, ref_small) == (1.0, 0.75)
    assert abs(cl_dice(pred_small1, ref_small) - 0.86) <= 0.01
    assert abs(cl_dice(pred_small2, ref_small) - 0.67) <= 0.01


@pytest.mark.parametrize("ndim", [2, 3])
def test_one_voxel_line_against_its_first_half(ndim):
    # A one-voxel-wide straight line is a fixed point of thinning (end voxels have one neighbour,
    # inner voxels two that are not adjacent to each other: deleting any would break the line).
    shape = (5, 30) if ndim == 2 else (5, 5, 30)
    gt = np.zeros(shape, dtype=bool)
    gt[(2,) * (ndim - 1) + (slice(5, 25),)] = True
    half = np.zeros(shape, dtype=bool)
    half[..., 5:15] = gt[..., 5:15]
    assert np.array_equal(skeleton(gt), gt)
    assert np.array_equal(skeleton(half), half)
    assert cl_dice(gt, gt) == 1.0
    # pred = first half: every predicted centreline voxel is in gt (Tprec 1), half of gt's is in pred
    assert topology_precision_sensitivity(half, gt) == (1.0, 0.5)
    assert topology_precision_sensitivity(gt, half) == (0.5, 1.0)
    assert cl_dice(half, gt) == pytest.approx(2 / 3, abs=1e-15)
    assert cl_dice(gt, half) == pytest.approx(2 / 3, abs=1e-15)
    # a parallel line one voxel away shares nothing
    beside = np.roll(gt, 1, axis=0)
    assert cl_dice(beside, gt) == 0.0


def test_thick_3d_tube_against_its_first_half():
    # 3x3 tube along axis 2 over z = 3..22. By symmetry its skeleton is the central line over
    # z = 3+t .. 22-t for some trim t; the first half (z = 3..12) then holds 10 - t of its 20 - 2t
    # voxels (Tsens = 1/2 whatever t is), and the half tube's own skeleton lies inside gt (Tprec = 1).
    gt = np.zeros((7, 7, 26), dtype=bool)
    gt[2:5, 2:5, 3:23] = True
    half = np.zeros_like(gt)
    half[2:5, 2:5, 3:13] = True
    sg = skeleton(gt)
    assert np.count_nonzero(sg) > 0
    assert np.array_equal(np.unique(np.argwhere(sg)[:, :2], axis=0), [[3, 3]])  # on the axis
    z = np.argwhere(sg)[:, 2]
    assert z.min() - 3 == 22 - z.max()  # symmetric trim (the premise of the 1/2 above)
    assert cl_dice(gt, gt) == 1.0
    assert topology_precision_sensitivity(half, gt) == (1.0, 0.5)
    assert cl_dice(half, gt) == pytest.approx(2 / 3, abs=1e-15)


def test_thick_2d_tube_against_itself_and_a_disjoint_tube():
    tube = _box((12, 40), (3, 4), (5, 30))
    assert cl_dice(tube, tube) == 1.0
    other = _box((12, 40), (3, 4), (5, 30))
    other[3:8] = False
    other[9:12, 4:34] = True
    assert cl_dice(other, tube) == 0.0


def test_a_mask_whose_skeleton_is_empty_is_its_own_skeleton():
    from skimage.morphology import skeletonize

    cube = _box((8, 8, 8), (3, 3, 3), (2, 2, 2))
    assert not skeletonize(cube).any()  # Lee's 3D thinning removes a 2x2x2 cube entirely
    assert np.array_equal(skeleton(cube), cube)
    assert cl_dice(cube, cube) == 1.0
    big = _box((8, 8, 8), (1, 1, 1), (6, 6, 6))
    tprec, tsens = topology_precision_sensitivity(cube, big)
    assert tprec == 1.0  # the cube (its own skeleton) lies inside big
    # single voxels (2D and 3D) are kept by thinning
    for shape in ((5, 5), (5, 5, 5)):
        dot = np.zeros(shape, dtype=bool)
        dot[(2,) * len(shape)] = True
        assert np.array_equal(skeleton(dot), dot)
        assert cl_dice(dot, dot) == 1.0


def test_skeleton_on_the_bounding_box_equals_the_full_volume():
    from skimage.morphology import skeletonize

    rng = np.random.default_rng(2)
    for shape in ((30, 34), (18, 20, 22)):
        for trial in range(3):
            m = _blob(rng, shape, sigma=2.0, fraction=0.3)
            if trial == 0:
                m[0] |= m[1]  # touch the image border
            assert np.array_equal(skeleton(m), skeletonize(m))


# --------------------------------------------------------------------------------------------
# Centre of mass


def _ellipse(shape, centre, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def test_com_distance_of_disks_with_known_centres_and_anisotropic_spacing():
    # Disks symmetric about integer centres have their centroid exactly there.
    spacing = (0.5, 2.0)
    a = _ellipse((40, 30), (10, 12), (6, 1.6))  # about 3 mm radius: 6 and 1.6 voxels
    b = _ellipse((40, 30), (20, 5), (6, 1.6))
    assert np.allclose(centre_of_mass_mm(a, spacing), (5.0, 24.0))
    # (20 - 10) * 0.5 = 5 mm and (5 - 12) * 2 = -14 mm -> sqrt(25 + 196)
    assert com_distance(a, b, spacing) == pytest.approx(math.sqrt(221.0), abs=1e-12)
    assert com_distance(b, a, spacing) == pytest.approx(math.sqrt(221.0), abs=1e-12)


def test_com_distance_of_balls_in_3d():
    spacing = (2.5, 0.8, 1.0)
    a = _ellipse((20, 24, 26), (8, 10, 12), (3, 4, 3.5))
    b = _ellipse((20, 24, 26), (12, 7, 12), (2, 5, 4))
    # (4 * 2.5)^2 + (3 * 0.8)^2 = 100 + 5.76
    assert com_distance(a, b, spacing) == pytest.approx(math.sqrt(105.76), abs=1e-12)


def test_centre_of_mass_of_irregular_masks_matches_scipy():
    rng = np.random.default_rng(9)
    spacing = (1.2, 0.4, 3.0)
    p = _blob(rng, (14, 17, 9))
    g = _blob(rng, (14, 17, 9))
    cp = np.asarray(ndimage.center_of_mass(p)) * spacing
    cg = np.asarray(ndimage.center_of_mass(g)) * spacing
    assert np.allclose(centre_of_mass_mm(p, spacing), cp, rtol=0, atol=1e-12)
    assert com_distance(p, g, spacing) == pytest.approx(float(np.linalg.norm(cp - cg)), abs=1e-12)


def test_metricsreloaded_case_test_com_dist():
    # MetricsReloaded test_pairwise_measures.py::test_com_dist: identical 5x5 squares at the origin,
    # centre (2, 2), distance 0 (its com_dist uses pixdim, here unit spacing).
    pred = np.zeros([14, 14])
    ref = np.zeros([14, 14])
    pred[0:5, 0:5] = 1
    ref[0:5, 0:5] = 1
    assert com_distance(pred, ref, (1, 1)) == 0.0
    assert np.array_equal(centre_of_mass_mm(pred, (1, 1)), [2.0, 2.0])
    # and one voxel along axis 1 with 0.7 mm columns: 0.7 mm
    assert com_distance(np.roll(pred, 1, axis=1), ref, (3.0, 0.7)) == pytest.approx(0.7, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Misuse


def _calls(pred, gt):
    return [
        lambda: boundary_iou(pred, gt, (1.0,) * pred.ndim, 1.0),
        lambda: boundary_iou(pred, gt, (1.0,) * pred.ndim, 1.0, definition="metricsreloaded"),
        lambda: cl_dice(pred, gt),
        lambda: topology_precision_sensitivity(pred, gt),
        lambda: com_distance(pred, gt, (1.0,) * pred.ndim),
    ]


@pytest.mark.parametrize("which", ["pred", "gt", "both"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_input_raises(which, ndim):
    full = _box((6,) * ndim, (1,) * ndim, (3,) * ndim)
    empty = np.zeros_like(full)
    pred = empty if which in ("pred", "both") else full
    gt = empty if which in ("gt", "both") else full
    for call in _calls(pred, gt):
        with pytest.raises(ValueError, match="empty"):
            call()
    with pytest.raises(ValueError, match="empty"):
        centre_of_mass_mm(empty, (1.0,) * ndim)


def test_bad_arguments_raise():
    a = _box((8, 8), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        boundary_iou(a, np.ones((8, 9), bool), (1, 1), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        boundary_iou(a, a, (1, 1, 1), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        com_distance(a, a, (1, 0))
    for width in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="width_mm"):
            boundary_iou(a, a, (1, 1), width)
    with pytest.raises(ValueError, match="definition"):
        boundary_iou(a, a, (1, 1), 1.0, definition="cheng")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2D or 3D"):
        cl_dice(np.ones(5, bool), np.ones(5, bool))


def test_inputs_are_not_modified_and_non_bool_masks_are_accepted():
    rng = np.random.default_rng(4)
    p = _blob(rng, (12, 13)).astype(np.uint8) * 3
    g = _blob(rng, (12, 13)).astype(np.float32)
    p0, g0 = p.copy(), g.copy()
    assert boundary_iou(p, g, (1, 1), 2.0) == boundary_iou(p != 0, g != 0, (1, 1), 2.0)
    assert cl_dice(p, g) == cl_dice(p != 0, g != 0)
    assert com_distance(p, g, (1, 2)) == com_distance(p != 0, g != 0, (1, 2))
    assert np.array_equal(p, p0) and np.array_equal(g, g0)


def test_a_distance_band_narrower_than_every_spacing_is_refused_not_divided_by_zero():
    """At ACDC's 1.5625 mm in-plane spacing the default 1 mm band held no voxel of either mask and
    boundary IoU divided 0 by 0 (a ZeroDivisionError out of `segqc evaluate`)."""
    from segqc.metrics.binary import compare_masks

    gt = _box((16, 16), (3, 3), (10, 10))
    pred = _box((16, 16), (3, 4), (10, 10))
    with pytest.raises(ValueError, match=r"width_mm 1 is below the smallest voxel spacing 1\.2 mm"):
        boundary_iou(pred, gt, (1.2, 1.2), 1.0)
    with pytest.raises(ValueError, match="width_mm"):
        compare_masks(pred, gt, (1.2, 1.2), metrics=("boundary_iou",))
    # at the smallest spacing the band is the contour layer along that axis: rows 3 and 12 (10 each)
    assert np.count_nonzero(boundary_band(gt, (1.2, 3.0), 1.2)) == 20
    assert boundary_iou(pred, gt, (1.2, 3.0), 1.2) == pytest.approx(18 / 22, abs=1e-15)
    # MetricsReloaded's band always holds the contour layer: defined at any width
    assert boundary_iou(pred, gt, (1.2, 1.2), 1.0, definition="metricsreloaded") == pytest.approx(1 / 3)
