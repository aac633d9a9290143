"""Surface-distance reductions (segqc.metrics.surface) against DeepMind's ``surface-distance``
package: the RMS distance weighted by the surfel areas of both surfaces."""

from __future__ import annotations

import numpy as np
import surface_distance

from segqc.metrics.binary import compare_masks


def test_rms_distance_weighs_every_surfel_by_its_own_area() -> None:
    """``rmssd`` in surfel mode is sqrt(sum d^2 a / sum a) over both surfaces, each element weighted
    by its own area: a sphere against a box on anisotropic spacing has surfels of many areas on
    both sides, so weighting one side by the other's areas gives another value."""
    shape = (20, 22, 18)
    spacing = (1.2, 0.8, 2.0)
    grid = np.indices(shape, dtype=np.float64)
    gt = ((grid[0] - 9.5) * 1.2) ** 2 + ((grid[1] - 10.0) * 0.8) ** 2 + ((grid[2] - 8.5) * 2.0) ** 2 <= 7.0**2
    pred = np.zeros(shape, bool)
    pred[5:15, 4:18, 4:13] = True
    sd = surface_distance.compute_surface_distances(gt, pred, spacing)
    d = np.concatenate([sd["distances_gt_to_pred"], sd["distances_pred_to_gt"]])
    a = np.concatenate([sd["surfel_areas_gt"], sd["surfel_areas_pred"]])
    expected = float(np.sqrt(np.sum(d**2 * a) / np.sum(a)))
    got = compare_masks(pred, gt, spacing, metrics=("rmssd",))[0].value
    assert abs(got - expected) <= 1e-9 * expected
