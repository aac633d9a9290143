"""Lesion-wise metrics (segqc.metrics.lesion) with the voxel surface definition, against a
reference written here with scipy: voxel surfaces by erosion, brute-force nearest distances and
numpy's interpolated percentile (MONAI's HD95)."""

from __future__ import annotations

import numpy as np
from voxel_surfaces import voxel_hd95

from segqc.metrics.lesion import LesionSettings, lesion_table


def test_per_lesion_hd95_follows_the_surface_setting() -> None:
    """``LesionSettings(surface="voxel")`` scores each lesion between voxel-centre surfaces (MONAI),
    not the default surfels: one lesion with a smaller prediction inside it on anisotropic spacing."""
    gt = np.zeros((12, 12, 12), bool)
    gt[2:8, 2:8, 2:8] = True
    pred = np.zeros_like(gt)
    pred[4:6, 3:6, 4:7] = True
    spacing = (1.5, 1.0, 0.7)
    expected = voxel_hd95(pred, gt, spacing)
    voxel = lesion_table(pred, gt, spacing, LesionSettings(surface="voxel")).lesions[0]
    surfel = lesion_table(pred, gt, spacing, LesionSettings()).lesions[0]
    assert voxel.detected and not voxel.ignored
    assert abs(voxel.hd95 - expected) < 1e-9
    assert abs(surfel.hd95 - expected) > 0.1  # the two definitions differ on this case


def test_2d_dilation_connectivity_decides_whether_a_diagonal_prediction_matches() -> None:
    """In 2D, ``dilation_connectivity`` 6 means the 4-neighbour cross and 18/26 the 8-neighbour
    square: after one dilation a pixel diagonal to the lesion's corner lies in the footprint of the
    square only, so it matches the lesion with 18 and is a false positive (lesion missed) with 6."""
    gt = np.zeros((14, 14), bool)
    gt[4:8, 4:8] = True
    pred = np.zeros_like(gt)
    pred[8, 8] = True  # touches the corner (7, 7) diagonally only
    common = dict(dilation_iterations=1, lesion_volume_threshold=0.0)
    cross = lesion_table(pred, gt, (1.0, 1.0), LesionSettings(dilation_connectivity=6, **common))
    square = lesion_table(pred, gt, (1.0, 1.0), LesionSettings(dilation_connectivity=18, **common))
    assert not cross.lesions[0].detected and cross.fp_components == (1,)
    assert square.lesions[0].detected and square.fp_components == ()
