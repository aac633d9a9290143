"""One writer per output folder: a second segqc run into a folder that another process is
writing is refused with one line, and a crashed writer never blocks a rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.errors import InputError
from segqc.execution import CaseResult, CaseTask, run_cases
from segqc.execution.lock import claim_output, claims, locked_here, output_lock
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

# An independent holder: a plain flock on the folder, as any other segqc process takes it.
_HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture()
def held(tmp_path):
    """Start a process holding ``tmp_path / 'out'``'s lock; yields (folder, process)."""
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        yield out, process
    finally:
        process.kill()
        process.wait()


def _count(task: CaseTask, out: Path) -> CaseResult:
    text = Path(task.inputs["text"][0]).read_text()
    (out / f"{task.case}.txt").write_text(text.upper())
    return CaseResult(table=pd.DataFrame([{"case": task.case, "n": len(text)}]), files=[f"{task.case}.txt"])


def _tasks(tmp_path: Path) -> list[CaseTask]:
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    for case in ("a", "b"):
        (inputs / f"{case}.txt").write_text(case * 3)
    return [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in ("a", "b")]


def test_the_case_engine_refuses_a_folder_another_process_writes_and_runs_once_it_died(tmp_path, held):
    """Two runs into one folder at once mixed their tables, and each removed the other's files
    as stale. The second is refused before any case; kill -9 of the first frees the folder."""
    out, process = held
    tasks = _tasks(tmp_path)
    with pytest.raises(InputError, match="another segqc run is writing into this folder") as caught:
        run_cases(partial(_count, out=out), tasks, out, settings={})
    assert str(out) in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing computed, nothing written
    process.send_signal(signal.SIGKILL)
    process.wait()
    report = run_cases(partial(_count, out=out), tasks, out, settings={})
    assert report.done == ["a", "b"] and (out / "a.txt").read_text() == "AAA"
    assert not locked_here(out)  # released when the run returned


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_outermost_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with claims():
        claim_output(out)
        report = run_cases(partial(_count, out=out), _tasks(tmp_path), out, settings={})  # inside the claim
        assert report.done == ["a", "b"] and locked_here(out)
        with output_lock(out):
            assert locked_here(out)
        assert locked_here(out)
        holder = subprocess.run([sys.executable, "-c", _HOLDER.replace("LOCK_EX)", "LOCK_EX | fcntl.LOCK_NB)"),
                                 str(out)], capture_output=True, text=True, timeout=60)
        assert holder.returncode != 0 and "BlockingIOError" in holder.stderr  # held against other processes
    assert not locked_here(out)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"  # free again
    finally:
        holder.kill()
        holder.wait()


def test_evaluate_into_a_folder_another_run_writes_is_one_line_and_exit_2(tmp_path, held):
    out, _ = held
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    mask = np.zeros((8, 8, 4), np.uint8)
    mask[2:6, 2:6, 1:3] = 1
    for folder in (gt_dir, pred_dir):
        write_image(folder / "case0.nii.gz", mask, Geometry.from_shape(mask.shape, (1.0, 1.0, 1.0)))
    result = CliRunner().invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "another segqc run is writing into this folder" in lines[0], result.output
    assert not (out / "metrics.csv").exists()
    assert not locked_here(out)


def test_a_cli_command_releases_its_folder_when_it_ends(tmp_path):
    """The claim of one command must not outlive it (a Python session running several commands,
    or the next command of a test)."""
    gt_dir, pred_dir, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    mask = np.zeros((8, 8, 4), np.uint8)
    mask[2:6, 2:6, 1:3] = 1
    for folder in (gt_dir, pred_dir):
        write_image(folder / "case0.nii.gz", mask, Geometry.from_shape(mask.shape, (1.0, 1.0, 1.0)))
    for _ in range(2):
        result = CliRunner().invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        assert not locked_here(out)


def test_training_into_a_folder_another_training_writes_is_refused(tmp_path, held):
    torch = pytest.importorskip("torch")
    from segqc.training.stages import Stage, run_stage

    out, _ = held
    layer = torch.nn.Linear(2, 1)
    stage = Stage(name="fit", steps=3, step=lambda k: {"loss": 0.0}, modules={"layer": layer},
                  optimizers={"adam": torch.optim.Adam(layer.parameters())})
    with pytest.raises(InputError, match="another segqc run is writing into this folder"):
        run_stage(stage, out, checkpoint_every=1)
    assert not (out / "stages").exists()


def test_two_segqc_processes_exclude_each_other(tmp_path):
    """The same with segqc's own claim in both processes (the CLI's path)."""
    out = tmp_path / "out"
    out.mkdir()
    script = ("import sys, time\nfrom segqc.execution.lock import claim_output\nclaim_output(sys.argv[1])\n"
              "print('claimed', flush=True)\ntime.sleep(120)\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "claimed"
        second = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "another segqc run is writing into this folder" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()


def test_a_training_stage_removes_what_a_save_killed_half_way_left(tmp_path):
    """kill -9 while a checkpoint was saved left `.tmp-<token>-NAME` (megabytes of a half weights
    file) in the stage folder for good; the next run of the stage holds the lock and removes it."""
    torch = pytest.importorskip("torch")
    from segqc.training.stages import Stage, run_stage

    layer = torch.nn.Linear(2, 1)
    stage = Stage(name="fit", steps=2, step=lambda k: {"loss": 0.0}, modules={"layer": layer},
                  optimizers={"adam": torch.optim.Adam(layer.parameters())})
    folder = tmp_path / "out" / "stages" / "fit"
    folder.mkdir(parents=True)
    (folder / ".tmp-5eed1e55-weights.safetensors").write_bytes(b"half")
    (folder / "notes.txt").write_text("mine")
    run_stage(stage, tmp_path / "out", checkpoint_every=1)
    assert not list(folder.rglob(".tmp-*")) and (folder / "notes.txt").read_text() == "mine"
