"""Atomic writes that fail leave nothing behind; the clean-up of killed writes removes their
temporaries only; the write journal accepts a run's own files; strict JSON of numpy values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segqc.errors import InputError
from segqc.io.atomic import (
    atomic_path,
    json_safe,
    read_journal,
    remove_temporaries,
    write_journal,
    write_text_atomic,
)


def test_a_write_that_fails_after_writing_its_temporary_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """A writer that wrote part of its temporary file and then raised: the previous output stays
    whole and the half-written temporary beside it is deleted (not left for a reader to find)."""
    out_file = tmp_path / "table.csv"
    out_file.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out_file) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("writer failed")
    assert out_file.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_the_temporaries_of_a_killed_write_are_removed_and_other_files_kept(tmp_path: Path) -> None:
    """Beside an output: its temporary file and its temporary folder (``.d``, an image writer's)
    are leftovers of a killed write; a temporary of another output and the output itself are not.
    Below a folder: only names of the temporary pattern (a hex token) go, a user's ``.tmp-notes``
    file stays."""
    out = tmp_path / "seg.nii.gz"
    out.write_text("done")
    (tmp_path / ".tmp-0a1b2c3d-seg.nii.gz").write_text("partial")
    folder = tmp_path / ".tmp-0a1b2c3d-seg.nii.gz.d"
    folder.mkdir()
    (folder / "part").write_text("partial")
    (tmp_path / ".tmp-99aa00ff-other.nii.gz").write_text("another output's")
    remove_temporaries([out])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-99aa00ff-other.nii.gz", "seg.nii.gz"]

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / ".tmp-deadbeef-x.csv").write_text("partial")
    (tree / ".tmp-notes.txt").write_text("the user's own file")
    remove_temporaries(folders=[tree])
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == [".tmp-notes.txt", "sub"]


def test_the_temporary_of_an_output_whose_name_ends_in_d_is_removed(tmp_path: Path) -> None:
    """An output named ``notes.d``: its temporary file ``.tmp-TOKEN-notes.d`` and folder
    ``.tmp-TOKEN-notes.d.d`` are leftovers (once missed: the ``.d`` was read as a folder's mark
    and the name as ``notes``); the temporary of an output ``notes`` stays."""
    out = tmp_path / "notes.d"
    out.write_text("done")
    (tmp_path / ".tmp-0a1b2c3d-notes.d").write_text("partial")
    (tmp_path / ".tmp-0a1b2c3d-notes.d.d").mkdir()
    (tmp_path / ".tmp-11aa22bb-notes").write_text("another output's")
    remove_temporaries([out])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-11aa22bb-notes", "notes.d"]


def test_a_file_written_earlier_in_the_same_journal_may_be_written_again(tmp_path: Path) -> None:
    """With ``own_files`` given (an earlier run wrote nothing here), the first write of a new file
    is journaled and a second write of it in the same run is allowed; a file that existed before
    and that neither list names is refused."""
    journal = tmp_path / "journal.txt"
    out = tmp_path / "out"
    out.mkdir()
    (out / "users.txt").write_text("mine")
    with write_journal(out, journal, own_files=[]):
        write_text_atomic(out / "a.txt", "one")
        write_text_atomic(out / "a.txt", "two")
        with pytest.raises(InputError, match="no segqc run"):
            write_text_atomic(out / "users.txt", "over")
    assert (out / "a.txt").read_text() == "two" and (out / "users.txt").read_text() == "mine"
    assert read_journal(journal) == ["a.txt", "a.txt"]


def test_a_journal_with_a_relative_root_records_the_files_below_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The root may be given relative to the working folder; the paths written below it are
    still recorded (relative to the root), so a killed case's files can be found."""
    monkeypatch.chdir(tmp_path)
    with write_journal("out", tmp_path / "journal.txt"):
        write_text_atomic(Path("out") / "sub" / "x.txt", "x")
        write_text_atomic(tmp_path / "elsewhere.txt", "not below the root")
    assert read_journal(tmp_path / "journal.txt") == ["sub/x.txt"]


def test_json_safe_gives_strict_json_for_numpy_values_tuples_and_infinities() -> None:
    """numpy integers and float32 become Python numbers, NaN and both infinities ``None`` (also
    inside tuples, which become lists), so ``json.dumps(..., allow_nan=False)`` accepts it."""
    value = {"n": np.int64(3), "f": np.float32(0.5), "inf": math.inf, "ninf": np.float32(-np.inf),
             "pair": (1, math.nan), 2: [np.float64(math.nan)]}
    safe = json_safe(value)
    assert safe == {"n": 3, "f": 0.5, "inf": None, "ninf": None, "pair": [1, None], "2": [None]}
    assert type(safe["n"]) is int and type(safe["f"]) is float
    json.dumps(safe, allow_nan=False)
