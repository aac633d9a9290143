"""Boundary bands at exactly the width tolerance (hand-counted rings of a 7 x 7 square)."""

from __future__ import annotations

import numpy as np

from segqc.metrics.shape import boundary_band

RTOL = 1e-9  # the documented relative slack on the band width
SQUARE = np.ones((7, 7), dtype=bool)  # rings at distance 1, 2, 3 from outside; 24 + 16 + 8 + 1 voxels


def test_distance_band_keeps_a_voxel_within_the_tolerance_beyond_the_width():
    """width 2 / (1 + rtol) (a hair below 2 mm): the second ring at exactly 2 mm lies within the
    slack, so the band is the two outer rings, 24 + 16 = 40 voxels (hand count)."""
    width = 2.0 / (1.0 + RTOL)
    assert width < 2.0
    band = boundary_band(SQUARE, (1.0, 1.0), width)
    assert int(band.sum()) == 40
    assert not band[2:5, 2:5].any()


def test_metricsreloaded_band_excludes_a_voxel_within_the_tolerance_below_the_width():
    """MetricsReloaded: distance to the border strictly below the width, the slack the other way:
    width 2 / (1 - rtol) (a hair above 2 mm) still leaves out the ring at 2 mm from the border
    ring, so the band is border + next ring = 40 voxels (hand count)."""
    width = 2.0 / (1.0 - RTOL)
    assert width > 2.0
    band = boundary_band(SQUARE, (1.0, 1.0), width, definition="metricsreloaded")
    assert int(band.sum()) == 40
    assert not band[2:5, 2:5].any()
