"""The case cache: settings are part of a case's key, hidden files are left out of a
model folder's digest, and a temporary part of a killed save is not a finished case."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import pandas as pd

from segqc.execution import CaseResult, CaseTask, run_cases
from segqc.execution.cache import CaseStore, case_key, directory_digest, settings_digest


def _inputs(root: Path, cases: tuple[str, ...] = ("a", "b")) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        paths[case] = root / f"{case}.txt"
        paths[case].write_text(case * 4)
    return paths


def _counted(task: CaseTask, calls: list[str]) -> CaseResult:
    calls.append(task.case)
    return CaseResult(table=pd.DataFrame([{"case": task.case, "n": len(task.inputs["text"][0].read_text())}]))


def test_case_keys_of_two_settings_differ_for_the_same_inputs(tmp_path):
    """Reference: the same input file under settings digests of {"mode": "a"} and {"mode": "b"}
    (distinct SHA-256 values, checked with hashlib) must not share a key; the same settings do."""
    path = _inputs(tmp_path / "in", ("a",))["a"]
    a, b = settings_digest({"mode": "a"}), settings_digest({"mode": "b"})
    assert a != b
    assert a == hashlib.sha256(b'{"mode": "a"}').hexdigest()  # the digest is the JSON text's SHA-256
    inputs = {"text": [path]}
    assert case_key(a, inputs) != case_key(b, inputs)
    assert case_key(a, inputs) == case_key(a, inputs)


def test_a_second_run_with_other_settings_into_one_folder_computes_every_case_again(tmp_path):
    """Reference: counting the calls of the case function; run 1 computes both cases, a rerun with
    the same settings none, a rerun with other run settings both again, then returning to the
    first settings computes them again (the store keeps only the latest key per case)."""
    paths = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    calls: list[str] = []
    tasks = [CaseTask(c, {"text": (paths[c],)}) for c in ("a", "b")]

    def run(mode: str) -> list[str]:
        calls.clear()
        report = run_cases(partial(_counted, calls=calls), tasks, out, settings={"mode": mode})
        assert report.done == ["a", "b"]
        return sorted(calls)

    assert run("a") == ["a", "b"]
    assert run("a") == []
    assert run("b") == ["a", "b"]
    assert run("b") == []
    assert run("a") == ["a", "b"]


def test_a_hidden_file_does_not_change_a_model_folders_digest_and_a_visible_one_does(tmp_path):
    """Reference: the module's rule (hidden files excluded), checked by adding a ``.lock`` file and a
    hidden file in a subfolder (digest equal) and then a normal file (digest different)."""
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01\x02")
    before = directory_digest(model)
    (model / ".lock").write_text("12345")
    (model / "sub" / ".DS_Store").write_bytes(b"\xff")
    assert directory_digest(model) == before
    (model / "notes.txt").write_text("x")
    assert directory_digest(model) != before


def test_a_temporary_part_of_a_killed_save_is_not_a_finished_case(tmp_path):
    """Reference: the folder listing; an empty ``.tmp-<token>-c1.parquet`` (what ``atomic_path`` leaves
    when a save is killed) next to one real part: only the real case is listed."""
    store = CaseStore(tmp_path / "cases")
    store.directory.mkdir()
    (store.directory / ".tmp-ab12cd34-c1.parquet").write_bytes(b"")
    assert store.cases() == []
    store.save("c2", "k", {"table": pd.DataFrame([{"case": "c2"}])})
    assert sorted(p.name for p in store.directory.iterdir() if p.is_file()) == [".tmp-ab12cd34-c1.parquet",
                                                                                 "c2.parquet"]
    assert store.cases() == ["c2"]
