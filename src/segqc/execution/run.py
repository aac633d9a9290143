"""The case engine: run a pure per-case function over tasks, resume from content-keyed parts,
and report what happened in one :class:`RunReport`.

Every per-case command (``evaluate``, ``qc predict``, ``degrade``, ``fingerprint``, ...) is
``run_cases(function, tasks, out_dir, settings=...)``:

* a :class:`CaseTask` names its case id (unique in the run; it names the output files) and its
  input files by role (``{"pred": [...], "gt": [...]}``);
* its cache key is the settings digest + the SHA-256 of every input file + ``extra_digest``
  (model weights), so a rerun reuses a case only when none of them changed — another prediction
  folder, a file regenerated in place, a retrained model or other settings all recompute;
* ``function(task) -> CaseResult`` does the work (in this process, a process pool or on Dask) and
  the engine stores the result under ``out_dir/cases/`` (:class:`~segqc.execution.cache.CaseStore`)
  before reporting the case as done;
* the returned table holds exactly the cases of this run, in task order — never rows of an older
  run with other inputs or settings.

A case that raises :class:`CaseSkipped` is reported in ``skipped``; any other
:class:`~segqc.errors.SegqcError` in ``failed`` (one line naming the file); other exceptions are
bugs and propagate. With ``out_dir`` the run holds the folder's lock (:mod:`.lock`): a second
run into the same folder at the same time is refused with one line.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from segqc.errors import InputError, SegqcError
from segqc.execution.cache import CaseStore, case_key, settings_digest
from segqc.execution.lock import output_lock
from segqc.execution.pool import map_cases
from segqc.io.atomic import read_journal, remove_temporaries, write_journal


class CaseSkipped(SegqcError):
    """A case with nothing to do (e.g. no foreground to degrade): reported, not an error."""


@dataclass(frozen=True)
class CaseTask:
    """One case of a run. ``inputs``: role -> input files (their content is part of the cache
    key); ``payload``: anything else the per-case function needs (picklable); ``settings``:
    JSON-able settings of this task alone (e.g. which model and input variant), also part of
    the cache key."""

    case: str
    inputs: Mapping[str, tuple[Path, ...]]
    payload: Any = None
    settings: Any = None

    def path(self, role: str) -> Path | None:
        """The first file of ``role``, or None."""
        files = self.inputs.get(role, ())
        return files[0] if files else None


@dataclass
class CaseResult:
    """What a per-case function returns: ``table`` (its rows of the run's main table), named
    ``extra`` tables, ``warnings`` (one line each) and ``files`` it wrote (relative to the output
    folder; a reused case needs them to exist)."""

    table: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """What happened to every case of a run. ``table``: the main rows of all finished cases (task
    order); ``extra``: the named extra tables, concatenated; ``done``: finished cases (computed or
    reused); ``failed``: case -> error line; ``skipped``: case -> reason; ``reused``: cases taken
    from an earlier run with identical settings and inputs; ``warnings``: one line each."""

    table: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failure_kinds: dict[str, str] = field(default_factory=dict)  # case -> error class name
    inputs: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # case -> role -> input files

    @property
    def exit_code(self) -> int:
        """0 when every case finished (or was skipped on purpose), 1 when some failed."""
        return 1 if self.failed else 0

    def cases_dict(self) -> dict[str, Any]:
        """The ``cases`` section of a command's ``summary.json``."""
        return {"done": list(self.done), "failed": dict(self.failed), "skipped": dict(self.skipped),
                "reused_from_previous_run": list(self.reused), "warnings": list(self.warnings),
                "inputs": dict(self.inputs)}


@dataclass(frozen=True)
class _Todo:
    """A case to compute: its task, cache key and the output files that earlier runs of it
    recorded (relative to the output folder) — the only existing files it may write over."""

    task: CaseTask
    key: str
    own_files: frozenset[str] = frozenset()


def _run_and_store(item: _Todo, function: Callable[[CaseTask], CaseResult], out_dir: Path | None) -> CaseResult:
    task, key = item.task, item.key
    try:
        if out_dir is None:
            return function(task)
        journal = _journal(out_dir, task.case)
        journal.unlink(missing_ok=True)  # its earlier entries were read before the run began
        with write_journal(out_dir, journal, own_files=item.own_files):
            result = function(task)
        CaseStore(out_dir / "cases").save(task.case, key, {"table": result.table, **result.extra},
                                          warnings=result.warnings, files=result.files)
        journal.unlink(missing_ok=True)  # finished: its files are recorded with its part
        return result
    finally:
        _HEAP.case_done()


def _journal(out_dir: Path, case: str) -> Path:
    """The write journal of a running case (:func:`segqc.io.atomic.write_journal`): left behind
    by a case that was killed or failed, so that its files can be removed like recorded ones."""
    return out_dir / "cases" / ".writing" / f"{case}.txt"


def _journaled(out_dir: Path) -> dict[str, list[str]]:
    """Case -> the files its journal lists, for every journal in ``out_dir``."""
    folder = out_dir / "cases" / ".writing"
    if not folder.is_dir():
        return {}
    return {path.name[:-len(".txt")]: read_journal(path) for path in folder.glob("*.txt")}


class _HeapTrimmer:
    """Hands the heap pages freed by finished cases back to the system every ``every`` cases of
    this process (glibc's ``malloc_trim``; nothing elsewhere). A case's scratch arrays, freed
    between the small tables that stay, fragment the heap: without it a serial ``evaluate`` of
    3000 small volumes peaked at 0.70 GB instead of 0.42 GB (``benchmarks/bench_scale.py``)."""

    def __init__(self, every: int = 32) -> None:
        self.every, self.count = every, 0
        self._trim: Callable[[int], int] | None = None
        self._tried = False

    def case_done(self) -> None:
        self.count += 1
        if self.count % self.every:
            return
        if not self._tried:
            self._tried = True
            try:
                import ctypes

                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                self._trim = None
        if self._trim is not None:
            self._trim(0)


_HEAP = _HeapTrimmer()


def _remove_stale_outputs(out: Path, store: CaseStore, done: Sequence[str],
                          earlier: Mapping[str, list[str]]) -> list[str]:
    """Delete the output files that an earlier run recorded (its cases' parts under ``cases/``)
    and that no finished case of this run wrote or reused: files of a case that fails now, of a
    case no longer among the inputs, or that a case's earlier result had and its new one lacks
    (e.g. another model's maps, a region no longer asked for). Only files the engine recorded are
    touched, and a folder emptied here is removed; a report, a review or ``segqc evaluate`` would
    otherwise take the files for this run's. Returns the removed files, relative to ``out``."""
    done_set = set(done)
    kept = {name for case in done for name in store.files(case)}
    recorded = {name for names in earlier.values() for name in names}
    for case in store.cases():
        if case not in done_set:
            recorded.update(store.files(case))
    root = out.resolve()
    removed = []
    for name in sorted(recorded - kept):
        if Path(name).parts[:1] == ("cases",):  # the engine's own store is never an output file
            continue
        path = out / name
        if not path.resolve().parent.is_relative_to(root) or not (path.is_file() or path.is_symlink()):
            continue
        path.unlink()
        removed.append(name)
        folder = path.parent
        while folder.resolve() != root and folder.resolve().is_relative_to(root) and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return removed


def run_cases(
    function: Callable[[CaseTask], CaseResult],
    tasks: Sequence[CaseTask],
    out_dir: str | Path | None,
    *,
    settings: Any,
    extra_digest: str = "",
    jobs: int = 1,
    scheduler: Any = None,
    progress: bool = False,
    description: str = "cases",
) -> RunReport:
    """Run ``function`` over ``tasks`` (module docstring) and return the :class:`RunReport`.

    ``settings``: a dict or an object with ``to_dict()`` — everything that changes a case's
    result besides its input files; ``extra_digest``: e.g. the model weights' digest. With
    ``out_dir`` None nothing is stored or reused. ``function`` must be picklable for ``jobs`` > 1
    and Dask (a module-level function or a ``functools.partial`` of one).
    """
    duplicates = sorted(c for c, n in Counter(t.case for t in tasks).items() if n > 1)
    if duplicates:
        raise ValueError(f"case ids must be unique in a run; repeated: {', '.join(duplicates[:5])}")
    out = Path(out_dir) if out_dir is not None else None
    if out is None:
        return _run_cases(function, tasks, None, settings=settings, extra_digest=extra_digest, jobs=jobs,
                          scheduler=scheduler, progress=progress, description=description)
    check_output_apart(out, tasks)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        return _run_cases(function, tasks, out, settings=settings, extra_digest=extra_digest, jobs=jobs,
                          scheduler=scheduler, progress=progress, description=description)


def check_output_apart(out: Path, tasks: Sequence[CaseTask]) -> None:
    """:class:`InputError` naming ``out`` when it is the folder of an input file of ``tasks``: the
    run's outputs (``CASE.nii.gz``, tables) would overwrite or mix with its inputs, and a later run
    into the folder would remove them as stale outputs. Compared after resolving links."""
    by_folder: dict[str, str] = {}
    for task in tasks:
        for paths in task.inputs.values():
            for path in paths:
                by_folder.setdefault(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    target = os.path.realpath(out)
    for folder, name in by_folder.items():
        if os.path.realpath(folder) == target:
            raise InputError(f"is the folder of this run's input files (e.g. {name}); write the output into "
                             "another folder", out)


def check_output_outside(out: Path, folders: Sequence[Path]) -> None:
    """:class:`InputError` naming ``out`` when it is one of ``folders`` or lies inside one: input
    folders whose sub-folders a run reads (e.g. one folder per case), so that the run's own
    ``cases/`` would be read as input next time. Compared after resolving links."""
    target = Path(os.path.realpath(out))
    for folder in folders:
        if target.is_relative_to(os.path.realpath(folder)):  # the folder itself, or below it
            raise InputError(f"lies in the input folder {folder}; write the output into another folder", out)


def _run_cases(function: Callable[[CaseTask], CaseResult], tasks: Sequence[CaseTask], out: Path | None, *,
               settings: Any, extra_digest: str, jobs: int, scheduler: Any, progress: bool,
               description: str) -> RunReport:
    cases = [t.case for t in tasks]
    store = CaseStore(out / "cases") if out is not None else None
    digest = settings_digest(settings)
    results: dict[str, CaseResult] = {}
    report = RunReport(table=pd.DataFrame(),
                       inputs={t.case: {role: [os.path.abspath(p) for p in paths] for role, paths in t.inputs.items()}
                               for t in tasks})
    todo: list[tuple[CaseTask, str]] = []
    for task in tasks:
        try:
            key = case_key(digest, task.inputs, extra_digest if task.settings is None
                           else extra_digest + settings_digest(task.settings))
        except FileNotFoundError as error:
            report.failed[task.case] = f"{error.filename}: file not found"
            continue
        loaded = store.load(task.case, key, out) if store is not None else None
        if loaded is not None:
            tables, warnings = loaded
            results[task.case] = CaseResult(table=tables.pop("table"), extra=tables, warnings=warnings)
            report.reused.append(task.case)
        else:
            todo.append((task, key))
    earlier = {task.case: store.files(task.case) for task, _ in todo} if store is not None else {}
    if out is not None:  # files of cases killed or failed half-way in an earlier run
        for case, files in _journaled(out).items():
            earlier[case] = earlier.get(case, []) + files
        # what their atomic writes left; the folder's lock says no other run is writing them
        remove_temporaries([out / name for names in earlier.values() for name in names], folders=[out / "cases"])
    items = [_Todo(task, key, frozenset(earlier.get(task.case, ()))) for task, key in todo]
    work = partial(_run_and_store, function=function, out_dir=out)
    for item, result in map_cases(work, items, jobs=jobs, scheduler=scheduler, description=description,
                                  progress=progress):
        task = item.task
        if isinstance(result, CaseSkipped):
            report.skipped[task.case] = str(result)
        elif isinstance(result, SegqcError):
            report.failed[task.case] = str(result)
            report.failure_kinds[task.case] = type(result).__name__
        else:
            results[task.case] = result
    finished = [results[c] for c in cases if c in results]
    report.done = [c for c in cases if c in results]
    report.warnings = [w for r in finished for w in r.warnings]
    if store is not None and out is not None:
        for case, files in _journaled(out).items():  # cases that failed in this run, half-way
            earlier[case] = earlier.get(case, []) + files
        removed = _remove_stale_outputs(out, store, report.done, earlier)
        shutil.rmtree(out / "cases" / ".writing", ignore_errors=True)  # every journaled file is handled
        if removed:
            report.warnings.append(f"removed {len(removed)} output file(s) of an earlier run into this folder that "
                                   "no finished case of this run wrote: " + ", ".join(removed[:5])
                                   + (" ..." if len(removed) > 5 else ""))
    frames = [r.table for r in finished if len(r.table)]
    if frames:
        report.table = pd.concat(frames, ignore_index=True)
    else:
        report.table = finished[0].table if finished else pd.DataFrame()
    names = sorted({name for r in finished for name in r.extra})
    for name in names:
        parts = [r.extra[name] for r in finished if name in r.extra and len(r.extra[name])]
        report.extra[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return report
