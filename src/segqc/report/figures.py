"""Pictures of the HTML report: pure functions from arrays (and spacings) to PNG bytes or SVG text.

Label maps and images are 2D slices in ITK index order (``a[x, y]``); they are drawn with x to
the right and y downwards, pixels stretched by the spacing so that millimetres are square.
Colours of classes come from one fixed lookup table indexed by the class value
(:func:`label_colour`), so class 2 has the same colour in every picture of every report. The
segmentation is drawn as solid contours, the reference (pseudo ground truth or ground truth) as
dashed contours, and the error layer (voxels where the two disagree) as a semi-transparent red.

The scatter and Bland-Altman plots are inline SVG: one ``<circle>`` per case with a ``<title>``
(hover text) and a ``data-case`` attribute; the ``<svg>`` element declares its axis mapping in
``data-xmin/xmax/ymin/ymax`` (data units) and ``data-left/right/top/bottom`` (pixels): a value
``x`` lies at ``left + (x - xmin) / (xmax - xmin) * (right - left)``, ``y`` at
``bottom - (y - ymin) / (ymax - ymin) * (bottom - top)``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

#: Fixed class colours; class value v (> 0) takes ``PALETTE[(v - 1) % len(PALETTE)]``.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000")
ERROR_RGBA = (1.0, 0.1, 0.1, 0.45)


def label_colour(value: int) -> str:
    """The fixed colour of class ``value`` (grey for the background)."""
    return "#808080" if value <= 0 else PALETTE[(int(value) - 1) % len(PALETTE)]


@dataclass(frozen=True)
class Panel:
    """One 2D view: image (or None), segmentation and reference slices (``a[x, y]``), the pixel
    spacing (x, y) in mm, the grey-value window and a title. Red marks ``errors`` > 0 when an
    error map is given, else (with ``error``) where segmentation and reference differ. An
    ``uncertainty`` slice (per-pixel entropy, nats) is drawn instead of the error layer in the
    ``hot`` colour map from 0 to ``uncertainty_max`` (pixels below 2 % of it transparent)."""

    image: np.ndarray | None
    seg: np.ndarray
    ref: np.ndarray | None
    spacing: tuple[float, float]
    window: tuple[float, float] = (0.0, 1.0)
    title: str = ""
    error: bool = True
    errors: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    uncertainty_max: float = 1.0


def foreground_slice(seg: np.ndarray, axis: int = 2, ref: np.ndarray | None = None) -> int:
    """The middle slice (along ``axis``) of the foreground extent of ``seg`` (or of ``ref`` where
    ``seg`` is empty); the middle of the volume where both are empty."""
    for volume in (seg, ref):
        if volume is None:
            continue
        other = tuple(a for a in range(volume.ndim) if a != axis)
        present = np.flatnonzero(np.any(volume > 0, axis=other))
        if present.size:
            return int((present[0] + present[-1]) // 2)
    return int(seg.shape[axis] // 2)


def window(image: np.ndarray | None) -> tuple[float, float]:
    """Grey-value window: the 1st and 99th percentiles of the image."""
    if image is None or image.size == 0:
        return 0.0, 1.0
    values = image[np.isfinite(image)]
    if values.size > 200_000:
        values = values[:: values.size // 200_000 + 1]
    low, high = (float(v) for v in np.percentile(values, [1, 99])) if values.size else (0.0, 1.0)
    return (low, high if high > low else low + 1.0)


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(figure)
    return figure


def _png(figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None}, facecolor=figure.get_facecolor())
    return buffer.getvalue()


def _draw_panel(ax, panel: Panel, linewidth: float) -> None:
    ax.set_axis_off()
    extent_aspect = panel.spacing[1] / panel.spacing[0]  # height of a pixel relative to its width
    shape = panel.seg.shape
    if panel.image is not None:
        ax.imshow(panel.image.T, cmap="gray", vmin=panel.window[0], vmax=panel.window[1],
                  interpolation="nearest", aspect=extent_aspect)
    else:
        ax.imshow(np.zeros(shape[::-1]), cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect=extent_aspect)
    wrong = None
    if panel.uncertainty is not None:
        top = max(float(panel.uncertainty_max), 1e-6)
        shown = np.ma.masked_less(panel.uncertainty.T.astype(np.float32), 0.02 * top)
        ax.imshow(shown, cmap="hot", vmin=0.0, vmax=top, alpha=0.75, interpolation="nearest", aspect=extent_aspect)
    elif panel.errors is not None:
        wrong = (panel.errors > 0).T
    elif panel.error and panel.ref is not None:
        wrong = (panel.seg != panel.ref).T
    if wrong is not None and wrong.any():
        layer = np.zeros(wrong.shape + (4,), dtype=np.float32)
        layer[wrong] = ERROR_RGBA
        ax.imshow(layer, interpolation="nearest", aspect=extent_aspect)
    for array, style in ((panel.ref, "dashed"), (panel.seg, "solid")):
        if array is None or min(array.shape) < 2:
            continue
        lines, colours = [], []
        for value, outline in class_outlines(array):
            lines += outline
            colours += [label_colour(value)] * len(outline)
        if lines:
            from matplotlib.collections import LineCollection

            ax.add_collection(LineCollection(lines, colors=colours, linewidths=linewidth, linestyles=style),
                              autolim=False)


def class_outlines(labels: np.ndarray) -> list[tuple[int, list[np.ndarray]]]:
    """(value, outline) of every class > 0 of a 2D label slice, ascending: the lines at level 0.5
    of the class's mask (marching squares), as (n, 2) arrays of (x, y) = (index along axis 0,
    along axis 1), each traced on the class's own bounding box plus one pixel, so the work and
    memory follow the class, not the slice times the number of classes. Lines at the slice's edge
    stay open there, as a contour plot's do. An empty slice has none."""
    from skimage.measure import find_contours

    from segqc.metrics.counts import value_counts
    from segqc.metrics.masks import nonempty_box

    values, _ = value_counts(labels)
    out = []
    for value in values[values > 0].tolist():
        mask = labels == value
        box = nonempty_box(mask)
        grown = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, labels.shape, strict=True))
        offset = np.array([b.start for b in grown], dtype=float)
        out.append((int(value), [line + offset for line in find_contours(mask[grown].astype(np.float32), 0.5)]))
    return out


def thumbnail_png(panel: Panel, *, size_px: int = 160, dpi: int = 72) -> bytes:
    """A small square picture of one view (no title)."""
    inches = size_px / dpi
    figure = _new_figure(inches, inches)
    figure.patch.set_facecolor("black")
    ax = figure.add_axes((0, 0, 1, 1))
    _draw_panel(ax, Panel(panel.image, panel.seg, panel.ref, panel.spacing, panel.window, "", error=False), 1.0)
    return _png(figure, dpi)


def panels_png(panels: Sequence[Panel], *, panel_px: int = 190, dpi: int = 72) -> bytes:
    """One row of views (titles above), as one PNG."""
    n = max(len(panels), 1)
    inches = panel_px / dpi
    figure = _new_figure(inches * n, inches * 1.14)
    figure.patch.set_facecolor("white")
    for i, panel in enumerate(panels):
        ax = figure.add_axes((i / n + 0.005, 0.0, 1 / n - 0.01, 0.88))
        _draw_panel(ax, panel, 1.2)
        if panel.title:  # figure text: an axes title costs a layout pass per panel
            figure.text((i + 0.5) / n, 0.95, panel.title, fontsize=10, color="#222222", ha="center", va="center")
    return _png(figure, dpi)


def histograms_png(values: Mapping[str, Sequence[float]], *, xlabel: str = "estimated Dice",
                   colours: Mapping[str, str] | None = None, dpi: int = 80) -> bytes:
    """One small histogram per entry of ``values`` (e.g. per class), side by side."""
    names = list(values)
    n = max(len(names), 1)
    figure = _new_figure(2.6 * n, 2.2)
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, name in zip(axes, names):
        data = np.asarray([v for v in values[name] if v is not None and np.isfinite(v)], dtype=float)
        colour = (colours or {}).get(name, "#4363d8")
        if data.size:
            low, high = float(min(data.min(), 0.0)), float(max(data.max(), 1.0))
            ax.hist(data, bins=np.linspace(low, high, 21), color=colour, edgecolor="white")
        ax.set_title(f"{name} (n={data.size})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure, dpi)


# ---------------------------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------------------------

def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _range(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    span = high - low if high > low else max(abs(high), 1.0) * 0.1
    return low - pad * span, high + pad * span


def _svg_plot(cases: Sequence[str], x: np.ndarray, y: np.ndarray, xr: tuple[float, float],
              yr: tuple[float, float], *, xlabel: str, ylabel: str, title: str, kind: str,
              lines: Sequence[tuple[tuple[float, float], tuple[float, float], str, str]] = (),
              hlines: Sequence[tuple[float, str, str]] = (), width: int = 420, height: int = 360) -> str:
    left, right, top, bottom = 58.0, width - 14.0, 30.0, height - 46.0

    def px(v: float) -> float:
        return left + (v - xr[0]) / (xr[1] - xr[0]) * (right - left)

    def py(v: float) -> float:
        return bottom - (v - yr[0]) / (yr[1] - yr[0]) * (bottom - top)

    out = [f'<svg class="plot" data-kind="{kind}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" data-xmin="{xr[0]!r}" data-xmax="{xr[1]!r}" data-ymin="{yr[0]!r}" '
           f'data-ymax="{yr[1]!r}" data-left="{left!r}" data-right="{right!r}" data-top="{top!r}" '
           f'data-bottom="{bottom!r}" role="img" aria-label="{escape(title)}">',
           f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" class="svg-title">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>']
    for t in _ticks(*xr):
        out.append(f'<line x1="{px(t):.2f}" y1="{bottom}" x2="{px(t):.2f}" y2="{bottom + 4}" stroke="#555"/>'
                   f'<text x="{px(t):.2f}" y="{bottom + 15}" text-anchor="middle" class="tick">{t:.3g}</text>')
    for t in _ticks(*yr):
        out.append(f'<line x1="{left - 4}" y1="{py(t):.2f}" x2="{left}" y2="{py(t):.2f}" stroke="#555"/>'
                   f'<text x="{left - 6}" y="{py(t) + 3:.2f}" text-anchor="end" class="tick">{t:.3g}</text>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14 {(top + bottom) / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    for (x0, y0), (x1, y1), colour, dash in lines:
        out.append(f'<line x1="{px(x0):.2f}" y1="{py(y0):.2f}" x2="{px(x1):.2f}" y2="{py(y1):.2f}" '
                   f'stroke="{colour}" stroke-dasharray="{dash}"/>')
    for value, colour, label in hlines:
        if yr[0] <= value <= yr[1]:
            out.append(f'<line x1="{left}" y1="{py(value):.2f}" x2="{right}" y2="{py(value):.2f}" stroke="{colour}" '
                       f'stroke-dasharray="5 3"/><text x="{right - 2}" y="{py(value) - 3:.2f}" text-anchor="end" '
                       f'class="tick" fill="{colour}">{escape(label)}</text>')
    for case, xv, yv in zip(cases, x, y):
        if not (np.isfinite(xv) and np.isfinite(yv)):
            continue
        out.append(f'<circle class="pt" data-case="{escape(case)}" cx="{px(float(xv)):.3f}" cy="{py(float(yv)):.3f}" '
                   f'r="4.5"><title>{escape(case)}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def scatter_svg(cases: Sequence[str], true: Sequence[float], estimate: Sequence[float], *,
                title: str = "estimated vs true", metric: str = "Dice") -> str:
    """Estimated (y) against true (x) values, one circle per case, with the identity line."""
    x, y = np.asarray(true, dtype=float), np.asarray(estimate, dtype=float)
    low, high = _range(np.concatenate([x, y]))
    return _svg_plot(cases, x, y, (low, high), (low, high), xlabel=f"true {metric}", ylabel=f"estimated {metric}",
                     title=title, kind="scatter", lines=[((low, low), (high, high), "#888", "4 3")])


def bland_altman_svg(cases: Sequence[str], true: Sequence[float], estimate: Sequence[float], *,
                     title: str = "Bland-Altman", metric: str = "Dice") -> str:
    """Difference (estimate - true, y) against the mean of the two (x), with the mean difference
    (bias; drawn when a case has both values) and the limits of agreement (mean +- 1.96 SD, with
    the sample SD; drawn from two such cases on). Without any such case the title says so."""
    t, e = np.asarray(true, dtype=float), np.asarray(estimate, dtype=float)
    mean, diff = (t + e) / 2, e - t
    finite = diff[np.isfinite(diff) & np.isfinite(mean)]
    hlines: list[tuple[float, str, str]] = []
    if finite.size:
        bias = float(finite.mean())
        hlines.append((bias, "#d62728", f"bias {bias:+.3f}"))
    if finite.size > 1:
        sd = float(finite.std(ddof=1))
        hlines += [(bias - 1.96 * sd, "#888", "-1.96 SD"), (bias + 1.96 * sd, "#888", "+1.96 SD")]
    else:
        title += " (no case has both values)" if not finite.size else " (one case: no limits of agreement)"
    yr = _range(np.concatenate([diff, np.asarray([value for value, _, _ in hlines] + [0.0])]))
    return _svg_plot(cases, mean, diff, _range(mean), yr, xlabel=f"mean of true and estimated {metric}",
                     ylabel="estimate - true", title=title, kind="bland-altman", hlines=hlines)
