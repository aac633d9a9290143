"""The review app's API (FastAPI TestClient) and its decision store. Expected values come from
the files the QC run wrote (read with pandas / nibabel) and from direct SQL on the database, not
from the app's own code."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from segqc.cli.main import app as cli
from segqc.errors import InputError
from segqc.report.agreement import cohens_kappa
from segqc.review.app import ReviewSession, create_app
from segqc.review.store import DecisionStore
from segqc.review.worklist import load_worklist

runner = CliRunner()
LOCAL = "http://127.0.0.1"


def _client(qc_out: Path, db: Path, rater: str = "anna") -> tuple[TestClient, ReviewSession]:
    session = ReviewSession(load_worklist(qc_out), DecisionStore(db), rater)
    return TestClient(create_app(session), base_url=LOCAL), session


def _post(client: TestClient, session: ReviewSession, case: str, decision: str, **body):
    return client.post(f"/api/cases/{case}/decisions", json={"decision": decision, **body},
                       headers={"X-Segqc-Token": session.token})


def _worklist_csv(qc_out: Path) -> pd.DataFrame:
    return pd.read_csv(qc_out / "worklist.csv", dtype={"case": str})


def _sql(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def test_worklist_is_worst_first_with_the_flags_of_worklist_csv(qc_out, tmp_path):
    client, _ = _client(qc_out, tmp_path / "r.sqlite")
    rows = client.get("/api/worklist").json()["cases"]
    expected = _worklist_csv(qc_out)
    assert [r["id"] for r in rows] == list(expected["case"])
    assert [r["flagged"] for r in rows] == [bool(f) for f in expected["flag"]]
    assert [r["estimate"] for r in rows] == pytest.approx(list(expected["dice_estimate"]))
    flagged = client.get("/api/worklist", params={"flagged": "true"}).json()["cases"]
    assert [r["id"] for r in flagged] == list(expected[expected["flag"]]["case"])
    assert 0 < len(flagged) < len(rows)  # the fixture has both kinds


def test_a_decision_persists_and_the_view_returns_the_latest(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    client, session = _client(qc_out, db)
    case = _worklist_csv(qc_out)["case"].iloc[0]
    assert _post(client, session, case, "accept").status_code == 200
    assert _post(client, session, case, "reject", comment="RV leaks into the atrium").status_code == 200
    # a new app on the same file (a restart) sees both rows, and the latest as the current one
    client2, _ = _client(qc_out, db)
    row = next(r for r in client2.get("/api/worklist").json()["cases"] if r["id"] == case)
    assert row["decision"] == "reject"
    history = client2.get(f"/api/cases/{case}").json()["history"]
    assert [h["decision"] for h in history] == ["accept", "reject"]
    assert _sql(db, 'SELECT decision, comment FROM current_decisions WHERE "case" = ' + repr(case)) == [
        ("reject", "RV leaks into the atrium")]
    assert _sql(db, "SELECT COUNT(*) FROM decisions") == [(2,)]


def test_the_decision_keeps_the_estimate_shown_at_that_time(qc_out, tmp_path):
    client, session = _client(qc_out, tmp_path / "r.sqlite")
    qc = pd.read_csv(qc_out / "qc.csv", dtype={"case": str, "label": str})
    case = "case2"
    whole = _post(client, session, case, "unsure").json()
    one_class = _post(client, session, case, "needs_fix", label="2").json()
    expected = qc[(qc["case"] == case) & (qc["metric"] == "dice")].set_index("label")["estimate"]
    assert whole["estimate"] == pytest.approx(expected["all"])
    assert one_class["estimate"] == pytest.approx(expected["2"])
    assert one_class["label"] == "2"


def test_resume_is_the_first_unreviewed_case(qc_out, tmp_path):
    client, session = _client(qc_out, tmp_path / "r.sqlite")
    order = list(_worklist_csv(qc_out)["case"])
    assert client.get("/api/worklist").json()["resume"] == order[0]
    _post(client, session, order[0], "accept")
    _post(client, session, order[2], "accept")
    _post(client, session, order[1], "reject", label="1")  # one class only: the case is not reviewed yet
    data = client.get("/api/worklist").json()
    assert data["resume"] == order[1]
    assert data["reviewed"] == 2
    assert [r["id"] for r in client.get("/api/worklist", params={"unreviewed": "true"}).json()["cases"]] == \
        [c for c in order if c not in (order[0], order[2])]


def test_posts_need_the_session_token(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    client, session = _client(qc_out, db)
    url = "/api/cases/case0/decisions"
    assert client.post(url, json={"decision": "accept"}).status_code == 403
    assert client.post(url, json={"decision": "accept"}, headers={"X-Segqc-Token": "guess"}).status_code == 403
    other = ReviewSession(session.worklist, session.store, "anna")  # another server's token
    assert client.post(url, json={"decision": "accept"}, headers={"X-Segqc-Token": other.token}).status_code == 403
    assert _sql(db, "SELECT COUNT(*) FROM decisions") == [(0,)]
    page = client.get("/").text
    assert f'content="{session.token}"' in page  # the page served from localhost carries it


@pytest.mark.parametrize("path", [
    "/api/cases/nope", "/api/cases/..%2F..%2Fetc%2Fpasswd", "/api/cases/../../etc/passwd",
    "/api/cases/case0/layers/..%2Freport.json", "/api/cases/case0/layers/qc.csv",
    "/api/cases/case0/layers/image", "/api/cases/case0/layers/uncertainty.nii",
    "/api/cases/%2Fetc%2Fpasswd/layers/image.nii", "/static/..%2Fapp.py", "/static/index.html.bak",
])
def test_unknown_ids_and_traversal_are_404(qc_out, tmp_path, path):
    client, _ = _client(qc_out, tmp_path / "r.sqlite")
    assert client.get(path).status_code == 404


def test_decisions_on_unknown_cases_classes_or_values_are_refused(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    client, session = _client(qc_out, db)
    assert _post(client, session, "..%2Fnope", "accept").status_code == 404
    assert _post(client, session, "case0", "accept", label="7").status_code == 404
    assert _post(client, session, "case0", "maybe").status_code == 422
    assert _sql(db, "SELECT COUNT(*) FROM decisions") == [(0,)]


def test_requests_for_other_hosts_are_refused(qc_out, tmp_path):
    session = ReviewSession(load_worklist(qc_out), DecisionStore(tmp_path / "r.sqlite"), "anna")
    assert TestClient(create_app(session), base_url="http://attacker.example").get("/api/session").status_code == 400
    assert TestClient(create_app(session), base_url="http://localhost:8000").get("/api/session").status_code == 200


def _served(client: TestClient, case: str, layer: str) -> nibabel.Nifti1Image:
    response = client.get(f"/api/cases/{case}/layers/{layer}.nii")
    assert response.status_code == 200
    return nibabel.Nifti1Image.from_bytes(response.content)


def test_layers_hold_the_files_voxels_on_their_grid(qc_out, toy, tmp_path):
    client, _ = _client(qc_out, tmp_path / "r.sqlite")
    info = client.get("/api/cases/case1").json()
    assert info["layers"] == ["image", "segmentation", "reference", "error"]
    image_file = nibabel.load(toy["images"] / "case1_0000.nii.gz")
    seg_file = nibabel.load(toy["segs"] / "case1.nii.gz")
    pgt_file = nibabel.load(qc_out / "pgt" / "case1.nii.gz")
    image = _served(client, "case1", "image")
    np.testing.assert_allclose(image.get_fdata()[..., 0] if image.ndim == 4 else image.get_fdata(),
                               image_file.get_fdata())
    np.testing.assert_allclose(image.affine, image_file.affine, atol=1e-4)
    seg = _served(client, "case1", "segmentation")
    assert np.array_equal(np.asarray(seg.dataobj), np.asarray(seg_file.dataobj))
    assert seg.get_data_dtype() == np.uint8
    ref = _served(client, "case1", "reference")
    assert np.array_equal(np.asarray(ref.dataobj), np.asarray(pgt_file.dataobj))
    error = np.asarray(_served(client, "case1", "error").dataobj)
    expected = np.asarray(seg_file.dataobj) != np.asarray(pgt_file.dataobj)
    assert expected.any() and np.array_equal(error.astype(bool), expected)


def test_export_equals_the_database(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    anna, session_a = _client(qc_out, db, "anna")
    ben, session_b = _client(qc_out, db, "ben")
    _post(anna, session_a, "case0", "accept")
    _post(anna, session_a, "case0", "reject", comment='quote " and, comma')
    _post(ben, session_b, "case0", "reject")
    _post(ben, session_b, "case1", "needs_fix", label="1", comment="line\nbreak")
    result = runner.invoke(cli, ["review", "export", str(db), "-o", str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(tmp_path / "d.csv", dtype={"case": str, "label": str}, keep_default_na=False)
    rows = _sql(db, 'SELECT "case", label, rater, decision, comment, decided_at FROM current_decisions ORDER BY id')
    assert [tuple(r) for r in exported[["case", "label", "rater", "decision", "comment", "decided_at"]]
            .itertuples(index=False)] == rows
    assert len(rows) == 3
    runner.invoke(cli, ["review", "export", str(db), "-o", str(tmp_path / "all.json"), "--history"])
    records = json.loads((tmp_path / "all.json").read_text())
    assert [(r["case"], r["rater"], r["decision"], r["comment"]) for r in records] == \
        _sql(db, 'SELECT "case", rater, decision, comment FROM decisions ORDER BY id')


def test_concurrent_writes_of_two_raters_are_all_kept(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    clients = [_client(qc_out, db, rater) for rater in ("anna", "ben")]
    cases = list(_worklist_csv(qc_out)["case"])
    failures: list[int] = []

    def write(client, session, decision):
        for i in range(40):
            response = _post(client, session, cases[i % len(cases)], decision, comment=str(i))
            if response.status_code != 200:
                failures.append(response.status_code)

    threads = [threading.Thread(target=write, args=(*clients[k], d)) for k, d in enumerate(("accept", "reject"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert _sql(db, "SELECT rater, decision, COUNT(*) FROM decisions GROUP BY rater ORDER BY rater") == [
        ("anna", "accept", 40), ("ben", "reject", 40)]
    assert _sql(db, "SELECT COUNT(*) FROM current_decisions") == [(2 * len(cases),)]
    assert _sql(db, "PRAGMA journal_mode") == [("wal",)]


def test_the_decisions_table_is_append_only(tmp_path):
    db = tmp_path / "r.sqlite"
    DecisionStore(db).record("case0", "accept", rater="anna")
    with sqlite3.connect(db) as connection:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("UPDATE decisions SET decision = 'reject'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM decisions")
    assert _sql(db, "SELECT decision FROM decisions") == [("accept",)]


def test_a_file_that_is_not_a_database_is_one_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database " * 100)
    with pytest.raises(InputError, match="bad.sqlite"):
        DecisionStore(bad)
    result = runner.invoke(cli, ["review", "export", str(bad), "-o", str(tmp_path / "d.csv")])
    assert result.exit_code == 2 and "bad.sqlite" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["review", "export", str(tmp_path / "missing.sqlite"), "-o", str(tmp_path / "d.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "missing.sqlite").exists()


def test_review_of_a_folder_without_segqc_output_is_one_error(tmp_path):
    result = runner.invoke(cli, ["review", str(tmp_path), "--no-browser"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(tmp_path) in result.output


def test_summary_counts_decisions_and_kappa_of_two_raters(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    anna, session_a = _client(qc_out, db, "anna")
    ben, session_b = _client(qc_out, db, "ben")
    for case, a, b in [("case0", "accept", "accept"), ("case1", "accept", "reject"),
                       ("case2", "reject", "reject"), ("case3", "reject", "reject")]:
        _post(anna, session_a, case, a)
        _post(ben, session_b, case, b)
    summary = anna.get("/api/summary").json()
    assert summary["counts"]["anna"] == {"accept": 2, "reject": 2, "needs_fix": 0, "unsure": 0}
    assert summary["counts"]["ben"] == {"accept": 1, "reject": 3, "needs_fix": 0, "unsure": 0}
    # by hand: p_o = 3/4, p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2, kappa = (3/4 - 1/2) / (1 - 1/2) = 0.5
    assert summary["kappa"] == [{"raters": ["anna", "ben"], "n": 4, "kappa": pytest.approx(0.5)}]


@pytest.mark.parametrize(("first", "second", "expected"), [
    # 2 x 2 table [[20, 5], [10, 15]]: p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5 -> 0.4
    (["y"] * 25 + ["n"] * 25, ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15, 0.4),
    (["a", "b", "a", "b"], ["b", "a", "b", "a"], -1.0),      # complete disagreement, balanced
    (["a", "a", "a"], ["a", "a", "a"], 1.0),                # one category used by both: perfect
    # three categories: table [[2,1,0],[0,2,1],[1,0,3]], n = 10: p_o = 0.7,
    # p_e = (3*3 + 3*3 + 4*4) / 100 = 0.34 -> (0.7 - 0.34) / 0.66
    (list("aaabbbcccc"), list("aabbbccacc"), (0.7 - 0.34) / 0.66),
])
def test_cohens_kappa_hand_computed(first, second, expected):
    assert cohens_kappa(first, second) == pytest.approx(expected)


def test_cohens_kappa_of_nothing_is_nan_and_unpaired_lists_are_refused():
    assert np.isnan(cohens_kappa([], []))
    with pytest.raises(ValueError, match="pair"):
        cohens_kappa(["a"], ["a", "b"])


def test_export_to_json_and_csv_hold_the_same_rows(qc_out, tmp_path):
    db = tmp_path / "r.sqlite"
    client, session = _client(qc_out, db)
    for case in ("case0", "case1"):
        _post(client, session, case, "accept", comment="ok")
    runner.invoke(cli, ["review", "export", str(db), "-o", str(tmp_path / "d.json")])
    runner.invoke(cli, ["review", "export", str(db), "-o", str(tmp_path / "d.csv")])
    from_json = pd.DataFrame(json.loads((tmp_path / "d.json").read_text()))
    from_csv = pd.read_csv(io.StringIO((tmp_path / "d.csv").read_text()), dtype={"case": str, "label": str})
    assert list(from_json["case"]) == list(from_csv["case"]) == ["case0", "case1"]
    assert list(from_json["estimate"]) == pytest.approx(list(from_csv["estimate"]))


def test_the_viewer_opens_at_the_centre_of_the_segmentation(qc_out, toy, tmp_path):
    client, _ = _client(qc_out, tmp_path / "r.sqlite")
    seg = np.asarray(nibabel.load(toy["segs"] / "case1.nii.gz").dataobj)
    present = np.argwhere(seg > 0)
    expected = ((present.min(axis=0) + present.max(axis=0)) // 2).tolist()
    focus = client.get("/api/cases/case1").json()["focus"]
    assert focus == expected
    assert seg[tuple(focus)] > 0 or seg[:, :, focus[2]].any()  # the slice shown holds the segmentation


def test_a_reference_that_is_the_segmentation_itself_is_no_layer_and_unflagged_cases_have_no_reason(
        toy, qc_out, tmp_path):
    """An evaluation of the ground truths against themselves records the same file twice: showing
    it again as a "reference" layer would hide nothing and mislead. A worklist row that is not
    flagged shows no reason, whatever text the CSV carries."""
    from segqc.evaluation.evaluate import evaluate_folder

    out = tmp_path / "self"
    evaluate_folder(toy["gt"], toy["gt"], out, metrics=("dice",), same_folder_ok=True)
    worklist = load_worklist(out)
    assert worklist.cases and all("reference" not in case.files for case in worklist.cases)
    edited = tmp_path / "qc"
    shutil.copytree(qc_out, edited)
    table = pd.read_csv(edited / "worklist.csv")
    table["reason"] = table["reason"].astype(object)
    table.loc[~table["flag"].astype(bool), "reason"] = "left over text"
    table.to_csv(edited / "worklist.csv", index=False)
    cases = load_worklist(edited).cases
    assert any(not c.flagged for c in cases) and all(c.reason == "" for c in cases if not c.flagged)
