"""End to end in a real browser (pytest-playwright driving Debian's Chromium): the review page
served by uvicorn, keys pressed as a reviewer would, decisions checked in the SQLite file with
plain SQL, and the static report opened from disk."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from segqc.cli.main import app as cli
from segqc.report.html import build_report
from segqc.review.app import ReviewSession
from segqc.review.server import make_server
from segqc.review.store import DecisionStore
from segqc.review.worklist import load_worklist

LOADED = "document.body.dataset.loaded === '1'"


@contextmanager
def served(qc_out: Path, db: Path, rater: str = "anna", **files: Path) -> Iterator[str]:
    """The review app of ``qc_out`` (``files``: the ``images`` / ``segs`` folders of load_worklist)."""
    server, url = make_server(ReviewSession(load_worklist(qc_out, **files), DecisionStore(db), rater))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the review server did not start"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def _open(page, url: str) -> str:
    page.goto(url)
    page.wait_for_function(LOADED, timeout=30_000)
    return page.evaluate("document.body.dataset.case")


def _decisions(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute('SELECT "case", label, rater, decision FROM decisions ORDER BY id').fetchall()


def _worklist(qc_out: Path) -> pd.DataFrame:
    return pd.read_csv(qc_out / "worklist.csv", dtype={"case": str})


def _wait_idle(page, saved: int) -> None:
    """Until ``saved`` decisions are stored, the page moved on, and the shown case is loaded."""
    page.wait_for_function(f"Number(document.body.dataset.saved || 0) >= {saved} && "
                           "document.body.dataset.busy === '0' && document.body.dataset.loaded === '1'",
                           timeout=30_000)


def test_pressing_a_stores_an_accept_and_reload_resumes(page, qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    order = list(_worklist(qc_out)["case"])
    with served(qc_out, db) as url:
        assert _open(page, url) == order[0]  # nothing reviewed: the worst case first
        page.keyboard.press("a")
        _wait_idle(page, saved=1)
        assert _decisions(db) == [(order[0], "all", "anna", "accept")]
        assert page.evaluate("document.body.dataset.case") == order[1]  # advanced to the next
        page.keyboard.press("r")
        _wait_idle(page, saved=2)
        assert _decisions(db)[1] == (order[1], "all", "anna", "reject")
        page.reload()
        page.wait_for_function(LOADED, timeout=30_000)
        assert page.evaluate("document.body.dataset.case") == order[2]  # the first unreviewed case


def test_n_jumps_to_the_next_flagged_case(page, qc_out, tmp_path):
    work = _worklist(qc_out)
    order, flags = list(work["case"]), [bool(f) for f in work["flag"]]
    with served(qc_out, tmp_path / "r.sqlite") as url:
        first = _open(page, url)
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.body.dataset.case === '{order[1]}'")
        current = order.index(page.evaluate("document.body.dataset.case"))
        rotated = order[current + 1:] + order[:current + 1]
        expected = next(c for c in rotated if flags[order.index(c)])
        page.keyboard.press("n")
        page.wait_for_function(f"document.body.dataset.case === '{expected}'")
        assert first == order[0]


def _coloured_pixels(png: bytes) -> int:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def test_toggling_the_overlay_changes_the_coloured_pixels(page, qc_out, tmp_path):
    with served(qc_out, tmp_path / "r.sqlite") as url:
        _open(page, url)
        page.wait_for_timeout(300)
        canvas = page.locator("#gl")
        shown = _coloured_pixels(canvas.screenshot())
        page.keyboard.press("t")
        page.wait_for_timeout(300)
        hidden = _coloured_pixels(canvas.screenshot())
        page.keyboard.press("t")
        page.wait_for_timeout(300)
        again = _coloured_pixels(canvas.screenshot())
    # the segmentation is visible on load and covers a few thousand pixels of the canvas
    assert shown > hidden + 2000, (shown, hidden)
    assert abs(again - shown) < 0.05 * shown


def test_a_reviewer_goes_through_20_flagged_cases_with_the_keyboard_only(page, qc_out_24, tmp_path):
    db = tmp_path / "r.sqlite"
    work = _worklist(qc_out_24)
    flagged = set(work[work["flag"]]["case"])
    assert len(flagged) == 20
    decided: list[str] = []
    with served(qc_out_24, db) as url:
        _open(page, url)
        for _ in range(60):  # keys: N until a flagged, undecided case shows, then A (or F)
            if len(decided) == 20:
                break
            case = page.evaluate("document.body.dataset.case")
            if case in flagged and case not in decided:
                page.keyboard.press("f" if len(decided) % 5 == 0 else "a")
                decided.append(case)
                _wait_idle(page, saved=len(decided))
            else:
                page.keyboard.press("n")
                page.wait_for_function(
                    "prev => document.body.dataset.case !== prev && document.body.dataset.loaded === '1'",
                    arg=case, timeout=30_000)
    assert len(decided) == 20
    out = tmp_path / "decisions.csv"
    result = CliRunner().invoke(cli, ["review", "export", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out, dtype={"case": str})
    assert len(exported) == 20
    assert set(exported["case"]) == flagged
    assert (exported["decision"] == "needs_fix").sum() == 4


def test_the_report_opens_from_disk_with_one_thumbnail_per_case(page, qc_out, tmp_path):
    output = build_report(qc_out, tmp_path / "report.html")
    page.goto(output.resolve().as_uri())
    cases = sorted(set(pd.read_csv(qc_out / "qc.csv", dtype={"case": str})["case"]))
    thumbs = page.locator("a.thumb img")
    assert thumbs.count() == len(cases)
    assert sorted(page.locator("a.thumb").evaluate_all("els => els.map(e => e.dataset.case)")) == cases
    widths = thumbs.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in widths)  # every embedded picture decodes
