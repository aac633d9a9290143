"""Region z limits on a grid whose z of slice k is ``origin_z + k * spacing_z``, every expected
limit computed by hand from the voxel heights below."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.anatomy.regions import parse_regions, region_limits
from segqc.anatomy.scheme import LabelClass, LabelScheme
from segqc.io.geometry import Geometry

SCHEME = LabelScheme(name="toy", classes=(LabelClass("sacrum", 1), LabelClass("t10", 2), LabelClass("liver", 3)))
# z of slice k: -10 + 2.5 k  (slice 2: -5, slice 6: 5, slice 15: 27.5, slice 16: 30)
GEOMETRY = Geometry(shape=(4, 4, 20), spacing=(1.0, 1.0, 2.5), origin=(0.0, 0.0, -10.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _labels(sacrum: bool = True, t10: bool = True) -> np.ndarray:
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    if sacrum:
        labels[1:3, 1:3, 2] = 1  # 4 voxels at z -5
        labels[1, 1, 6] = 1  # 1 voxel at z 5: mean height (4 * -5 + 5) / 5 = -3, midpoint of the range 0
    if t10:
        labels[0:2, 0:2, 15:17] = 2  # z 27.5 and 30
    labels[3, 3, 8:12] = 3  # not a landmark
    return labels


def test_default_ends_and_margins_widen_the_slab_on_both_sides() -> None:
    """Without ``at`` the inferior end is the landmark's lowest point and the superior end its
    highest; a positive margin moves each end outwards: (-5 - 3, 30 + 4)."""
    regions = parse_regions({"abdomen": {"inferior": {"landmark": "sacrum", "margin_mm": 3},
                                         "superior": {"landmark": "t10", "margin_mm": 4}}}, SCHEME)
    assert region_limits(regions["abdomen"], _labels(), GEOMETRY, SCHEME) == pytest.approx((-8.0, 34.0))


def test_the_centre_of_a_landmark_is_the_mean_height_of_its_voxels() -> None:
    """Four voxels at -5 and one at 5: mean -3 (the middle of the lowest and highest would be 0)."""
    regions = parse_regions({"r": {"inferior": {"landmark": "sacrum", "at": "centre"}}}, SCHEME)
    assert region_limits(regions["r"], _labels(), GEOMETRY, SCHEME) == pytest.approx((-3.0, np.inf))


def test_an_absent_landmark_opens_its_end_and_a_region_without_landmarks_is_unknown() -> None:
    regions = parse_regions({"abdomen": {"inferior": {"landmark": "sacrum"}, "superior": {"landmark": "t10"}},
                             "open": {}}, SCHEME)
    assert region_limits(regions["abdomen"], _labels(sacrum=False), GEOMETRY, SCHEME) == pytest.approx((-np.inf, 30.0))
    assert region_limits(regions["abdomen"], _labels(t10=False), GEOMETRY, SCHEME) == pytest.approx((-5.0, np.inf))
    assert region_limits(regions["abdomen"], _labels(sacrum=False, t10=False), GEOMETRY, SCHEME) is None
    # a region without bounds restricts nothing, whatever the map holds
    assert region_limits(regions["open"], _labels(sacrum=False, t10=False), GEOMETRY, SCHEME) == (-np.inf, np.inf)
