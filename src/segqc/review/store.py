"""The decisions of a review, in one SQLite file (standard library ``sqlite3``, WAL mode).

Every decision is one appended row of the ``decisions`` table — case, label (``all`` for the
whole case, or a class value), rater, decision, comment, time (UTC, ISO 8601) and the QC
estimate shown when it was taken. Triggers refuse UPDATE and DELETE, so the table is the full
history; the view ``current_decisions`` holds the latest row per (case, label, rater). Each
operation opens its own connection (safe from the threads of a web server and from several
processes at once; writers wait up to ``timeout`` seconds for one another).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from segqc.errors import InputError

DECISIONS = ("accept", "reject", "needs_fix", "unsure")
"""The allowed decisions, in the order of the keys A, R, F, U."""

COLUMNS = ["id", "case", "label", "rater", "decision", "comment", "decided_at", "estimate"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    "case" TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT 'all',
    rater TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ({", ".join(repr(d) for d in DECISIONS)})),
    comment TEXT NOT NULL DEFAULT '',
    decided_at TEXT NOT NULL,
    estimate REAL
);
CREATE INDEX IF NOT EXISTS decisions_by_case ON decisions ("case", label, rater, id);
CREATE TRIGGER IF NOT EXISTS decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE VIEW IF NOT EXISTS current_decisions AS
SELECT d.* FROM decisions AS d
WHERE d.id = (SELECT MAX(e.id) FROM decisions AS e
              WHERE e."case" = d."case" AND e.label = d.label AND e.rater = d.rater);
"""


class DecisionStore:
    """The review database at ``path``. Writable (the default): a missing or empty file is created
    with its schema; an existing database must hold segqc's ``decisions`` table (a database of
    anything else is refused, never altered). ``readonly``: the file must exist and hold the table;
    it is opened read-only (SQLite ``mode=ro``), so reading it changes nothing."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0, readonly: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.readonly = readonly
        if self.path.is_dir():
            raise InputError("is a folder; give the review database file", self.path)
        if readonly and not self.path.exists():
            raise InputError("does not exist", self.path)
        if self.path.exists() and not self.path.is_file():
            raise InputError("is not a file; give the review database file", self.path)
        if not readonly:
            from segqc.io.atomic import check_writable_file

            check_writable_file(self.path)
        tables, columns = (self._schema() if self.path.exists() and (readonly or self.path.stat().st_size)
                           else (set(), set()))
        # another program's database is refused before anything is written to it (WAL mode, schema)
        if tables and "decisions" not in tables:
            raise InputError("is a SQLite database without a decisions table, not a segqc review database; "
                             "give another file", self.path)
        if readonly and not tables:
            raise InputError("is not a segqc review database (it has no decisions table)", self.path)
        if tables and set(COLUMNS) - columns:
            raise InputError(f"has a decisions table without the columns {sorted(set(COLUMNS) - columns)}, "
                             "not a segqc review database; give another file", self.path)
        if tables and "current_decisions" not in tables:
            raise InputError("has a decisions table but not segqc's view current_decisions, not a segqc review "
                             "database; give another file", self.path)
        if not readonly:
            try:
                with self._connect() as connection:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.executescript(_SCHEMA)
            except sqlite3.DatabaseError as error:
                raise InputError(f"is not a segqc review database ({error})", self.path) from None

    def _schema(self) -> tuple[set[str], set[str]]:
        """The names of the tables and views of the existing database file and the columns of its
        ``decisions`` table, read without changing it."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=self.timeout)
            try:
                rows = connection.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
                columns = connection.execute("PRAGMA table_info(decisions)").fetchall()
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            raise InputError(f"is not a segqc review database ({error})", self.path) from None
        return {str(row[0]) for row in rows}, {str(row[1]) for row in columns}

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            connection = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=self.timeout,
                                         isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            yield connection
        finally:
            connection.close()

    def record(self, case: str, decision: str, *, rater: str, label: str = "all", comment: str = "",
               estimate: float | None = None, decided_at: datetime | None = None) -> dict[str, object]:
        """Append one decision; returns the stored row. Raises ``ValueError`` for a decision
        outside :data:`DECISIONS` or an empty case or rater."""
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
        if not case or not rater.strip():
            raise ValueError("a decision needs a case and a rater")
        when = (decided_at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
        value = None if estimate is None or not math.isfinite(estimate) else float(estimate)
        with self._connect() as connection:
            cursor = connection.execute(
                'INSERT INTO decisions ("case", label, rater, decision, comment, decided_at, estimate) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (case, label, rater.strip(), decision, comment, when, value))
            row_id = cursor.lastrowid
        return {"id": row_id, "case": case, "label": label, "rater": rater.strip(), "decision": decision,
                "comment": comment, "decided_at": when, "estimate": value}

    def _frame(self, query: str, parameters: tuple[object, ...] = ()) -> pd.DataFrame:
        with self._connect() as connection:
            rows = connection.execute(query, parameters).fetchall()
        return pd.DataFrame(rows, columns=COLUMNS).astype({"case": str, "label": str, "rater": str})

    def current(self, rater: str | None = None) -> pd.DataFrame:
        """The latest decision per (case, label, rater), of one rater or of all; ordered by id."""
        select = 'SELECT id, "case", label, rater, decision, comment, decided_at, estimate FROM current_decisions'
        if rater is None:
            return self._frame(select + " ORDER BY id")
        return self._frame(select + " WHERE rater = ? ORDER BY id", (rater,))

    def history(self, case: str | None = None) -> pd.DataFrame:
        """Every stored decision (of one case), oldest first."""
        select = 'SELECT id, "case", label, rater, decision, comment, decided_at, estimate FROM decisions'
        if case is None:
            return self._frame(select + " ORDER BY id")
        return self._frame(select + ' WHERE "case" = ? ORDER BY id', (case,))

    def raters(self) -> list[str]:
        """The raters with at least one decision, alphabetically."""
        with self._connect() as connection:
            return [row[0] for row in connection.execute("SELECT DISTINCT rater FROM decisions ORDER BY rater")]


def export_decisions(store: DecisionStore, output: str | Path, *, history: bool = False) -> pd.DataFrame:
    """Write the current decisions (every row with ``history``) to ``output``: CSV, or JSON (a
    list of records) when the name ends in ``.json``. Returns the written table (without ``id``).
    Raises :class:`InputError` naming ``output`` when it is a folder or a parent of it is a file."""
    from segqc.io.atomic import atomic_path, check_writable_file, json_safe

    target = Path(output)
    check_writable_file(target)
    table = (store.history() if history else store.current()).drop(columns=["id"])
    with atomic_path(target) as tmp:
        if target.suffix.lower() == ".json":  # every digit of the estimates (pandas' to_json keeps 10)
            records = json_safe(table.astype(object).where(table.notna(), None).to_dict(orient="records"))
            Path(tmp).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
        else:
            table.to_csv(tmp, index=False)
    return table


def rater_agreement(current: pd.DataFrame) -> list[dict[str, object]]:
    """Cohen's κ of every pair of raters over the cases both decided as a whole (label ``all``)
    in a table of current decisions; ``kappa`` is None when they share no case."""
    from itertools import combinations

    from segqc.report.agreement import cohens_kappa

    whole = current[current["label"] == "all"]
    out: list[dict[str, object]] = []
    for first, second in combinations(sorted(set(whole["rater"])), 2):
        a = whole[whole["rater"] == first].set_index("case")["decision"]
        b = whole[whole["rater"] == second].set_index("case")["decision"]
        both = a.index.intersection(b.index)
        out.append({"raters": [first, second], "n": int(len(both)),
                    "kappa": cohens_kappa(list(a.loc[both]), list(b.loc[both])) if len(both) else None})
    return out
