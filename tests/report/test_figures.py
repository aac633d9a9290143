"""The class outlines drawn in report pictures: the level-0.5 lines of each class's mask, against
an analytic rectangle and against marching squares on the whole slice, and in bounded memory
however many classes a slice holds (a TotalSegmentator slice holds a hundred)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from skimage.measure import find_contours

from segqc.report.figures import Panel, class_outlines, panels_png


def test_the_outline_of_a_rectangle_runs_half_a_pixel_outside_its_pixel_centres():
    labels = np.zeros((10, 12), np.uint8)
    labels[2:6, 3:8] = 3  # x 2..5, y 3..7
    [(value, lines)] = class_outlines(labels)
    assert value == 3 and len(lines) == 1
    line = lines[0]
    assert np.allclose(line[0], line[-1])  # closed: the class does not touch the edge
    assert (line[:, 0].min(), line[:, 0].max(), line[:, 1].min(), line[:, 1].max()) == (1.5, 5.5, 2.5, 7.5)
    on_edge = np.isclose(line[:, 0], 1.5) | np.isclose(line[:, 0], 5.5) | np.isclose(line[:, 1], 2.5) \
        | np.isclose(line[:, 1], 7.5)
    corners = (np.abs(line[:, 0] - 3.5) > 1.9) & (np.abs(line[:, 1] - 5.0) > 2.4)  # the cut corners
    assert (on_edge | corners).all()


def test_outlines_equal_marching_squares_on_the_whole_slice_for_every_class():
    rng = np.random.default_rng(4)
    labels = np.zeros((40, 30), np.uint16)
    for value in (1, 7, 300):
        centre, radius = rng.uniform(5, 25, 2), rng.uniform(3, 8)
        yy, xx = np.mgrid[:40, :30]
        labels[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = value
    labels[0:4, 10:14] = 7  # a second piece of class 7, cut by the slice's edge
    found = dict(class_outlines(labels))
    assert sorted(found) == [1, 7, 300]
    for value, lines in found.items():
        reference = find_contours((labels == value).astype(np.float32), 0.5)
        assert len(lines) == len(reference)
        mine = np.unique(np.round(np.concatenate(lines), 6), axis=0)
        theirs = np.unique(np.round(np.concatenate(reference), 6), axis=0)
        np.testing.assert_allclose(mine, theirs)
    assert class_outlines(np.zeros((5, 5), np.uint8)) == []


def test_a_slice_of_a_hundred_classes_is_drawn_in_bounded_memory():
    """Drawn as one contour plot per class, a 366 x 303 slice of 117 TotalSegmentator classes kept
    every class's float64 grids alive until the picture was saved: 440 MB for one case's views."""
    labels = np.zeros((300, 300), np.uint8)
    for value in range(1, 101):
        i, j = divmod(value - 1, 10)
        labels[30 * i + 5:30 * i + 25, 30 * j + 5:30 * j + 25] = value
    panel = Panel(None, labels, labels, (1.0, 1.0), (0.0, 1.0), "t")
    tracemalloc.start()
    try:
        png = panels_png([panel])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert png.startswith(b"\x89PNG")
    assert peak < 40 * 2**20, peak / 2**20


def _hlines(svg: str) -> dict[str, float]:
    """The labelled horizontal lines of a plot: label -> value in data units (read back from the
    pixel position with the plot's own data-* scale)."""
    import re

    scale = {k: float(v) for k, v in re.findall(r'data-(ymin|ymax|top|bottom)="([^"]+)"', svg)}
    lines = re.findall(r'<line x1="[^"]+" y1="([^"]+)" x2="[^"]+" y2="[^"]+" stroke="[^"]+" '
                       r'stroke-dasharray="5 3"/><text [^>]*>([^<]+)</text>', svg)
    span = scale["bottom"] - scale["top"]
    return {label: scale["ymin"] + (scale["bottom"] - float(y)) / span * (scale["ymax"] - scale["ymin"])
            for y, label in lines}


def test_bland_altman_draws_a_bias_and_limits_only_from_cases_with_both_values():
    """With no case holding both values the plot printed "bias +0.000" and drew both limits; with
    one case, both limits sat on the bias (an SD of 0)."""
    from segqc.report.figures import bland_altman_svg

    true, estimate = [0.9, 0.5, 0.7, np.nan], [0.8, 0.6, 0.9, 0.4]
    lines = _hlines(bland_altman_svg(list("abcd"), true, estimate))
    diff = np.array([-0.1, 0.1, 0.2])
    bias, sd = diff.mean(), diff.std(ddof=1)  # numpy's sample SD as the reference
    assert set(lines) == {f"bias {bias:+.3f}", "-1.96 SD", "+1.96 SD"}
    assert lines["-1.96 SD"] == pytest.approx(bias - 1.96 * sd, abs=1e-3)
    assert lines["+1.96 SD"] == pytest.approx(bias + 1.96 * sd, abs=1e-3)
    one = bland_altman_svg(["a", "b"], [0.9, np.nan], [0.8, 0.5])
    assert set(_hlines(one)) == {"bias -0.100"} and "one case: no limits of agreement" in one
    none = bland_altman_svg(["a", "b"], [np.nan, np.nan], [0.8, 0.5])
    assert _hlines(none) == {} and "no case has both values" in none
