"""One self-contained static HTML report of an output folder of segqc.

:func:`build_report` finds what the folder holds — a ``segqc qc predict`` folder (``qc.csv``,
``report.json``), a ``segqc qc benchmark`` folder (``pairs.csv`` and ``qc/``), a ``segqc
evaluate`` folder (``metrics.csv``, ``summary.json``) or a ``segqc qc rank`` folder
(``ranking.csv`` and one QC folder per model) — and writes one HTML file: every picture is an
embedded PNG (``data:`` URI), every plot of estimate against truth an inline SVG, the CSS and the
few lines of JavaScript (sortable tables, highlighting a case across plots and table) inline.
Nothing refers to the network or to other files, so the page opens from disk anywhere.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.report import figures
from segqc.report.cohort import (
    Cohort,
    case_order,
    check_layer_grid,
    detect,
    label_names,
    label_order,
    load_cohort,
    primary_metric,
    read_table,
    require_columns,
    use_files,
)
from segqc.report.figures import Panel

PNG_PREFIX = "data:image/png;base64,"

PICTURES = 100
"""Cases drawn (pictures and a section) by default: pictures take about 30 kB per case of small
volumes and 250 kB per case of cardiac MRI slices, so the page of a large cohort stays within
about 25 MB; the table lists every case."""


def _data_uri(png: bytes) -> str:
    return PNG_PREFIX + base64.b64encode(png).decode("ascii")


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def _cell(value: Any, digits: int | None = 4) -> str:
    """One table cell; numbers with ``digits`` decimals (``None``: up to 6 significant digits, as
    for a check's voxel counts and z scores)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        text, data = ("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)), "nan"
        return f'<td data-value="{data}">{escape(text)}</td>'
    if isinstance(value, (bool, np.bool_)):
        return f'<td class="text" data-value="{int(bool(value))}">{"yes" if value else ""}</td>'
    if isinstance(value, (int, np.integer)):
        return f'<td data-value="{int(value)}">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if digits is None:
            shown = f"{number:.6g}"
        else:
            shown = f"{number:.{digits}f}" if abs(number) < 1e4 else f"{number:.4g}"
        return f'<td data-value="{number!r}">{shown}</td>'
    return f'<td class="text">{escape(str(value))}</td>'


def cohort_table(cohort: Cohort, cases: list[str], linked: set[str] | None = None) -> str:
    """The sortable case table: per label the primary metric's value columns (a check: every
    flag kind of every class, as each measures something else), then the spread of the
    multi-class estimate (where the worklist has one) and the worklist flag. ``linked``: the
    cases whose id links to their section of the page (default: all)."""
    long = cohort.long
    check = cohort.kind == "check"
    metrics = list(dict.fromkeys(long["metric"])) if check else [primary_metric(long)]
    rows = long[long["metric"].isin(metrics)]
    names = label_names(long)
    labels = label_order(list(rows["label"]))
    lookup = {(c, lab, m, col): v for col in cohort.values
              for c, lab, m, v in zip(rows["case"], rows["label"], rows["metric"], rows[col])}
    present = set(zip(rows["label"], rows["metric"]))
    columns = [(label, metric, col) for label in labels for metric in metrics if (label, metric) in present
               for col in cohort.values]
    head = ['<th class="case">case</th>'] + [
        f'<th data-label="{escape(label)}" data-metric="{escape(metric)}" data-column="{col}">{escape(names[label])} '
        f'{escape(metric)} '
        f'{escape(heading)}</th>' for label, metric, col in columns for heading in [cohort.values[col]]]
    work = cohort.worklist.set_index("case") if cohort.worklist is not None else None
    spread = work is not None and "dice_spread" in work.columns
    if spread:
        head.append('<th data-column="spread">spread</th>')
    if work is not None:
        head.append('<th data-column="flag">flag</th>')
    body = []
    for case in cases:
        flagged = bool(work.loc[case, "flag"]) if work is not None and case in work.index else False
        cells = [f'<td class="case"><a href="#case-{escape(case)}">{escape(case)}</a></td>' if linked is None
                 or case in linked else f'<td class="case">{escape(case)}</td>']
        cells += [_cell(lookup.get((case, label, metric, col)), None if check else 4) for label, metric, col in columns]
        if work is not None and spread:
            cells.append(_cell(float(work.loc[case, "dice_spread"]) if case in work.index else None))
        if work is not None:
            cells.append(_cell(flagged))
        body.append(f'<tr data-case="{escape(case)}"{" class=flagged" if flagged else ""}>' + "".join(cells) + "</tr>")
    return ('<table class="sortable cohort"><thead><tr>' + "".join(head) + "</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table>")


def case_table(cohort: Cohort, case: str, *, rows: pd.DataFrame | None = None,
               names: dict[str, str] | None = None) -> str:
    """Every (label, metric) of one case with its value columns (and spread). ``rows`` (the
    case's rows of ``cohort.long``) and ``names`` (:func:`label_names`) may be given when the
    caller has them, so that a page of many cases reads the long table once."""
    rows = cohort.long[cohort.long["case"] == case] if rows is None else rows
    names = label_names(cohort.long) if names is None else names
    extra = ["spread"] if "spread" in rows.columns and rows["spread"].notna().any() else []
    head = "".join(f"<th>{escape(h)}</th>" for h in ["class", "metric"] + list(cohort.values.values()) + extra)
    order = {label: i for i, label in enumerate(label_order(list(rows["label"])))}
    rows = rows.assign(_order=rows["label"].map(order)).sort_values(["_order", "metric"], kind="stable")
    body = []
    for _, row in rows.iterrows():
        cells = [f'<td class="text">{escape(names[row["label"]])}</td>',
                 f'<td class="text">{escape(row["metric"])}</td>']
        cells += [_cell(row[col]) for col in list(cohort.values) + extra]
        body.append(f'<tr data-label="{escape(row["label"])}">' + "".join(cells) + "</tr>")
    return (f'<table class="sortable case-table"><thead><tr>{head}</tr></thead><tbody>' + "".join(body)
            + "</tbody></table>")


def _frame_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        attr = f' data-case="{escape(str(row["case"]))}"' if "case" in frame.columns else ""
        body.append(f"<tr{attr}>" + "".join(_cell(row[c]) for c in frame.columns) + "</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>' + "".join(body) + "</tbody></table>"


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------

def _take(volume: np.ndarray | None, axis: int, index: int) -> np.ndarray | None:
    return None if volume is None else np.take(volume, index, axis=axis)


def _panel(image, seg, ref, spacing, axis: int, index: int, win, title: str, errors=None, uncertainty=None,
           uncertainty_max: float = 1.0) -> Panel:
    kept = tuple(float(s) for a, s in enumerate(spacing) if a != axis)
    ref_slice = _take(ref, axis, index)
    assert kept and len(kept) == 2
    return Panel(_take(image, axis, index), np.take(seg, index, axis=axis), ref_slice, (kept[0], kept[1]), win, title,
                 errors=_take(errors, axis, index), uncertainty=_take(uncertainty, axis, index),
                 uncertainty_max=uncertainty_max)


def _worst_slices(cohort: Cohort, case: str, geometry, n: int = 3) -> list[tuple[int, int, float]]:
    """Up to ``n`` (axis, index, estimate) of the lowest per-slice estimates below 1."""
    if cohort.slices is None or not len(cohort.slices):
        return []
    from segqc.fingerprint.preprocessing import ras_reorientation

    rows = cohort.slices[(cohort.slices["case"] == case) & (cohort.slices["metric"] == "dice")]
    rows = rows[np.isfinite(rows["estimate"].astype(float)) & (rows["estimate"].astype(float) < 1.0)]
    rows = rows.sort_values("estimate", kind="stable").head(n)
    if geometry.ndim != 3:
        return [(2, int(k), float(e)) for k, e in zip(rows["slice"], rows["estimate"])]
    permutation, flips = ras_reorientation(geometry)
    axis, size = permutation[2], geometry.shape[permutation[2]]
    return [(axis, size - 1 - int(k) if flips[2] else int(k), float(e))
            for k, e in zip(rows["slice"], rows["estimate"])]


def _crop(seg: np.ndarray, ref: np.ndarray | None, image: np.ndarray | None, errors: np.ndarray | None = None,
          uncertainty: np.ndarray | None = None,
          margin: float = 0.35) -> tuple[list[int], list[np.ndarray | None]]:
    """Crop axes 0 and 1 to the foreground of segmentation, reference and error map plus a
    margin (a fraction of the extent, at least 12 voxels), keeping the pictures square-ish; every
    slice of axis 2 is kept. Returns the offsets and the cropped arrays (seg, ref, image, errors,
    uncertainty)."""
    foreground = seg > 0
    for other in (ref, errors):
        if other is not None:
            foreground = foreground | (other > 0)
    offsets = [0, 0, 0]
    if not foreground.any():
        return offsets, [seg, ref, image, errors, uncertainty]
    index: list[slice] = [slice(None)] * 3
    for axis in (0, 1):
        present = np.flatnonzero(np.any(foreground, axis=tuple(a for a in range(3) if a != axis)))
        extent = int(present[-1] - present[0] + 1)
        pad = max(int(margin * extent), 12)
        low, high = max(int(present[0]) - pad, 0), min(int(present[-1]) + pad + 1, seg.shape[axis])
        index[axis], offsets[axis] = slice(low, high), low
    box = tuple(index)
    return offsets, [seg[box], *(None if a is None else a[box] for a in (ref, image, errors, uncertainty))]


def case_pictures(cohort: Cohort, case: str) -> dict[str, str]:
    """Thumbnail, orthogonal views and worst slices of one case, as data URIs. Raises
    :class:`InputError` naming the file for an image or uncertainty map with NaN or infinite voxels or a layer that
    is not on the segmentation's voxel grid."""
    from segqc.io.images import read_image, read_label_map

    files = cohort.inputs[case]
    seg_image = read_label_map(files.seg)
    seg: Any = seg_image.array
    geometry = seg_image.geometry
    readers: list[tuple[str, Path | None, Callable[[Path], Any]]] = [
        ("reference", files.ref if files.ref != files.seg else None, read_label_map),
        ("image", files.image, partial(read_image, finite=True)),
        ("error map", files.errors, read_label_map),
        ("uncertainty map", files.uncertainty, partial(read_image, finite=True))]
    arrays: dict[str, Any] = {}
    for name, path, reader in readers:
        arrays[name] = None
        if path is not None:
            layer = reader(path)
            check_layer_grid(layer.geometry, path, geometry, files.seg, layer=name, case=case)
            arrays[name] = layer.array
    ref: Any = arrays["reference"]
    errors: Any = arrays["error map"]
    image: Any = arrays["image"].astype(np.float32) if arrays["image"] is not None else None
    uncertainty: Any = arrays["uncertainty map"].astype(np.float32) if arrays["uncertainty map"] is not None else None
    top = float(np.max(uncertainty)) if uncertainty is not None and uncertainty.size else 1.0
    if seg.ndim == 2:
        seg, ref, image, errors, uncertainty = (None if a is None else a[..., None]
                                                for a in (seg, ref, image, errors, uncertainty))
        spacing: tuple[float, ...] = (*geometry.spacing, 1.0)
    else:
        spacing = geometry.spacing
    assert seg is not None
    win = figures.window(image)
    offsets, (seg, ref, image, errors, uncertainty) = _crop(seg, ref, image, errors, uncertainty)
    centre = [figures.foreground_slice(seg, axis, ref) for axis in range(3)]
    panel = partial(_panel, image, seg, ref, spacing, win=win, errors=errors)
    main = panel(2, centre[2], title=f"axis 2 slice {centre[2] + offsets[2]}")
    views = [main]
    if seg.shape[0] > 1 and seg.shape[1] > 1 and seg.shape[2] > 1:
        views += [panel(1, centre[1], title=f"axis 1 slice {centre[1] + offsets[1]}"),
                  panel(0, centre[0], title=f"axis 0 slice {centre[0] + offsets[0]}")]
    if uncertainty is not None:  # the main slice again with the entropy map instead of the error layer
        views.append(panel(2, centre[2], title=f"uncertainty (max {top:.2f} nats)", uncertainty=uncertainty,
                           uncertainty_max=top))
    worst = [panel(axis, index - offsets[axis], title=f"slice {index}: est. {value:.3f}")
             for axis, index, value in _worst_slices(cohort, case, geometry)
             if 0 <= index - offsets[axis] < seg.shape[axis]]
    return {"thumbnail": _data_uri(figures.thumbnail_png(main)),
            "views": _data_uri(figures.panels_png(views)),
            "worst": _data_uri(figures.panels_png(worst)) if worst else ""}


# ---------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------

def _template():
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("segqc.report", "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    return environment.get_template("report.html.j2")


def _safe(text: str):
    from markupsafe import Markup

    return Markup(text)  # built here from escaped pieces


def _pictures_of(item: tuple[str, Cohort]) -> dict[str, str]:
    case, cohort = item
    return case_pictures(cohort, case)


def _all_pictures(cohort: Cohort, cases: list[str], jobs: int, progress: bool) -> list[dict[str, str]]:
    """The pictures of ``cases``, in ``jobs`` processes of the shared pool (0: one per core, at
    most 8), in their order. Each case goes to its worker with its own inputs and per-slice rows
    only, not the whole cohort (whose tables grow with the number of cases)."""
    from segqc.execution import map_cases

    jobs = min(jobs or min(os.cpu_count() or 1, 8), len(cases))
    slices = dict(tuple(cohort.slices.groupby("case", sort=False))) if cohort.slices is not None else {}
    empty = cohort.long.iloc[:0]
    items = [(case, replace(cohort, long=empty, inputs={case: cohort.inputs[case]}, worklist=None, summary=None,
                            slices=slices.get(case, cohort.slices.iloc[:0]) if cohort.slices is not None else None))
             for case in cases]
    pictures: dict[str, dict[str, str]] = {}
    for (case, _), result in map_cases(_pictures_of, items, jobs=max(1, jobs), description="report",
                                       progress=progress):
        if isinstance(result, Exception):
            raise result
        pictures[case] = result
    return [pictures[case] for case in cases]


def _cohort_context(cohort: Cohort, progress: bool, jobs: int = 0, pictures: int = 0) -> dict[str, Any]:
    cases = case_order(cohort)
    drawn = cases if pictures <= 0 else cases[:pictures]
    work = cohort.worklist.set_index("case") if cohort.worklist is not None else None
    long = cohort.long
    names = label_names(long)
    by_case = dict(tuple(long.groupby("case", sort=False)))
    items = []
    for case, drawings in zip(drawn, _all_pictures(cohort, drawn, jobs, progress)):
        flagged = bool(work.loc[case, "flag"]) if work is not None and case in work.index else False
        reason = str(work.loc[case, "reason"]) if work is not None and flagged and "reason" in work.columns else ""
        items.append({"id": case, "flagged": flagged, "reason": "" if reason == "nan" else reason,
                      "table": _safe(case_table(cohort, case, rows=by_case.get(case, long.iloc[:0]), names=names)),
                      **drawings})
    notes = list(cohort.notes)
    if len(drawn) < len(cases):
        notes.append(f"Pictures and details of the first {len(drawn)} of {len(cases)} cases in the table's order "
                     "(worst first); every case is in the table. --pictures 0 draws them all.")
    metric = primary_metric(long)
    first = next(iter(cohort.values))
    rows = long[long["metric"] == metric]
    labels = label_order(list(rows["label"]))
    colours = {names[lab]: (figures.label_colour(int(lab)) if lab.isdigit() else "#555555") for lab in labels}
    histograms = figures.histograms_png({names[lab]: rows[rows["label"] == lab][first].astype(float).tolist()
                                         for lab in labels}, xlabel=f"{metric} {cohort.values[first]}",
                                        colours=colours)
    plots = []
    if "true" in long.columns:
        for label in labels:
            sub = rows[rows["label"] == label]
            plots.append(_safe(figures.scatter_svg(list(sub["case"]), sub["true"].astype(float),
                                                   sub["estimate"].astype(float),
                                                   title=f"{names[label]}: estimated vs true {metric}",
                                                   metric=metric)))
            plots.append(_safe(figures.bland_altman_svg(list(sub["case"]), sub["true"].astype(float),
                                                        sub["estimate"].astype(float),
                                                        title=f"{names[label]}: Bland-Altman", metric=metric)))
    classes = [{"value": lab, "name": names[lab], "colour": figures.label_colour(int(lab))}
               for lab in labels if lab.isdigit()]
    return {"cases": items, "cohort_table": _safe(cohort_table(cohort, cases, {item["id"] for item in items})),
            "histograms": _data_uri(histograms), "notes": notes, "total_cases": len(cases),
            "plots": plots, "classes": classes, "ref_name": cohort.ref_name,
            "summary_table": _safe(_frame_table(cohort.summary)) if cohort.summary is not None else None}


def _rank_context(folder: Path) -> dict[str, Any]:
    ranking = read_table(folder / "ranking.csv")
    require_columns(ranking, ["model"], folder / "ranking.csv")
    models = []
    for name in ranking["model"]:
        sub = folder / str(name)
        if (sub / "worklist.csv").exists():
            work = read_table(sub / "worklist.csv")
            keep = [c for c in ["case", "dice_estimate", "dice_spread", "flag", "reason"] if c in work.columns]
            models.append({"name": name, "table": _safe(_frame_table(work[keep]))})
        else:
            models.append({"name": name, "table": _safe(f"<p>no worklist.csv in {escape(str(sub))}</p>")})
    return {"ranking": {"table": _safe(_frame_table(ranking.drop(columns=["folder"], errors="ignore"))),
                        "models": models}}


def _quality_context(folder: Path) -> dict[str, Any]:
    """A ``segqc labels quality`` folder: the Table-5 rows, the per-organ table and the plots it wrote."""
    quality = read_table(folder / "quality.csv")
    require_columns(quality, ["dataset", "metric", "table5"], folder / "quality.csv")
    organs = read_table(folder / "organs.csv")
    tables = _frame_table(quality) + "<h3>Per organ</h3>" + _frame_table(organs)
    plots = [_safe(f'<figure><img alt="{escape(png.stem)}" src="{_data_uri(png.read_bytes())}"></figure>')
             for png in sorted((folder / "plots").glob("*.png"))]
    return {"summary_table": _safe(tables), "summary_title": "Label quality of the pseudo-label datasets (%)",
            "plots": plots}


TITLES = {"qc": "segqc quality control (no ground truth)", "benchmark": "segqc QC benchmark (estimates vs truth)",
          "evaluate": "segqc evaluation (against the ground truth)", "rank": "segqc model ranking",
          "check": "segqc label check (flags)", "quality": "segqc label quality of pseudo-label datasets"}


def _check_outside_inputs(target: Path, folder: Path, cohort: Cohort) -> None:
    """:class:`InputError` naming ``target`` when it lies in a folder of the files the report
    reads (images, segmentations, references, maps; the output folder itself aside): a report
    written there would be taken for a case by the next run that reads the folder."""
    from segqc.execution.run import check_output_outside

    own = os.path.realpath(folder)
    folders = {path.parent for inputs in cohort.inputs.values()
               for path in (inputs.image, inputs.seg, inputs.ref, inputs.errors, inputs.uncertainty)
               if path is not None}
    check_output_outside(target, sorted(f for f in folders if os.path.realpath(f) != own))


def build_report(out_dir: str | Path, output: str | Path | None = None, *, progress: bool = False,
                 jobs: int = 0, images: str | Path | None = None, pictures: int = PICTURES) -> Path:
    """Write the HTML report of ``out_dir`` (a segqc output folder, see the module docstring) to
    ``output`` (default ``out_dir/report.html``); returns its path. ``jobs``: processes drawing
    the case pictures (0: one per core, at most 8); ``images``: a folder of the images, drawn
    behind the contours where the output records none (``evaluate``) or to replace the recorded
    ones (see :func:`segqc.report.cohort.use_files`); ``pictures``: how many cases, in the
    table's order (worst first), get pictures and a section (0: all; every case is in the
    table). Raises :class:`InputError`
    for a folder that holds no known output or names missing input files."""
    from segqc.io.atomic import atomic_path, check_writable_file

    folder = Path(out_dir)
    if not folder.is_dir():
        raise InputError("is not a folder", folder)
    target = Path(output) if output is not None else folder / "report.html"
    check_writable_file(target)  # before the pictures are drawn
    kind = detect(folder)
    context: dict[str, Any] = {"title": TITLES[kind], "subtitle": str(folder.resolve()), "notes": [],
                               "ranking": None, "cases": [], "plots": [], "classes": [], "summary_table": None}
    if kind == "rank":
        context.update(_rank_context(folder))
    elif kind == "quality":
        context.update(_quality_context(folder))
    else:
        cohort = load_cohort(folder, kind)
        use_files(cohort, images=images)
        _check_outside_inputs(target, folder, cohort)  # before the pictures are drawn
        context.update(_cohort_context(cohort, progress, jobs, pictures))
    html = _template().render(**context)
    with atomic_path(target) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    return target
