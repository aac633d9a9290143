"""``segqc report``: the page is parsed with the stdlib HTML parser and checked against the CSV
files the runs wrote (read here with pandas), not against the report code's own formatting."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from report_folders import one_error_line
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.report.html import build_report

runner = CliRunner()


class Page(HTMLParser):
    """What the tests look at: every tag's attributes, the cohort table's cells, thumbnails, the
    SVG plots with their circles and titles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.thumbs: list[dict] = []
        self.headers: list[dict] = []
        self.rows: list[dict] = []
        self.svgs: list[dict] = []
        self.ids: set[str] = set()
        self._in_thumb = False
        self._table: str | None = None
        self._row: dict | None = None
        self._circle: dict | None = None
        self._title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.add(a["id"])
        classes = (a.get("class") or "").split()
        if tag == "a" and "thumb" in classes:
            self._in_thumb = True
        if tag == "img" and self._in_thumb:
            self.thumbs.append(a)
        if tag == "table":
            self._table = "cohort" if "cohort" in classes else "other"
        if self._table == "cohort":
            if tag == "th":
                self.headers.append(a)
            if tag == "tr" and "data-case" in a:
                self._row = {"case": a["data-case"], "cells": []}
                self.rows.append(self._row)
            if tag == "td" and self._row is not None:
                self._row["cells"].append(a)
        if tag == "svg":
            self.svgs.append({**a, "circles": []})
        if tag == "circle":
            self._circle = {**a, "title": ""}
            self.svgs[-1]["circles"].append(self._circle)
        if tag == "title" and self._circle is not None:
            self._title = True

    def handle_endtag(self, tag):
        if tag == "a":
            self._in_thumb = False
        if tag == "table":
            self._table, self._row = None, None
        if tag == "title":
            self._title = False
        if tag == "circle":
            self._circle = None

    def handle_data(self, data):
        if self._title and self._circle is not None:
            self._circle["title"] += data


def _page(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def _assert_self_contained(text: str, page: Page) -> None:
    without_pictures = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "http" not in without_pictures.lower()
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed")
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), (tag, attrs["src"][:40])
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs["href"]


def _cases(table: pd.DataFrame) -> list[str]:
    return sorted(set(table["case"]))


def _cell_values(page: Page) -> dict[tuple[str, str, str], float]:
    """(case, label, column) -> data-value of the cohort table."""
    columns = [(h.get("data-label"), h.get("data-column")) for h in page.headers]
    values = {}
    for row in page.rows:
        for (label, column), cell in zip(columns[1:], row["cells"][1:]):
            if label is not None:
                values[(row["case"], label, column)] = float(cell["data-value"])
    return values


def test_qc_report_has_every_case_and_the_qc_numbers(qc_out, tmp_path):
    output = build_report(qc_out, tmp_path / "page.html")
    text, page = _page(output)
    qc = pd.read_csv(qc_out / "qc.csv", dtype={"case": str, "label": str})
    cases = _cases(qc)
    assert len(page.thumbs) == len(cases)
    assert sorted(t["alt"] for t in page.thumbs) == cases
    assert all(t["src"].startswith("data:image/png;base64,") for t in page.thumbs)
    assert {f"case-{c}" for c in cases} <= page.ids  # one section per case, reached from the thumbnail
    assert sorted(r["case"] for r in page.rows) == cases
    shown = _cell_values(page)
    dice = qc[qc.metric == "dice"]
    assert len(dice) == len(cases) * 3  # all, 1, 2
    for case, label, estimate in zip(dice["case"], dice["label"], dice["estimate"]):
        assert shown[(case, label, "estimate")] == pytest.approx(float(estimate), abs=1e-12)
    worklist = pd.read_csv(qc_out / "worklist.csv", dtype={"case": str})
    flags = {r["case"]: r["cells"][-1]["data-value"] for r in page.rows}
    assert flags == {c: str(int(f)) for c, f in zip(worklist["case"], worklist["flag"])}
    _assert_self_contained(text, page)


def test_default_output_is_inside_the_folder(qc_out, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(qc_out, folder)
    assert build_report(folder) == folder / "report.html"
    assert (folder / "report.html").stat().st_size > 1000


def test_benchmark_plots_have_one_circle_per_case_at_true_and_estimate(benchmark_out, tmp_path):
    text, page = _page(build_report(benchmark_out, tmp_path / "bench.html"))
    pairs = pd.read_csv(benchmark_out / "pairs.csv", dtype={"case": str, "label": str})
    overall = pairs[(pairs.label == "all") & (pairs.metric == "dice")].set_index("case")
    scatters = [s for s in page.svgs if s.get("data-kind") == "scatter"]
    altmans = [s for s in page.svgs if s.get("data-kind") == "bland-altman"]
    assert len(scatters) == len(altmans) == 3  # all classes, 1, 2
    svg, altman = scatters[0], altmans[0]  # label "all" comes first
    assert sorted(c["title"] for c in svg["circles"]) == sorted(overall.index)
    assert sorted(c["data-case"] for c in altman["circles"]) == sorted(overall.index)

    def mapping(s):
        f = {k: float(s[f"data-{k}"]) for k in ("xmin", "xmax", "ymin", "ymax", "left", "right", "top", "bottom")}
        return (lambda x: f["left"] + (x - f["xmin"]) / (f["xmax"] - f["xmin"]) * (f["right"] - f["left"]),
                lambda y: f["bottom"] - (y - f["ymin"]) / (f["ymax"] - f["ymin"]) * (f["bottom"] - f["top"]))

    px, py = mapping(svg)
    for circle in svg["circles"]:
        row = overall.loc[circle["title"]]
        assert float(circle["cx"]) == pytest.approx(px(row["true"]), abs=0.01)
        assert float(circle["cy"]) == pytest.approx(py(row["estimate"]), abs=0.01)
    px, py = mapping(altman)
    for circle in altman["circles"]:
        row = overall.loc[circle["data-case"]]
        assert float(circle["cx"]) == pytest.approx(px((row["true"] + row["estimate"]) / 2), abs=0.01)
        assert float(circle["cy"]) == pytest.approx(py(row["estimate"] - row["true"]), abs=0.01)
    shown = _cell_values(page)
    for case, row in overall.iterrows():
        assert shown[(case, "all", "true")] == pytest.approx(float(row["true"]), abs=1e-12)
    _assert_self_contained(text, page)


def test_evaluate_report_shows_the_true_values(evaluate_out, tmp_path):
    text, page = _page(build_report(evaluate_out, tmp_path / "eval.html"))
    metrics = pd.read_csv(evaluate_out / "metrics.csv", dtype={"case": str, "label": str})
    cases = _cases(metrics)
    assert sorted(t["alt"] for t in page.thumbs) == cases
    shown = _cell_values(page)
    dice = metrics[(metrics.metric == "dice") & metrics.component.isna()]
    for case, label, value in zip(dice["case"], dice["label"], dice["value"]):
        assert shown[(case, label, "value")] == pytest.approx(float(value), abs=1e-12)
    _assert_self_contained(text, page)


def test_pictures_limits_the_drawn_cases_to_the_worst_and_the_table_keeps_all(evaluate_out, tmp_path):
    """A page of thousands of cases with every case drawn was near 100 MB (and its build
    quadratic): --pictures N draws the N worst (lowest multi-class Dice, from metrics.csv) and the
    table still lists every case, unlinked where there is no section."""
    metrics = pd.read_csv(evaluate_out / "metrics.csv", dtype={"case": str, "label": str})
    overall = metrics[(metrics.metric == "dice") & (metrics.label == "all") & metrics.component.isna()]
    worst = list(overall.sort_values(["value", "case"])["case"])
    result = runner.invoke(app, ["report", str(evaluate_out), "-o", str(tmp_path / "two.html"), "-q",
                                 "--pictures", "2"])
    assert result.exit_code == 0, result.output
    text, page = _page(tmp_path / "two.html")
    assert [t["alt"] for t in page.thumbs] == worst[:2]
    sections = {f"case-{c}" for c in worst}
    assert {f"case-{c}" for c in worst[:2]} <= page.ids and not (sections - {f"case-{c}" for c in worst[:2]}) & page.ids
    assert [r["case"] for r in page.rows] == worst  # every case, worst first
    assert f"first 2 of {len(worst)} cases" in " ".join(text.split())
    _assert_self_contained(text, page)
    _, every = _page(build_report(evaluate_out, tmp_path / "all.html", pictures=0))
    assert [t["alt"] for t in every.thumbs] == worst


def test_cli_writes_the_page(qc_out, tmp_path):
    result = runner.invoke(app, ["report", str(qc_out), "-o", str(tmp_path / "r.html"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").exists()


def test_a_folder_with_nothing_known_is_one_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    line = one_error_line(runner.invoke(app, ["report", str(tmp_path)]))
    assert "none of the outputs" in line


def test_a_missing_input_file_is_named(qc_out, tmp_path):
    folder = tmp_path / "qc"
    shutil.copytree(qc_out, folder)
    report = json.loads((folder / "report.json").read_text())
    case = sorted(report["inputs"])[0]
    report["inputs"][case]["seg"] = [str(tmp_path / "gone.nii.gz")]
    (folder / "report.json").write_text(json.dumps(report))
    line = one_error_line(runner.invoke(app, ["report", str(folder)]))
    assert "gone.nii.gz" in line


def test_rank_report_lists_every_model_and_its_cases(qc_out, tmp_path):
    folder = tmp_path / "rank"
    for name in ("modelA", "modelB"):
        shutil.copytree(qc_out, folder / name)
    pd.DataFrame({"rank": [1, 2], "model": ["modelB", "modelA"], "folder": ["b", "a"],
                  "n_cases": [4, 4], "estimated_dice": [0.9, 0.8]}).to_csv(folder / "ranking.csv", index=False)
    text, page = _page(build_report(folder, tmp_path / "rank.html"))
    assert {"model-modelA", "model-modelB"} <= page.ids
    worklist = pd.read_csv(qc_out / "worklist.csv", dtype={"case": str})
    rows = [a["data-case"] for tag, a in page.tags if tag == "tr" and "data-case" in a]
    assert sorted(rows) == sorted(list(worklist["case"]) * 2)
    _assert_self_contained(text, page)


def _thumbnail_grey_pixels(html: str) -> list[int]:
    """Per thumbnail: pixels of mid grey (R = G = B, neither near black nor near white)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    counts = []
    for a in Page(html).thumbs:
        data = base64.b64decode(a["src"].split(",", 1)[1])
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        grey = (rgb.max(axis=2) - rgb.min(axis=2) < 4) & (rgb[..., 0] > 30) & (rgb[..., 0] < 225)
        counts.append(int(grey.sum()))
    return counts


def test_evaluate_report_draws_the_images_behind_the_contours_when_given(evaluate_out, toy, tmp_path):
    plain = build_report(evaluate_out, tmp_path / "plain.html").read_text()
    with_images = build_report(evaluate_out, tmp_path / "images.html", images=toy["images"]).read_text()
    # the toy images are 10 (background) and 70 / 130 inside the classes: grey everywhere
    assert all(n > 2000 for n in _thumbnail_grey_pixels(with_images))
    assert all(n < 200 for n in _thumbnail_grey_pixels(plain))


def test_report_images_folder_without_a_case_is_one_error(evaluate_out, tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(evaluate_out), "--images", str(empty), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "no_images" in result.output and "Traceback" not in result.output


def test_a_case_named_like_a_heading_is_linked_to_its_own_section(tmp_path):
    """Cases named `table`, `cohort` or `details` shared their ids with the page's headings: their
    thumbnails and table links jumped to the heading, not to the case."""
    import numpy as np

    from segqc.evaluation.evaluate import evaluate_folder
    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image

    geometry = Geometry.from_shape((10, 10, 3))
    cases = ("table", "cohort", "details", "distributions")
    for k, case in enumerate(cases):
        gt = np.zeros(geometry.shape, np.uint8)
        gt[2:7, 2:7] = 1
        write_image(tmp_path / "gt" / f"{case}.nii.gz", gt, geometry)
        write_image(tmp_path / "pred" / f"{case}.nii.gz", np.roll(gt, k, axis=0), geometry)
    evaluate_folder(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", metrics=("dice",))
    text, page = _page(build_report(tmp_path / "ev", jobs=1))
    ids = [attrs["id"] for _, attrs in page.tags if "id" in attrs]
    assert len(ids) == len(set(ids)), ids  # every link has one target
    sections = {attrs["id"] for tag, attrs in page.tags if tag == "section" and "case" in attrs.get("class", "")}
    thumbs = {attrs["data-case"]: attrs["href"][1:] for tag, attrs in page.tags
              if tag == "a" and "thumb" in attrs.get("class", "")}
    assert set(thumbs) == set(cases)
    for case, target in thumbs.items():
        assert target in sections and target != case, (case, target)
