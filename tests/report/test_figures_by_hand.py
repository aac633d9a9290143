"""The report pictures' helpers, against values worked out by hand: class colours, the slice a
picture shows, the grey-value window, the axis ticks and which value a scatter plot puts on
which axis."""

from __future__ import annotations

import re

import numpy as np
import pytest

from segqc.report.figures import PALETTE, _ticks, foreground_slice, label_colour, scatter_svg, window


def test_class_1_gets_the_first_colour_and_the_palette_wraps_after_its_last() -> None:
    n = len(PALETTE)
    assert label_colour(0) == "#808080"
    assert label_colour(1) == PALETTE[0] and label_colour(2) == PALETTE[1]
    assert label_colour(n) == PALETTE[-1] and label_colour(n + 1) == PALETTE[0]


def test_the_slice_shown_is_the_middle_of_the_foreground_extent_rounded_down() -> None:
    """Foreground on slices 3 and 6 of axis 2: (3 + 6) // 2 = 4."""
    seg = np.zeros((4, 5, 10), np.uint8)
    seg[1, 1, 3] = seg[2, 2, 6] = 1
    assert foreground_slice(seg, axis=2) == 4


def test_without_foreground_the_middle_of_the_asked_axis_is_shown() -> None:
    """Both maps empty: the middle of axis 0 (8 slices -> 4), not of the last axis (3 -> 1)."""
    seg = np.zeros((8, 5, 3), np.uint8)
    assert foreground_slice(seg, axis=0, ref=np.zeros_like(seg)) == 4
    ref = seg.copy()
    ref[6, 0, 0] = 2
    assert foreground_slice(seg, axis=0, ref=ref) == 6


def test_the_window_is_the_1st_to_99th_percentile_and_never_zero_wide() -> None:
    """0..100 in steps of 1 (101 values): the 1st and 99th percentiles are 1 and 99, so the
    outliers at both ends do not stretch the window; a constant image gets a window 1 wide."""
    image = np.arange(101, dtype=float).reshape(101, 1)
    image[0, 0], image[-1, 0] = -1000.0, 5000.0
    low, high = window(image)
    assert low == pytest.approx(1.0) and high == pytest.approx(99.0)
    assert window(np.full((4, 4), 7.0)) == (7.0, 8.0)


def test_ticks_start_at_the_first_round_value_inside_the_range() -> None:
    """From 0.13 to 0.97 in about 5 steps: step 0.2 (the smallest of 1, 2, 2.5, 5 x 0.1 reaching
    0.84 / 5), ticks 0.2, 0.4, 0.6, 0.8 — none below the range."""
    assert _ticks(0.13, 0.97) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert _ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_the_scatter_plot_puts_the_true_value_on_x_and_the_estimate_on_y() -> None:
    """A case with true 0.2 and estimate 0.8 lies left of and above one with true 0.8 and
    estimate 0.2 (SVG y grows downwards)."""
    svg = scatter_svg(["low", "high"], [0.2, 0.8], [0.8, 0.2])
    points = {m[1]: (float(m[2]), float(m[3]))
              for m in re.finditer(r'data-case="(\w+)" cx="([0-9.]+)" cy="([0-9.]+)"', svg)}
    assert points["low"][0] < points["high"][0]
    assert points["low"][1] < points["high"][1]
