"""Binary-mask conveniences (segqc.metrics.binary) against references computed here with scipy and
numpy: voxel surfaces by erosion, brute-force nearest distances and numpy percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from voxel_surfaces import voxel_hd95

from segqc.metrics.binary import MetricSettings, compare_masks, hd95


def test_hd95_helper_uses_the_surface_definition_it_is_given() -> None:
    """``hd95(..., surface="voxel")`` measures between voxel-centre surfaces, not the default surfels:
    a small cube inside a larger one on anisotropic spacing has different values under the two."""
    gt = np.zeros((10, 10, 10), bool)
    gt[2:8, 2:8, 2:8] = True
    pred = np.zeros_like(gt)
    pred[4:6, 3:6, 4:7] = True
    spacing = (1.5, 1.0, 0.7)
    expected = voxel_hd95(pred, gt, spacing)
    voxel = hd95(pred, gt, spacing, surface="voxel").value
    surfel = hd95(pred, gt, spacing).value
    assert abs(voxel - expected) < 1e-9
    assert abs(surfel - expected) > 0.1  # the two definitions differ on this case
    assert surfel == compare_masks(pred, gt, spacing, metrics=("hd95",))[0].value


def test_percentile_0_is_allowed_and_gives_the_largest_directed_minimum() -> None:
    """``percentile`` takes 0-100 inclusive. At 0 the percentile Hausdorff distance is the max of
    the two directed minima: two boxes 3 voxels apart along an axis of 2.5 mm spacing are 7.5 mm
    apart in both directions."""
    gt = np.zeros((14, 8, 8), bool)
    gt[2:5, 2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[8:11, 1:7, 2:6] = True
    spacing = (2.5, 1.0, 0.8)
    settings = MetricSettings(percentile=0.0)
    got = compare_masks(pred, gt, spacing, metrics=("hd95", "hd95_gt_to_pred"), settings=settings)
    assert [r.value for r in got] == [pytest.approx(7.5), pytest.approx(7.5)]


def test_pop_from_takes_the_settings_keys_out_of_the_mapping() -> None:
    """``MetricSettings.pop_from`` reads the keys ``to_dict`` writes and removes them, leaving the
    caller's other keys for it to read (an evaluation config's own fields)."""
    values = {"tolerance_mm": 2.0, "percentile": 90.0, "empty": {"both_empty": "best"}, "per_component": True}
    settings = MetricSettings.pop_from(values)
    assert settings.tolerance_mm == 2.0 and settings.percentile == 90.0
    assert settings.empty.both_empty.value == "best"
    assert values == {"per_component": True}
