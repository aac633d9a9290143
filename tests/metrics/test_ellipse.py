"""Ellipse fits and circumference against analytic ellipses and the HC18 reference circumferences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from segqc.metrics.ellipse import ellipse_perimeter, fit_ellipse, head_circumference


def _ellipse_mask(shape, centre, a, b, angle, spacing):
    """Pixels whose centre lies inside the ellipse (semi-axes in mm, angle from axis 1 to axis 0)."""
    ii, jj = np.mgrid[:shape[0], :shape[1]]
    y, x = ii * spacing[0] - centre[0], jj * spacing[1] - centre[1]
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def test_perimeter_of_a_circle_and_of_a_flat_ellipse():
    assert ellipse_perimeter(3.0, 3.0) == pytest.approx(2 * math.pi * 3.0, rel=1e-12)
    assert ellipse_perimeter(1.0, 0.0) == pytest.approx(4.0, rel=5e-4)  # a segment, travelled twice
    # a = 2, b = 1: the complete elliptic integral gives 9.688448220547675
    assert ellipse_perimeter(2.0, 1.0) == pytest.approx(9.688448220547675, rel=1e-6)
    assert math.isnan(ellipse_perimeter(math.nan, 1.0))


@pytest.mark.parametrize("a, b, angle, spacing", [(30.0, 20.0, 0.3, (0.2, 0.2)), (25.0, 24.0, 1.2, (0.3, 0.15)),
                                                  (40.0, 12.0, -0.7, (0.25, 0.25))])
def test_fit_recovers_a_rasterised_ellipse(a, b, angle, spacing):
    shape = (int(110 / spacing[0]), int(110 / spacing[1]))
    mask = _ellipse_mask(shape, (55.0, 55.0), a, b, angle, spacing)
    fitted = fit_ellipse(mask, spacing)
    assert fitted.a == pytest.approx(a, rel=0.01) and fitted.b == pytest.approx(b, rel=0.01)
    assert fitted.centre == pytest.approx((55.0, 55.0), abs=0.1)
    if a / b > 1.2:
        assert math.cos(fitted.angle - angle) ** 2 == pytest.approx(1.0, abs=1e-3)
    assert head_circumference(mask, spacing) == pytest.approx(ellipse_perimeter(a, b), rel=0.01)


def test_largest_component_ignores_a_stray_blob_and_empty_is_nan():
    mask = _ellipse_mask((200, 200), (100.0, 100.0), 50.0, 30.0, 0.0, (1.0, 1.0))
    mask[5:12, 5:12] = True  # a false positive far away
    assert fit_ellipse(mask).a == pytest.approx(50.0, rel=0.01)
    assert fit_ellipse(mask, largest_component=False).a > 52.0
    empty = fit_ellipse(np.zeros((8, 8), bool))
    assert math.isnan(empty.a) and empty.pixels == 0 and math.isnan(head_circumference(np.zeros((4, 4))))
    with pytest.raises(ValueError):
        fit_ellipse(np.zeros((2, 2, 2)))


def test_hc18_ground_truth_masks_give_the_reference_circumference(shared_data):
    from segqc.io.images import read_label_map

    root = shared_data("hc18")
    reference = pd.read_csv(root / "head_circumference.csv", dtype={"case": str}).set_index("case")
    cases = reference.index[::40]  # 21 images over the whole range of sizes
    errors = []
    for case in cases:
        label = read_label_map(root / "labelsTr" / f"{case}.nii.gz")
        errors.append(head_circumference(label.array > 0, label.geometry.spacing) - reference.loc[case, "hc_mm"])
    relative = np.abs(errors) / reference.loc[cases, "hc_mm"].to_numpy()
    assert np.max(relative) < 0.03, dict(zip(cases, np.round(errors, 2)))  # the data README's bound
    assert np.median(np.abs(errors)) < 2.5
