"""The review decision store: which rows are current, per rater; how rater names, times
and estimates are stored; and which rows the raters' agreement is computed on. Expected values
come from direct SQL on the database file and from scikit-learn's ``cohen_kappa_score``, not from
the store's own code."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from segqc.review.store import DecisionStore, rater_agreement


def _rows(db: Path, query: str) -> list[tuple]:
    """Rows of ``query`` read straight from the SQLite file."""
    connection = sqlite3.connect(db)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_a_class_decision_keeps_the_raters_whole_case_decision_current(tmp_path):
    """Reference: the rows appended (hand list); the latest row per (case, label, rater) is the
    whole-case accept and the class-1 reject, both current; a later whole-case row replaces only
    the first."""
    store = DecisionStore(tmp_path / "review.sqlite")
    store.record("c1", "accept", rater="ann")
    store.record("c1", "reject", rater="ann", label="1")
    current = store.current()
    assert sorted(zip(current["label"], current["decision"], strict=True)) == [("1", "reject"), ("all", "accept")]
    store.record("c1", "unsure", rater="ann")
    current = store.current()
    assert sorted(zip(current["label"], current["decision"], strict=True)) == [("1", "reject"), ("all", "unsure")]


def test_current_of_one_rater_holds_only_that_raters_rows(tmp_path):
    """Reference: SQL ``SELECT id FROM decisions WHERE rater = 'ann'`` on the file (every row of
    ann is current here: one per case)."""
    db = tmp_path / "review.sqlite"
    store = DecisionStore(db)
    store.record("c1", "accept", rater="ann")
    store.record("c1", "reject", rater="bob")
    store.record("c2", "needs_fix", rater="ann")
    store.record("c3", "accept", rater="bob")
    ann = store.current("ann")
    assert list(ann["id"]) == [row[0] for row in _rows(db, "SELECT id FROM decisions WHERE rater = 'ann' ORDER BY id")]
    assert list(ann["case"]) == ["c1", "c2"] and set(ann["rater"]) == {"ann"}
    assert list(store.current("bob")["case"]) == ["c1", "c3"]
    assert len(store.current()) == 4


def test_agreement_uses_only_whole_case_decisions(tmp_path):
    """Reference: scikit-learn's ``cohen_kappa_score`` of the two raters' whole-case decisions on
    the four cases, paired by case; their per-class decisions (which disagree) do not count."""
    store = DecisionStore(tmp_path / "review.sqlite")
    ann = {"c1": "accept", "c2": "accept", "c3": "reject", "c4": "reject"}
    bob = {"c1": "accept", "c2": "reject", "c3": "reject", "c4": "reject"}
    for case in ann:
        store.record(case, ann[case], rater="ann")
        store.record(case, bob[case], rater="bob")
    store.record("c1", "reject", rater="ann", label="1")
    store.record("c1", "needs_fix", rater="bob", label="1")
    store.record("c2", "unsure", rater="bob", label="2")
    [pair] = rater_agreement(store.current())
    expected = cohen_kappa_score([ann[c] for c in sorted(ann)], [bob[c] for c in sorted(ann)])
    assert pair["raters"] == ["ann", "bob"] and pair["n"] == 4
    assert pair["kappa"] == pytest.approx(expected)
    assert expected == pytest.approx(0.5)  # by hand: p_o = 3/4, p_e = (2*1 + 2*3)/16 = 1/2


def test_a_decision_time_with_another_offset_is_stored_in_utc(tmp_path):
    """Reference: hand conversion, 12:00 at +02:00 is 10:00 UTC; read back with SQL."""
    db = tmp_path / "review.sqlite"
    store = DecisionStore(db)
    when = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    row = store.record("c1", "accept", rater="ann", decided_at=when)
    assert row["decided_at"] == "2024-05-01T10:00:00.000+00:00"
    assert _rows(db, "SELECT decided_at FROM decisions") == [("2024-05-01T10:00:00.000+00:00",)]
    assert datetime.fromisoformat(row["decided_at"]) == when.astimezone(UTC)


def test_an_estimate_that_is_not_finite_is_stored_as_none(tmp_path):
    """Reference: SQL on the file; NaN and infinity become NULL (None), a finite value is kept."""
    db = tmp_path / "review.sqlite"
    store = DecisionStore(db)
    assert store.record("c1", "accept", rater="ann", estimate=math.nan)["estimate"] is None
    assert store.record("c2", "accept", rater="ann", estimate=math.inf)["estimate"] is None
    assert store.record("c3", "accept", rater="ann", estimate=0.25)["estimate"] == 0.25
    assert _rows(db, "SELECT estimate FROM decisions ORDER BY id") == [(None,), (None,), (0.25,)]


def test_the_rater_name_is_stored_stripped_and_a_blank_one_is_refused(tmp_path):
    """Reference: SQL on the file holds ``ann`` for a rater given as ``"  ann \\t"``; a rater of only
    spaces adds no row."""
    db = tmp_path / "review.sqlite"
    store = DecisionStore(db)
    store.record("c1", "accept", rater="  ann \t")
    assert _rows(db, "SELECT rater FROM decisions") == [("ann",)]
    assert list(store.current("ann")["case"]) == ["c1"]
    with pytest.raises(ValueError, match="rater"):
        store.record("c2", "accept", rater="   ")
    assert _rows(db, "SELECT COUNT(*) FROM decisions") == [(1,)]


def test_raters_are_listed_alphabetically_once_each(tmp_path):
    """Reference: Python's ``sorted`` of the distinct names recorded (in another order, one twice)."""
    store = DecisionStore(tmp_path / "review.sqlite")
    names = ["zoe", "adam", "mia", "adam", "bob"]
    for k, name in enumerate(names):
        store.record(f"c{k}", "accept", rater=name)
    assert store.raters() == sorted(set(names)) == ["adam", "bob", "mia", "zoe"]


def test_the_json_export_keeps_every_digit_of_the_estimates(tmp_path):
    """The JSON export went through pandas' to_json, which keeps 10 significant digits: 1e-13 came
    out as 0.0 and 1/3 as 0.3333333333, while the CSV held the stored values."""
    import json

    from segqc.review.store import export_decisions

    store = DecisionStore(tmp_path / "r.sqlite")
    estimates = {"a": 1e-13, "b": 1 / 3 + 2**-53, "c": None}
    for case, value in estimates.items():
        store.record(case, "accept", rater="x", estimate=value, comment="ü")
    export_decisions(store, tmp_path / "d.json")
    records = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert {r["case"]: r["estimate"] for r in records} == estimates
    stored = dict(_rows(tmp_path / "r.sqlite", 'SELECT "case", estimate FROM decisions'))
    assert {r["case"]: r["estimate"] for r in records} == stored
    assert [r["comment"] for r in records] == ["ü"] * 3 and "id" not in records[0]
