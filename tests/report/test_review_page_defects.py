"""The review page when things go wrong (pytest-playwright, Debian's Chromium): a layer the server
refuses, keys pressed faster than a case loads, a focused opacity slider, a class decision followed
by a move, markup in a class name, and a server that was stopped. Decisions are checked in the
SQLite file, messages in the page and pictures on the canvas."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_review_browser import LOADED, _coloured_pixels, _decisions, _wait_idle, served

from segqc.evaluation.evaluate import evaluate_folder
from segqc.review.app import ReviewSession
from segqc.review.server import make_server
from segqc.review.store import DecisionStore
from segqc.review.worklist import load_worklist

MARKUP = '<img src=x onerror="window.pwned=1">'
# the case is current and its load has ended, shown or not (or a message came)
SETTLED = ("c => document.body.dataset.case === c && (document.body.dataset.loaded !== '0' || "
           "document.getElementById('saved').textContent !== '')")


def _evaluated(root: Path, names: dict[str, int]) -> dict[str, Path]:
    """Four tiny cases (24 x 24 x 6 voxels, classes 1 and 2), the segmentations shifted by 0 to 3
    voxels, images beside them, evaluated with Dice; class names from the labels' dataset.json."""
    rng = np.random.default_rng(0)
    folders = {name: root / name for name in ("gt", "pred", "img")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    for i in range(4):
        gt = np.zeros((24, 24, 6), np.uint8)
        gt[6:18, 6:18, 1:5] = 1
        gt[9:15, 9:15, 2:4] = 2
        image = (gt * 40 + rng.normal(50, 5, gt.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(gt, affine), folders["gt"] / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.roll(gt, i, axis=0), affine), folders["pred"] / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(image, affine), folders["img"] / f"c{i}_0000.nii.gz")
    (folders["gt"] / "dataset.json").write_text(json.dumps({"labels": {"background": 0, **names}}))
    evaluate_folder(folders["pred"], folders["gt"], root / "ev", metrics=("dice",))
    return {**folders, "ev": root / "ev"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return _evaluated(tmp_path_factory.mktemp("review_tiny"), {"LV": 1, "RV": 2})


@pytest.fixture
def images(tiny, tmp_path) -> Path:
    """A copy of the tiny cases' images that a test may break."""
    return Path(shutil.copytree(tiny["img"], tmp_path / "img"))


def _order(page) -> list[str]:
    return page.evaluate("window.segqcReview.rows.map(r => r.id)")


def _status(page) -> str:
    return page.locator("#saved").text_content()


def _open(page, url: str) -> list[str]:
    page.goto(url)
    page.wait_for_function(LOADED, timeout=30_000)
    return _order(page)


def test_a_case_whose_image_is_gone_clears_the_viewer_and_is_decided_on_its_message(page, tiny, images, tmp_path):
    """The previous case's pictures stayed on screen under the new case's id, and A recorded a
    decision for a case whose pictures the reviewer never saw. Now the viewer is empty, the message
    names the file, and a decision (e.g. needs fix) is taken on that message."""
    db = tmp_path / "r.sqlite"
    with served(tiny["ev"], db, images=images) as url:
        order = _open(page, url)
        page.wait_for_timeout(300)
        before = page.locator("#gl").screenshot()
        assert _coloured_pixels(before) > 500  # the first case's segmentation is on screen
        (images / f"{order[1]}_0000.nii.gz").unlink()  # deleted while the app runs
        page.locator(f"#cases li[data-case='{order[1]}']").click()
        page.wait_for_function(SETTLED, arg=order[1], timeout=20_000)
        page.wait_for_timeout(300)
        after = page.locator("#gl").screenshot()
        assert _coloured_pixels(after) == 0 and after != before  # no picture of the previous case
        assert page.locator("#case-id").text_content() == order[1]
        assert f"{order[1]}_0000.nii.gz" in _status(page)
        boxes = page.locator("#layers input[type=checkbox]")
        assert boxes.count() and all(boxes.nth(i).is_disabled() for i in range(boxes.count()))
        page.keyboard.press("f")
        page.wait_for_function(f"document.body.dataset.case === '{order[2]}' && {LOADED}", timeout=20_000)
        assert _decisions(db) == [(order[1], "all", "anna", "needs_fix")]
        assert page.locator("#layers input[data-layer=image][type=checkbox]").is_checked()
        assert page.locator("#layers input[data-layer=segmentation][type=checkbox]").is_checked()


def test_a_refused_layer_names_the_file_and_the_problem_and_the_message_goes_with_the_next_case(
        page, tiny, images, tmp_path):
    with served(tiny["ev"], tmp_path / "r.sqlite", images=images) as url:
        order = _open(page, url)
        broken = np.ones((24, 24, 6), np.float32)
        broken[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(broken, np.diag([1.5, 1.5, 3.0, 1.0])), images / f"{order[1]}_0000.nii.gz")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(SETTLED, arg=order[1], timeout=20_000)
        message = _status(page)
        assert f"{order[1]}_0000.nii.gz" in message and "NaN" in message, message
        assert "Unprocessable" not in message
        requests: list[str] = []
        page.on("request", lambda request: "/layers/" in request.url and requests.append(request.url))
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.body.dataset.case === '{order[2]}' && {LOADED}", timeout=20_000)
        assert _status(page) == ""  # the next case is shown fine: the message is gone
        layers = page.evaluate("window.segqcReview.info.layers")
        assert sorted(requests) == sorted(set(requests)) and len(requests) == len(layers)  # each layer once


def test_keys_pressed_while_a_decision_is_saved_or_a_case_loads_are_ignored(page, tiny, images, tmp_path):
    db = tmp_path / "r.sqlite"
    held: list = []
    hold = threading.Event()
    page.route("**/layers/**", lambda route: held.append(route) if hold.is_set() else route.continue_())
    with served(tiny["ev"], db, images=images) as url:
        order = _open(page, url)
        page.keyboard.press("a")
        page.keyboard.press("r")  # while the accept is being saved
        _wait_idle(page, saved=1)
        page.wait_for_timeout(300)
        assert _decisions(db) == [(order[0], "all", "anna", "accept")]
        assert page.evaluate("document.body.dataset.case") == order[1]
        hold.set()  # the next case's layers do not come until released
        page.keyboard.press("a")
        page.wait_for_function(f"document.body.dataset.case === '{order[2]}'", timeout=20_000)
        page.keyboard.press("r")  # order[2] is loading: not yet seen
        page.wait_for_timeout(300)
        hold.clear()
        for route in held:
            route.continue_()
        page.wait_for_function(LOADED, timeout=20_000)
        page.wait_for_timeout(300)
        assert _decisions(db) == [(order[0], "all", "anna", "accept"), (order[1], "all", "anna", "accept")]
        assert "ignored: R" in _status(page)
        page.keyboard.press("a")
        page.keyboard.press("a")  # a double press: one accept, one step
        _wait_idle(page, saved=3)
        page.wait_for_timeout(500)
        assert _decisions(db)[2:] == [(order[2], "all", "anna", "accept")]
        assert page.evaluate("document.body.dataset.case") == order[3]


def test_after_a_click_on_an_opacity_slider_the_keys_go_to_the_page(page, tiny, images, tmp_path):
    db = tmp_path / "r.sqlite"
    with served(tiny["ev"], db, images=images) as url:
        order = _open(page, url)
        slider = page.locator("#layers input[type=range][data-layer=segmentation]")
        slider.click()
        opacity = slider.input_value()
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(300)
        assert page.evaluate("document.body.dataset.case") == order[1]  # the next case, not less opacity
        page.wait_for_function(LOADED, timeout=20_000)
        assert slider.input_value() == opacity
        page.keyboard.press("a")
        _wait_idle(page, saved=1)
        assert _decisions(db) == [(order[1], "all", "anna", "accept")]


def test_each_case_starts_with_a_decision_for_the_whole_case(page, tiny, images, tmp_path):
    db = tmp_path / "r.sqlite"
    with served(tiny["ev"], db, images=images) as url:
        order = _open(page, url)
        page.select_option("#decision-label", "1")
        page.keyboard.press("r")
        _wait_idle(page, saved=1)
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.body.dataset.case === '{order[1]}' && {LOADED}", timeout=20_000)
        assert page.locator("#decision-label").input_value() == "all"
        page.keyboard.press("a")
        _wait_idle(page, saved=2)
        assert _decisions(db) == [(order[0], "1", "anna", "reject"), (order[1], "all", "anna", "accept")]
        assert page.evaluate("document.body.dataset.case") == order[2]


def test_markup_in_a_class_name_is_shown_as_text_and_never_runs(page, tmp_path):
    data = _evaluated(tmp_path / "data", {MARKUP: 1, "<b>B</b>": 2})
    with served(data["ev"], tmp_path / "r.sqlite", rater="<i>anna</i>", images=data["img"]) as url:
        _open(page, url)
        page.locator("#summary-button").click()
        page.wait_for_selector("#summary-card table")
        page.wait_for_timeout(300)
        assert page.evaluate("window.pwned") is None
        assert MARKUP in page.locator("#case-values").text_content()
        assert MARKUP in page.locator("#legend").text_content()
        assert page.locator("#case-values b, #legend b, #legend img, #summary-card i").count() == 0


def test_a_decision_while_the_server_is_stopped_says_so_and_stores_nothing(page, tiny, images, tmp_path):
    db = tmp_path / "r.sqlite"
    server, url = make_server(ReviewSession(load_worklist(tiny["ev"], images=images), DecisionStore(db), "anna"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    order = _open(page, url)
    server.should_exit = True
    thread.join(10)
    assert not thread.is_alive()
    page.keyboard.press("a")
    page.wait_for_function("document.body.dataset.busy === '0' && "
                           "document.getElementById('saved').textContent !== ''", timeout=20_000)
    message = _status(page)
    assert "not reachable" in message and "not saved" in message and order[0] in message, message
    assert "Failed to fetch" not in message
    assert _decisions(db) == []
