"""What a finished case is keyed on: every component of the key changes it, and nothing else."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from segqc.execution import CaseResult, CaseTask, run_cases
from segqc.execution.cache import directory_digest, settings_digest


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    return root


def test_a_model_folder_digest_covers_file_names_and_files_in_subfolders(tmp_path):
    model = _model(tmp_path / "m")
    before = directory_digest(model)
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x02")  # a file below the top folder changed
    changed = directory_digest(model)
    assert changed != before
    (model / "sub" / "weights.bin").rename(model / "sub" / "other.bin")  # same bytes, another name
    assert directory_digest(model) != changed


def test_settings_that_are_paths_digest_by_their_value():
    assert settings_digest({"p": Path("a")}) != settings_digest({"p": Path("b")})
    assert settings_digest({"p": Path("a")}) == settings_digest({"p": Path("a")})


def _length(task: CaseTask) -> CaseResult:
    text = task.inputs["text"][0].read_text()
    return CaseResult(table=pd.DataFrame([{"case": task.case, "n": len(text), "mode": str(task.settings)}]))


def test_a_tasks_own_settings_are_part_of_its_key_and_done_keeps_the_task_order(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for case in ("b", "a"):
        (inputs / f"{case}.txt").write_text(case * 3)

    def run(mode: str):
        tasks = [CaseTask(c, {"text": (inputs / f"{c}.txt",)}, settings={"variant": mode}) for c in ("b", "a")]
        return run_cases(partial(_length), tasks, out, settings={})

    first = run("noise")
    assert first.done == ["b", "a"]  # the order the tasks came in
    assert run("noise").reused == ["b", "a"]
    other = run("lowres")  # same inputs, another variant of the task: computed again
    assert other.reused == [] and set(other.table["mode"]) == {"{'variant': 'lowres'}"}


def _writes_into_cases(task: CaseTask, out: Path) -> CaseResult:
    (out / "cases").mkdir(parents=True, exist_ok=True)
    return CaseResult(table=pd.DataFrame([{"case": task.case}]), files=["cases/notes.txt"] if task.case == "b" else [])


def test_a_recorded_output_under_cases_is_never_removed_as_stale(tmp_path):
    """The store's own folder is not an output: a rerun without the case must not delete it."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for case in ("a", "b"):
        (inputs / f"{case}.txt").write_text(case)
    run_cases(partial(_writes_into_cases, out=out), [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in "ab"],
              out, settings={})
    (out / "cases" / "notes.txt").write_text("kept")
    run_cases(partial(_writes_into_cases, out=out), [CaseTask("a", {"text": (inputs / "a.txt",)})], out, settings={})
    assert (out / "cases" / "notes.txt").read_text() == "kept"
