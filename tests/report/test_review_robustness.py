"""The review app and its commands when things are not as a segqc run left them: layers on another
grid, NaN images, files that vanish or change while the app runs, request bodies that cannot be
echoed, databases of other programs, distance metrics, busy ports and Ctrl-C. Expected values come
from the test's own files (nibabel, pandas, sqlite3), not from the app's code."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from report_folders import copy_evaluate, one_error_line
from typer.testing import CliRunner

from segqc.cli.main import app as cli
from segqc.errors import InputError
from segqc.review.app import ReviewSession, create_app
from segqc.review.server import check_address
from segqc.review.store import DecisionStore
from segqc.review.worklist import load_worklist

runner = CliRunner()
LOCAL = "http://127.0.0.1"


def _client(folder: Path, db: Path, **files) -> tuple[TestClient, ReviewSession]:
    session = ReviewSession(load_worklist(folder, **files), DecisionStore(db), "anna")
    return TestClient(create_app(session), base_url=LOCAL, raise_server_exceptions=False), session


def _file_state(path: Path) -> tuple[str, list[str]]:
    """The bytes' digest of ``path`` and the names beside it (a -wal or -journal file appearing
    would be a change)."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


# ---- grids and NaN ------------------------------------------------------------------------------


def test_an_image_on_another_grid_is_refused_by_its_layer(evaluate_out, toy, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in toy["images"].glob("*.nii.gz"):
        image = nibabel.load(path)
        affine = image.affine.copy()
        affine[:3, 3] = (-40.0, 12.0, 7.5)
        nibabel.save(nibabel.Nifti1Image(np.asarray(image.dataobj), affine), moved / path.name)
    client, _ = _client(evaluate_out, tmp_path / "r.sqlite", images=moved)
    response = client.get("/api/cases/case1/layers/image.nii")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert str(moved / "case1_0000.nii.gz") in detail and "origin" in detail
    assert client.get("/api/cases/case1/layers/segmentation.nii").status_code == 200


def test_a_reference_on_another_grid_is_refused_by_the_reference_and_error_layers(evaluate_out, toy, tmp_path):
    folder = copy_evaluate(evaluate_out, toy, tmp_path)
    gt = tmp_path / "gt" / "case2.nii.gz"
    image = nibabel.load(gt)
    affine = image.affine.copy()
    affine[0, 0] *= 2.0
    nibabel.save(nibabel.Nifti1Image(np.asarray(image.dataobj), affine), gt)
    client, _ = _client(folder, tmp_path / "r.sqlite")
    for layer in ("reference", "error"):
        response = client.get(f"/api/cases/case2/layers/{layer}.nii")
        assert response.status_code == 422, layer
        assert str(gt) in response.json()["detail"] and "spacing" in response.json()["detail"]
    assert client.get("/api/cases/case1/layers/error.nii").status_code == 200


def test_a_nan_image_is_refused_not_shown_as_zero(evaluate_out, toy, tmp_path):
    with_nan = tmp_path / "nan"
    shutil.copytree(toy["images"], with_nan)
    image = nibabel.load(with_nan / "case1_0000.nii.gz")
    array = np.asarray(image.dataobj, dtype=np.float32)
    array[3, 3, 1] = np.nan
    nibabel.save(nibabel.Nifti1Image(array, image.affine), with_nan / "case1_0000.nii.gz")
    client, _ = _client(evaluate_out, tmp_path / "r.sqlite", images=with_nan)
    response = client.get("/api/cases/case1/layers/image.nii")
    assert response.status_code == 422
    assert str(with_nan / "case1_0000.nii.gz") in response.json()["detail"] and "NaN" in response.json()["detail"]
    assert client.get("/api/cases/case2/layers/image.nii").status_code == 200


def test_a_nan_uncertainty_map_is_refused_by_its_layer(evaluate_out, toy, tmp_path):
    folder = copy_evaluate(evaluate_out, toy, tmp_path)
    seg = nibabel.load(tmp_path / "pred" / "case1.nii.gz")
    (tmp_path / "pred" / "uncertainty").mkdir()
    for case, bad in (("case1", np.nan), ("case2", None)):
        entropy = np.full(seg.shape, 0.2, np.float32)
        if bad is not None:
            entropy[3, 3, 1] = bad
        nibabel.save(nibabel.Nifti1Image(entropy, seg.affine), tmp_path / "pred" / "uncertainty" / f"{case}.nii.gz")
    client, _ = _client(folder, tmp_path / "r.sqlite")
    response = client.get("/api/cases/case1/layers/uncertainty.nii")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert str(tmp_path / "pred" / "uncertainty" / "case1.nii.gz") in detail and "NaN" in detail
    assert client.get("/api/cases/case2/layers/uncertainty.nii").status_code == 200


# ---- files that vanish or change while the app runs --------------------------------------------


def test_a_file_deleted_while_the_app_runs_is_named_not_a_server_error(evaluate_out, toy, tmp_path):
    folder = copy_evaluate(evaluate_out, toy, tmp_path)
    client, _ = _client(folder, tmp_path / "r.sqlite")
    assert client.get("/api/cases/case1/layers/segmentation.nii").status_code == 200  # cached now
    gone = tmp_path / "pred" / "case1.nii.gz"
    gone.unlink()
    case = client.get("/api/cases/case1")
    assert case.status_code == 200 and case.json()["focus"] is None
    for layer in ("segmentation", "error", "reference"):  # the reference is checked against the segmentation's grid
        response = client.get(f"/api/cases/case1/layers/{layer}.nii")
        assert response.status_code == 422, layer
        assert response.json()["detail"] == f"{gone}: is missing (it was there when the review started)"
    assert client.get("/api/cases/case2/layers/reference.nii").status_code == 200


def test_a_file_rewritten_in_place_with_its_old_time_is_served_anew(evaluate_out, toy, tmp_path):
    segs = tmp_path / "segs_nii"  # uncompressed: a rewrite with other voxels keeps the size
    segs.mkdir()
    for path in toy["segs"].glob("*.nii.gz"):
        image = nibabel.load(path)
        nibabel.save(nibabel.Nifti1Image(np.asarray(image.dataobj), image.affine),
                     segs / path.name.replace(".nii.gz", ".nii"))
    client, _ = _client(evaluate_out, tmp_path / "r.sqlite", segs=segs)

    def served() -> np.ndarray:
        response = client.get("/api/cases/case0/layers/segmentation.nii")
        assert response.status_code == 200
        return np.asarray(nibabel.Nifti1Image.from_bytes(response.content).dataobj)

    before = served()
    assert before.any()
    first_focus = client.get("/api/cases/case0").json()["focus"]
    path = segs / "case0.nii"
    stat = path.stat()
    image = nibabel.load(path)
    replaced = np.zeros(image.shape, np.uint8)
    replaced[0:3, 0:3, 0:2] = 1
    nibabel.save(nibabel.Nifti1Image(replaced, image.affine, header=image.header), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert np.array_equal(served(), replaced)
    assert client.get("/api/cases/case0").json()["focus"] == [1, 1, 0] != first_focus


# ---- requests -----------------------------------------------------------------------------------


def test_a_comment_with_a_lone_surrogate_is_refused_with_a_clear_422(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    client, session = _client(qc_out, db)
    for body, status, start in [('{"decision": "accept", "comment": "\\ud800"}', 422, "invalid request: comment:"),
                                ('{"decision": "accept", "comment": "ok \\udfff"}', 422, "invalid request: comment:"),
                                ("{bad json", 422, "invalid request"),
                                ('{"decision": "\\udfff"}', 422, "decision must be one of"),
                                ('{"decision": "accept", "label": "\\ud800"}', 404, "unknown class")]:
        response = client.post("/api/cases/case0/decisions", content=body,
                               headers={"X-Segqc-Token": session.token, "content-type": "application/json"})
        assert response.status_code == status, body
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail.startswith(start), (body, detail)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM decisions").fetchall() == [(0,)]


# ---- worst first for distances -----------------------------------------------------------------


def test_worst_first_puts_the_largest_distance_first(toy, tmp_path):
    from segqc.evaluation.evaluate import evaluate_folder

    out = tmp_path / "ev_hd"
    evaluate_folder(toy["segs"], toy["gt"], out, metrics=("hd95",))
    table = pd.read_csv(out / "metrics.csv", dtype={"case": str, "label": str})
    per_case = table.pivot_table(index="case", columns="label", values="value")
    # the fixture shifts case i by 2 i voxels: every class's distance grows with i, case0 is perfect
    assert list(per_case.index) == ["case0", "case1", "case2", "case3"]
    assert (per_case.diff().iloc[1:] > 0).all().all() and (per_case.loc["case0"] == 0).all()
    client, _ = _client(out, tmp_path / "r.sqlite")
    assert [r["id"] for r in client.get("/api/worklist").json()["cases"]] == ["case3", "case2", "case1", "case0"]
    one_class = client.get("/api/worklist", params={"label": "1"}).json()["cases"]
    expected = table[table["label"] == "1"].sort_values("value", ascending=False)
    assert [r["id"] for r in one_class] == list(expected["case"])
    assert [r["estimate"] for r in one_class] == pytest.approx(list(expected["value"]))


# ---- databases ----------------------------------------------------------------------------------


def test_export_of_an_empty_file_changes_nothing_and_is_one_error(tmp_path):
    empty = tmp_path / "db" / "empty.sqlite"
    empty.parent.mkdir()
    empty.touch()
    before = _file_state(empty)
    line = one_error_line(runner.invoke(cli, ["review", "export", str(empty), "-o", str(tmp_path / "d.csv")]))
    assert line.startswith(f"error: {empty}:") and "not a segqc review database" in line
    assert _file_state(empty) == before and empty.stat().st_size == 0
    assert not (tmp_path / "d.csv").exists()


_OTHER_PROGRAMS = {
    "patients": "CREATE TABLE patients (id INTEGER, name TEXT)",
    # a table named decisions, of other columns or of segqc's own but without its view: opening one
    # switched the file to WAL and added segqc's index, view and triggers before refusing it, and
    # the program's own UPDATE and DELETE failed from then on
    "decisions of other columns": 'CREATE TABLE decisions (id INTEGER PRIMARY KEY, "case" TEXT, label TEXT, '
                                  "rater TEXT, verdict TEXT)",
    "decisions of segqc's columns": 'CREATE TABLE decisions (id INTEGER PRIMARY KEY, "case" TEXT, label TEXT, '
                                    "rater TEXT, decision TEXT, comment TEXT, decided_at TEXT, estimate REAL)",
}


@pytest.mark.parametrize("schema", list(_OTHER_PROGRAMS))
def test_a_database_of_another_program_is_neither_exported_nor_opened_nor_changed(qc_out, tmp_path, schema):
    other = tmp_path / "db" / "other.db"
    other.parent.mkdir()
    with sqlite3.connect(other) as connection:
        connection.execute(_OTHER_PROGRAMS[schema])
        table = "patients" if schema == "patients" else "decisions"
        connection.execute(f"INSERT INTO {table} (id) VALUES (1)")
    connection.close()
    before = _file_state(other)
    line = one_error_line(runner.invoke(cli, ["review", "export", str(other), "-o", str(tmp_path / "d.csv")]))
    assert line.startswith(f"error: {other}:") and "segqc review database" in line
    line = one_error_line(runner.invoke(cli, ["review", "open", str(qc_out), "--db", str(other), "--no-browser"]))
    assert line.startswith(f"error: {other}:") and "not a segqc review database" in line
    with pytest.raises(InputError, match="other.db"):
        DecisionStore(other)
    assert _file_state(other) == before
    with sqlite3.connect(other) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [(table,)]
        connection.execute(f"DELETE FROM {table}")  # the program's own writes still work
    connection.close()


def test_an_empty_file_may_become_the_review_database_and_export_reads_without_writing(qc_out, tmp_path):
    db = tmp_path / "db" / "new.sqlite"
    db.parent.mkdir()
    db.touch()
    store = DecisionStore(db)
    store.record("case0", "accept", rater="anna")
    before = _file_state(db)
    result = runner.invoke(cli, ["review", "export", str(db), "-o", str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    assert _file_state(db)[0] == before[0]
    assert pd.read_csv(tmp_path / "d.csv")["decision"].tolist() == ["accept"]


def test_export_of_a_folder_or_to_a_folder_says_so(tmp_path):
    db = tmp_path / "r.sqlite"
    DecisionStore(db).record("case0", "accept", rater="anna")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    line = one_error_line(runner.invoke(cli, ["review", "export", str(folder), "-o", str(tmp_path / "d.csv")]))
    assert line.startswith(f"error: {folder}: is a folder")
    line = one_error_line(runner.invoke(cli, ["review", "export", str(db), "-o", str(folder)]))
    assert line == f"error: {folder}: is a folder; give a file name"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = one_error_line(runner.invoke(cli, ["review", "export", str(db), "-o", str(blocker / "d.csv")]))
    assert line.startswith(f"error: {blocker / 'd.csv'}:") and f"its parent {blocker} is a file" in line


# ---- starting and stopping the server ----------------------------------------------------------


def test_a_busy_port_is_one_error_naming_host_and_port(qc_out, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"127.0.0.1:{port}"):
            check_address("127.0.0.1", port)
        result = runner.invoke(cli, ["review", "open", str(qc_out), "--db", str(tmp_path / "r.sqlite"),
                                     "--no-browser", "--port", str(port)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: 127.0.0.1:{port}: cannot listen there")
    assert "in use" in errors[0]
    assert not (tmp_path / "r.sqlite").exists()  # refused before the database was made
    assert "ERROR" not in result.output and "Errno" not in result.output


def test_an_unknown_host_is_one_error_naming_it(qc_out, tmp_path):
    result = runner.invoke(cli, ["review", "open", str(qc_out), "--db", str(tmp_path / "r.sqlite"),
                                 "--no-browser", "--host", "999.1.1.1"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 999.1.1.1: cannot listen there: unknown host")
    assert "Errno" not in result.output


def test_ctrl_c_stops_the_review_with_a_plain_line_and_exit_0(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "segqc", "review", "open", str(qc_out), "--db", str(db), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "review at" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(120), "".join(lines)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)  # stdout is read by the reader thread only
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert process.returncode == 0, (lines, stderr)
    assert f"review stopped; decisions are saved in {db}\n" in lines
    assert "error" not in stderr and "Traceback" not in stderr


def test_the_volume_cache_holds_no_more_bytes_than_its_budget_but_always_the_layer_just_read(tmp_path):
    """Twelve layers of a whole-body CT (an int16 image of 300 MB, label maps of 150 MB) held
    several GB in the server; the cache now also stops at a byte budget."""
    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image
    from segqc.review.volumes import VolumeCache
    from segqc.review.worklist import ReviewCase

    cases = []
    for i in range(3):
        path = tmp_path / f"seg{i}.nii.gz"
        write_image(path, np.full((40, 40, 10), i + 1, np.uint8), Geometry.from_shape((40, 40, 10), (1.0, 1.0, 1.0)))
        cases.append(ReviewCase(f"c{i}", False, "", None, {}, files={"segmentation": path}))
    one = len(VolumeCache().layer(cases[0], "segmentation"))  # 16 000 voxels + the NIfTI header
    cache = VolumeCache(size=12, max_bytes=2 * one + one // 2)
    for case in cases:
        cache.layer(case, "segmentation")
    held = [nibabel.Nifti1Image.from_bytes(data).get_fdata().max() for data in cache._items.values()]
    assert held == [2, 3]  # the oldest went first
    tiny = VolumeCache(size=12, max_bytes=10)
    assert len(tiny.layer(cases[0], "segmentation")) == one and len(tiny._items) == 1


# ---- one database, several lists; classes without a value ---------------------------------------


def test_decisions_on_cases_of_another_list_in_the_same_file_count_nowhere(qc_out, tmp_path):
    """One `--db` shared by the reviews of two folders: the second folder's page said "6 of 6
    reviewed" before any of its cases was decided, and its summary counted the first folder's
    decisions (and would have mixed them into κ)."""
    db = tmp_path / "shared.sqlite"
    elsewhere = DecisionStore(db)
    for case in ("other0", "other1", "other2"):  # cases of another folder's list
        elsewhere.record(case, "reject", rater="anna")
        elsewhere.record(case, "accept", rater="ben")
    client, session = _client(qc_out, db)
    listed = [case.id for case in session.worklist.cases]
    assert client.get("/api/worklist").json()["reviewed"] == 0
    summary = client.get("/api/summary").json()
    assert summary["counts"] == {} and summary["kappa"] == []
    session.store.record(listed[0], "accept", rater="anna")
    session.store.record(listed[0], "reject", rater="ben")
    assert client.get("/api/worklist").json()["reviewed"] == 1
    summary = client.get("/api/summary").json()
    assert summary["counts"]["anna"]["accept"] == 1 and summary["counts"]["anna"]["reject"] == 0
    assert summary["kappa"] == [{"raters": ["anna", "ben"], "n": 1, "kappa": pytest.approx(0.0)}]


def test_a_class_filter_lists_the_cases_without_a_value_of_it_first_as_the_whole_list_does(tmp_path):
    """With a class chosen, cases without a value of that class came last, after every scored case,
    though the whole list (and the README) puts cases without a value first."""
    from segqc.evaluation.evaluate import evaluate_folder
    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image

    geometry = Geometry.from_shape((12, 12, 4), spacing=(1.0, 1.0, 1.0))
    for k in range(4):
        gt = np.zeros(geometry.shape, np.uint8)
        gt[2:8, 2:8] = 1
        if k < 2:  # cases c0 and c1 hold class 2; c2 and c3 do not, in the truth nor the prediction
            gt[9:11, 9:11] = 2
        pred = gt.copy()
        pred[2:8, 2 + k:8] = 0 if k else 1  # c0 perfect, then ever more of class 1 missed
        write_image(tmp_path / "gt" / f"c{k}.nii.gz", gt, geometry)
        write_image(tmp_path / "pred" / f"c{k}.nii.gz", pred, geometry)
    out = tmp_path / "ev"
    table = evaluate_folder(tmp_path / "pred", tmp_path / "gt", out, metrics=("dice",))
    class2 = table[table["label"] == "2"].set_index("case")["value"].dropna()
    assert sorted(class2.index) == ["c0", "c1"]  # no value of class 2 for c2 and c3
    client, _ = _client(out, tmp_path / "r.sqlite")
    ids = [row["id"] for row in client.get("/api/worklist", params={"label": "2"}).json()["cases"]]
    assert sorted(ids[:2]) == ["c2", "c3"] and sorted(ids[2:]) == ["c0", "c1"]


def test_a_blank_rater_is_refused_before_the_database_is_made(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    line = one_error_line(runner.invoke(cli, ["review", "open", str(qc_out), "--db", str(db), "--rater", "  ",
                                              "--no-browser", "--port", "0"]))
    assert "--rater must not be empty" in line
    assert not db.exists()
