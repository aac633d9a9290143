"""map_cases: serial and process-pool mapping, per-case errors, and workers that use PyTorch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from segqc import execution
from segqc.errors import InputError
from segqc.execution import map_cases


def _square_or_fail(item: int, bad: int) -> int:
    if item == bad:
        raise InputError("bad case", f"case{item}.nii.gz")
    return item * item


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_item_is_mapped_and_a_case_error_is_yielded_in_its_place(jobs, monkeypatch):
    # pinned: the automatic choice depends on whether torch was imported before in this process
    monkeypatch.setattr(execution.pool, "pool_start_method", lambda: "spawn")
    results = dict(map_cases(partial(_square_or_fail, bad=3), range(6), jobs=jobs, progress=False))
    assert {k: v for k, v in results.items() if k != 3} == {0: 0, 1: 1, 2: 4, 4: 16, 5: 25}
    assert isinstance(results[3], InputError) and "case3.nii.gz" in str(results[3])


def test_a_bug_in_the_function_propagates():
    with pytest.raises(ZeroDivisionError):
        list(map_cases(lambda item: 1 / item, [1, 0], jobs=1, progress=False))


_TORCH_WORKERS = textwrap.dedent("""
    import torch
    from segqc.execution import map_cases, pool_start_method

    def work(n):
        torch.set_num_threads(2)
        x = torch.zeros(1_000_000)
        x.fill_(1.0)  # a multi-threaded OpenMP region in the worker
        return float((x * n).sum())

    if __name__ == "__main__":
        torch.set_num_threads(2)
        torch.zeros(4_000_000).fill_(2.0)  # the parent's OpenMP thread pool is now running
        print(pool_start_method(), sorted(r for _, r in map_cases(work, [1, 2, 3, 4], jobs=2, progress=False)))
""")


def test_workers_using_torch_after_the_parent_did_do_not_hang(tmp_path):
    """Forking after a multi-threaded PyTorch operation left every worker waiting forever in
    libgomp (seen with ``segqc qc predict --jobs 2``); workers are spawned once torch is loaded."""
    import torch  # noqa: F401
    script = tmp_path / "torch_workers.py"
    script.write_text(_TORCH_WORKERS)
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("map_cases workers hung after the parent used torch")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["spawn", "[1000000.0,", "2000000.0,", "3000000.0,", "4000000.0]"]


_NO_TORCH = textwrap.dedent("""
    import sys
    from segqc.execution import map_cases, pool_start_method

    def cube(n):
        return n ** 3

    if __name__ == "__main__":
        results = sorted(r for _, r in map_cases(cube, [1, 2, 3], jobs=2, progress=False))
        print(pool_start_method(), "torch" in sys.modules, results == [1, 8, 27])
""")


def test_without_torch_workers_are_forked_on_linux(tmp_path):
    script = tmp_path / "no_torch.py"
    script.write_text(_NO_TORCH)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    method, torch_loaded, mapped = done.stdout.split()
    assert torch_loaded == "False" and mapped == "True"
    if sys.platform.startswith("linux"):
        assert method in ("fork", "forkserver")  # the platform default (fork up to Python 3.13)


_CORE_SHARE = textwrap.dedent("""
    import json
    import multiprocessing
    import os

    import torch

    from segqc import execution


    def threads(_):
        return torch.get_num_threads()


    def worker_threads(jobs):
        return sorted(r for _, r in execution.map_cases(threads, range(jobs), jobs=jobs, progress=False))


    if __name__ == "__main__":
        multiprocessing.set_start_method("spawn", force=True)
        default = torch.get_num_threads()  # what a fresh process without OMP_NUM_THREADS gets
        cores = os.cpu_count()
        real = worker_threads(2)
        wide = None
        if max(1, cores // 2) == default:  # the real share cannot tell sharing from the default:
            os.cpu_count = lambda: 2 * (default + 1)  # pretend a core count whose share differs
            wide = worker_threads(2)
        print(json.dumps({"method": execution.pool_start_method(), "omp": "OMP_NUM_THREADS" in os.environ,
                          "default": default, "cores": cores, "real": real, "wide": wide}))
""")


def test_spawned_workers_share_the_cores_as_torch_threads(tmp_path):
    """Each of N spawned workers runs max(1, cores // N) torch threads, not torch's default of one
    per core. Checked in a fresh interpreter WITHOUT OMP_NUM_THREADS (this test session sets it to
    1, which would hide the default), start method pinned to spawn, with the machine's core count;
    where that share happens to equal torch's default, again with a pretended core count whose share
    differs from it."""
    script = tmp_path / "core_share.py"
    script.write_text(_CORE_SHARE)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["method"] == "spawn" and not seen["omp"]
    assert seen["cores"] == os.cpu_count()
    assert seen["real"] == [max(1, os.cpu_count() // 2)] * 2
    if seen["wide"] is not None:
        assert seen["wide"] == [seen["default"] + 1] * 2  # max(1, 2 * (default + 1) // 2)


_SLOW_WORKERS = textwrap.dedent("""
    import multiprocessing, os, sys, time
    from pathlib import Path
    from segqc.execution import map_cases

    MARKS = Path(sys.argv[1])

    def work(n):
        (MARKS / f"{n}.{os.getpid()}").write_text("")
        time.sleep(30)
        return n

    if __name__ == "__main__":
        multiprocessing.set_start_method("fork", force=True)  # pinned (no torch here: the default anyway)
        try:
            list(map_cases(work, range(8), jobs=2, progress=False))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
""")


def _start_slow_workers(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_WORKERS)
    marks = tmp_path / "marks"
    marks.mkdir()
    process = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(marks.iterdir())) < 2:  # both workers are inside a case
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    return process, marks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")  # zombies are dead


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_workers_die_when_the_parent_is_killed_with_sigkill(tmp_path):
    """Once: `kill -9` of `evaluate --jobs 2` left its workers computing forever."""
    process, marks = _start_slow_workers(tmp_path)
    workers = {int(p.name.split(".")[1]) for p in marks.iterdir()}
    process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_the_pool_at_once(tmp_path, signum):
    """Once: Ctrl-C or SIGTERM with --jobs 2 went on computing the whole queue."""
    process, marks = _start_slow_workers(tmp_path)
    workers = {int(p.name.split(".")[1]) for p in marks.iterdir()}
    began = time.monotonic()
    process.send_signal(signum)
    out, _ = process.communicate(timeout=20)
    assert time.monotonic() - began < 10  # a case takes 30 s: nothing was waited for
    assert process.returncode == 130 and "interrupted" in out
    assert len(list(marks.iterdir())) == 2  # no queued case started
    assert not any(_alive(pid) for pid in workers)


def test_sigterm_to_the_whole_process_group_is_an_interruption_not_a_broken_pool(tmp_path):
    """A SIGTERM to the process group (a batch scheduler's or a container's stop) ends the
    workers as well; the parent then met a broken pool and reported "a worker process ended
    before its case was done ... killed (e.g. out of memory)" with exit 2, and at times CPython's
    exit hook printed a traceback about a closed pipe."""
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_WORKERS)
    marks = tmp_path / "marks"
    marks.mkdir()
    for _ in range(3):
        for mark in marks.iterdir():
            mark.unlink()
        process = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 130 and "interrupted" in out, out + err
        assert "Traceback" not in err and "worker process ended" not in err, err


_SLOW_SERIAL = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import typer
    from segqc.cli._common import user_errors
    from segqc.execution import map_cases

    MARKS = Path(sys.argv[1])

    def work(n):
        (MARKS / str(n)).write_text("")
        time.sleep(30)
        return n

    if __name__ == "__main__":
        try:
            with user_errors():
                list(map_cases(work, range(4), jobs=1, progress=False))
        except typer.Exit as stop:
            sys.exit(stop.exit_code)
""")


def test_sigterm_stops_serial_cases_like_ctrl_c(tmp_path):
    """Once: SIGTERM with --jobs 1 (the default) killed the command silently with exit code 143,
    while --jobs 2 said it was interrupted and exited 130."""
    script = tmp_path / "serial.py"
    script.write_text(_SLOW_SERIAL)
    marks = tmp_path / "marks"
    marks.mkdir()
    process = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(marks.iterdir()):  # inside the first case
        assert time.monotonic() < deadline, "the case did not start"
        time.sleep(0.05)
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert time.monotonic() - began < 10  # a case takes 30 s: it was not waited for
    assert process.returncode == 130
    assert "error: interrupted; finished cases are kept" in " ".join(err.split()) and "Traceback" not in err
    assert "training" not in err  # a per-case command has no training checkpoint to speak of
    assert [p.name for p in marks.iterdir()] == ["0"]  # no further case started


def _write_maps(task, out: Path):
    """A per-case function that writes one map per input word (``map/CASE_WORD.txt``), or fails on
    the word ``bad``."""
    import pandas as pd

    from segqc.execution import CaseResult

    words = Path(task.inputs["text"][0]).read_text().split()
    if "bad" in words:
        raise InputError("holds the word bad", task.inputs["text"][0])
    files = []
    for word in words:
        files.append(f"map/{task.case}_{word}.txt")
        (out / "map").mkdir(parents=True, exist_ok=True)
        (out / files[-1]).write_text(word)
    return CaseResult(table=pd.DataFrame([{"case": task.case, "n": len(words)}]), files=files)


def test_a_rerun_removes_the_outputs_that_no_finished_case_of_it_wrote(tmp_path):
    """Files of an earlier run that this run's cases did not write — a case that fails now, a case
    whose input is gone, a map the new result no longer has — must not stay beside this run's
    outputs, where ``segqc evaluate`` or a review would take them for this run's. Files the engine
    never recorded are left alone."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    texts = {"a": "x y", "b": "x", "c": "z"}
    for case, text in texts.items():
        (inputs / f"{case}.txt").write_text(text)

    def run(cases):
        tasks = [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in cases]
        return run_cases(partial(_write_maps, out=out), tasks, out, settings={})

    run(["a", "b", "c"])
    (out / "map" / "mine.txt").write_text("a user's file")
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt", "a_y.txt", "b_x.txt", "c_z.txt", "mine.txt"]
    (inputs / "a.txt").write_text("x")      # a's result loses its map y
    (inputs / "b.txt").write_text("bad")    # b fails now
    report = run(["a", "b"])                # c is no longer an input
    assert report.done == ["a"] and list(report.failed) == ["b"]
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt", "mine.txt"]
    assert [w for w in report.warnings if w.startswith("removed 3 output file(s)")], report.warnings
    (inputs / "b.txt").write_text("x")
    report = run(["a", "b"])                # a reused, b computed again: nothing of theirs removed
    assert report.reused == ["a"]
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt", "b_x.txt", "mine.txt"]


def test_a_script_without_the_main_guard_gets_one_line_not_a_broken_pool(tmp_path):
    """Spawned workers re-import the calling script; without `if __name__ == "__main__":` they
    cannot start, and the caller saw concurrent.futures' BrokenProcessPool traceback."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import torch  # noqa: F401  (with torch loaded, workers are spawned)
        from segqc.execution import map_cases
        from segqc.errors import SegqcError

        try:
            list(map_cases(abs, [-1, -2, -3], jobs=2))
        except SegqcError as error:
            print("ERROR:", error)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")]
    assert lines and 'if __name__ == "__main__":' in lines[0], (result.stdout, result.stderr[-2000:])


def test_workers_of_an_unguarded_script_end_quietly_before_they_take_the_output_lock(tmp_path):
    """Each spawned worker re-ran the script's `evaluate_folder(..., out, jobs=2)`, found the
    parent's lock on `out` and printed a traceback saying another segqc run was writing there —
    two misleading tracebacks before the one line about the missing guard."""
    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image

    geometry = Geometry.from_shape((6, 6, 3))
    for case in ("a", "b"):
        for folder in ("pred", "gt"):
            mask = np.zeros(geometry.shape, np.uint8)
            mask[1:4, 1:4] = 1
            write_image(tmp_path / folder / f"{case}.nii.gz", mask, geometry)
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import torch  # noqa: F401  (with torch loaded, workers are spawned)
        import segqc
        segqc.evaluate_folder({str(tmp_path / "pred")!r}, {str(tmp_path / "gt")!r}, {str(tmp_path / "out")!r},
                              metrics=["dice"], jobs=2)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("Traceback") == 1, result.stderr  # the script's own uncaught error
    assert "another segqc run" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].endswith('must do so under `if __name__ == "__main__":`')


def test_a_run_into_the_folder_of_its_own_inputs_is_refused_before_any_case(tmp_path):
    """`labels map IN -o IN` rewrote the input label maps in place (exit 0), and a later run into
    the folder removed them as an earlier run's outputs. Also through a link to the folder."""
    from segqc.execution import CaseTask, run_cases

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.txt").write_text("x y")
    (tmp_path / "link").symlink_to(inputs)
    tasks = [CaseTask("a", {"text": (inputs / "a.txt",)})]
    for out in (inputs, tmp_path / "link", tmp_path / "in" / "."):
        with pytest.raises(InputError) as error:
            run_cases(partial(_write_maps, out=out), tasks, out, settings={})
        assert str(error.value) == f"{out}: is the folder of this run's input files (e.g. a.txt); write the output " \
                                   "into another folder"
    assert sorted(p.name for p in inputs.iterdir()) == ["a.txt"]  # nothing written, nothing removed
    report = run_cases(partial(_write_maps, out=inputs / "out"), tasks, inputs / "out", settings={})  # inside: fine
    assert report.done == ["a"]


def _with_extra(task):
    import pandas as pd

    from segqc.execution import CaseResult

    text = Path(task.inputs["text"][0]).read_text()
    return CaseResult(table=pd.DataFrame([{"case": task.case, "text": text}]),
                      extra={"slices": pd.DataFrame([{"case": task.case, "slice": i} for i in range(len(text))])})


def test_a_case_named_like_another_cases_extra_table_keeps_its_own_tables_on_a_rerun(tmp_path):
    """Case X's extra table was stored as X.slices.parquet, which is also the main part of a
    case named X.slices: a rerun reused the other case's rows as X's slices."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "x.txt").write_text("ab")
    (inputs / "x.slices.txt").write_text("cdef")
    tasks = [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in ("x", "x.slices")]
    first = run_cases(_with_extra, tasks, out, settings={})
    again = run_cases(_with_extra, tasks, out, settings={})
    assert sorted(again.reused) == ["x", "x.slices"]
    for report in (first, again):
        table = report.table.set_index("case")
        assert table.loc["x", "text"] == "ab" and table.loc["x.slices", "text"] == "cdef"
        slices = report.extra["slices"]
        assert list(slices["case"]) == ["x", "x", "x.slices", "x.slices", "x.slices", "x.slices"]


def test_the_outputs_of_a_removed_case_with_a_dot_in_its_name_are_removed_too(tmp_path):
    """The store's case list skipped every name with a dot (taken for an extra table), so the
    files of a removed case `HC18.v2` stayed beside the new run's outputs."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for case in ("a", "b.v2"):
        (inputs / f"{case}.txt").write_text("x")

    def run(cases):
        return run_cases(partial(_write_maps, out=out), [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in cases],
                         out, settings={})

    run(["a", "b.v2"])
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt", "b.v2_x.txt"]
    report = run(["a"])
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt"]
    assert [w for w in report.warnings if w.startswith("removed 1 output file(s)")], report.warnings


def _write_then_fail(task, out: Path):
    """Writes map/CASE_WORD.txt for each input word (through segqc's atomic writer), then fails
    on the word ``fail`` — after its files are written."""
    import pandas as pd

    from segqc.execution import CaseResult
    from segqc.io.atomic import write_text_atomic

    words = Path(task.inputs["text"][0]).read_text().split()
    files = [f"map/{task.case}_{word}.txt" for word in words if word != "fail"]
    for name in files:
        write_text_atomic(out / name, name)
    if "fail" in words:
        raise InputError("failed after writing its maps", task.inputs["text"][0])
    return CaseResult(table=pd.DataFrame([{"case": task.case}]), files=files)


def test_the_files_of_a_case_that_failed_half_way_are_removed(tmp_path):
    """A case that wrote maps and then failed left them beside the run's outputs, unrecorded:
    `evaluate` or a review would take them for this run's."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "a.txt").write_text("x")
    (inputs / "b.txt").write_text("y fail")
    tasks = [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in ("a", "b")]
    report = run_cases(partial(_write_then_fail, out=out), tasks, out, settings={})
    assert report.done == ["a"] and list(report.failed) == ["b"]
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt"]
    assert [w for w in report.warnings if "map/b_y.txt" in w], report.warnings
    assert not (out / "cases" / ".writing").exists()


_KILLED_HALF_WAY = textwrap.dedent("""
    import os, signal, sys
    from functools import partial
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_execution import _write_then_fail
    from segqc.execution import CaseTask, run_cases

    def killed(task, out):
        from segqc.io.atomic import atomic_path, write_text_atomic
        write_text_atomic(out / "map" / f"{task.case}_old.txt", "written before the kill")
        if len(sys.argv) > 4:  # killed in the middle of an atomic write
            with atomic_path(out / "map" / f"{task.case}_big.txt") as tmp:
                tmp.write_text("half of it")
                os.kill(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        inputs, out = Path(sys.argv[1]), Path(sys.argv[2])
        run_cases(partial(killed, out=out), [CaseTask("a", {"text": (inputs / "a.txt",)})], out, settings={})
""")


def test_the_files_of_a_case_killed_half_way_are_removed_by_the_rerun(tmp_path):
    """kill -9 inside a case left the files it had written; a rerun that no longer writes them
    (other settings, the case gone) never removed them: the engine had no record of them."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "a.txt").write_text("x")
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_HALF_WAY)
    process = subprocess.run([sys.executable, str(script), str(inputs), str(out), str(Path(__file__).parent)],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert (out / "map" / "a_old.txt").is_file() and not (out / "cases" / "a.parquet").exists()
    report = run_cases(partial(_write_then_fail, out=out), [CaseTask("a", {"text": (inputs / "a.txt",)})], out,
                       settings={})
    assert report.done == ["a"]
    assert sorted(p.name for p in (out / "map").iterdir()) == ["a_x.txt"]
    assert [w for w in report.warnings if "map/a_old.txt" in w], report.warnings


def test_a_terminated_pool_leaves_no_manager_thread_for_the_exit_hook():
    """Ctrl-C during a parallel run once ended with "OSError: [Errno 9] Bad file descriptor" from
    concurrent.futures' exit hook, which woke the manager thread of the terminated pool while that
    thread closed its pipe: termination must wait until the thread has ended and closed it."""
    import concurrent.futures.process as cf_process
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    from segqc.execution.pool import _terminate

    for _ in range(3):
        pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork"))
        for _ in range(4):
            pool.submit(time.sleep, 30)
        time.sleep(0.2)  # the workers have started their sleeps
        manager = pool._executor_manager_thread
        assert manager is not None
        wakeup = cf_process._threads_wakeups[manager]
        _terminate(pool)
        assert not manager.is_alive() and wakeup._closed


def test_the_temporary_files_of_a_write_killed_half_way_are_removed_by_the_rerun(tmp_path):
    """kill -9 in the middle of an atomic write left its `.tmp-<token>-NAME` file (an empty or
    truncated image, which tools other than segqc would read) in the output folder for good."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "a.txt").write_text("x")
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_HALF_WAY)
    process = subprocess.run([sys.executable, str(script), str(inputs), str(out), str(Path(__file__).parent),
                              "mid-write"], capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    left = [p.name for p in (out / "map").glob(".tmp-*")]
    assert len(left) == 1 and left[0].endswith("-a_big.txt")
    (out / "cases" / ".tmp-0a1b2c3d-a.parquet").write_bytes(b"")  # a store part killed while saved
    strangers = [out / "map" / ".tmp-notes.txt", out / "map" / ".tmp-00aa-other.txt"]  # not of this run's writes
    for path in strangers:
        path.write_text("not ours")
    report = run_cases(partial(_write_then_fail, out=out), [CaseTask("a", {"text": (inputs / "a.txt",)})], out,
                       settings={})
    assert report.done == ["a"]
    assert sorted(p.name for p in (out / "map").iterdir()) == [".tmp-00aa-other.txt", ".tmp-notes.txt", "a_x.txt"]
    assert not list((out / "cases").glob(".tmp-*"))


def _write_nested(task, out: Path):
    """Writes ``CASE.txt`` below ``out`` for a case id that may hold ``/`` (``MODEL/CASE``)."""
    import pandas as pd

    from segqc.execution import CaseResult

    name = f"{task.case}.txt"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("x")
    return CaseResult(table=pd.DataFrame([{"case": task.case}]), files=[name])


def test_the_outputs_of_a_removed_case_whose_id_names_a_subfolder_are_removed_too(tmp_path):
    """`zoo predict` runs cases `MODEL/CASE`, stored in sub-folders of the store, which the store's
    case list did not look into: another zoo's held-out cases stayed beside the new predictions,
    and `evaluate` of the folder mixed two models."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "t.txt").write_text("x")

    def run(cases):
        return run_cases(partial(_write_nested, out=out), [CaseTask(c, {"text": (inputs / "t.txt",)}) for c in cases],
                         out, settings={})

    run(["m1/a", "m1/b", "m2/a"])
    report = run(["m1/a", "m2/a"])
    assert sorted(p.name for p in (out / "m1").iterdir()) == ["a.txt"]
    assert [w for w in report.warnings if "m1/b.txt" in w], report.warnings


def _write_case_file(task, out: Path):
    """Writes ``CASE.txt`` in ``out`` through segqc's atomic writer (as every command writes its maps)."""
    import pandas as pd

    from segqc.execution import CaseResult
    from segqc.io.atomic import write_text_atomic

    write_text_atomic(out / f"{task.case}.txt", Path(task.inputs["text"][0]).read_text())
    return CaseResult(table=pd.DataFrame([{"case": task.case}]), files=[f"{task.case}.txt"])


def test_a_file_segqc_did_not_write_is_never_written_over(tmp_path):
    """`-o` naming a folder of the user's own files (another model's segmentations, named like the
    cases) replaced them without a word. The case that would write over one fails with a line
    naming it; the other cases run; a rerun (the folder now holds a store) still refuses, and the
    file is written once the user has moved theirs away. A case's own outputs of an earlier run,
    including those of a run killed half-way (its write journal), are written over as before."""
    from segqc.execution import CaseTask, run_cases

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for case in "ab":
        (inputs / f"{case}.txt").write_text(f"new {case}")
    (out / "a.txt").write_text("the user's a")

    def run():
        tasks = [CaseTask(c, {"text": (inputs / f"{c}.txt",)}) for c in "ab"]
        return run_cases(partial(_write_case_file, out=out), tasks, out, settings={})

    for _ in range(2):
        report = run()
        assert report.done == ["b"] and list(report.failed) == ["a"]
        assert str(out / "a.txt") in report.failed["a"]
        assert "no segqc run into this folder wrote it" in report.failed["a"]
        assert (out / "a.txt").read_text() == "the user's a" and (out / "b.txt").read_text() == "new b"
    (out / "a.txt").unlink()
    assert run().done == ["a", "b"] and (out / "a.txt").read_text() == "new a"
    (inputs / "a.txt").write_text("newer a")  # recomputed: its own earlier output is written over
    (inputs / "b.txt").write_text("newer b")
    (out / "cases" / "b.parquet").unlink()     # b killed after its write, before it was stored
    journal = out / "cases" / ".writing" / "b.txt"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text("b.txt\n")
    report = run()
    assert report.done == ["a", "b"] and not report.failed
    assert (out / "a.txt").read_text() == "newer a" and (out / "b.txt").read_text() == "newer b"
