"""Helpers shared by the CLI modules: one clear error line and an exit code, never a traceback;
one footer for every per-case command."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from segqc.cli.entry import EXIT_INTERRUPTED, note_interruption_reported
from segqc.errors import InputError, SegqcError
from segqc.execution.lock import claim_output, claims
from segqc.execution.pool import sigterm_interrupts
from segqc.execution.run import RunReport

console = Console(width=None if sys.stdout.isatty() else 140)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

EXIT_CASE_FAILURES = 1  # the run finished but some cases could not be processed
EXIT_BAD_INPUT = 2  # the run could not proceed
# EXIT_INTERRUPTED (130, Ctrl-C / SIGTERM: finished work is kept) comes from segqc.cli.entry

#: How to get the learned methods' dependencies (the CPU build of PyTorch first).
NN_INSTALL_HINT = ("pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install 'segqc[nn]' "
                   "(or: pip install torch==2.13.0 -e '.[nn]' where that wheel is local)")

_RESAMPLE_HINT = ("hint: --resample maps a prediction on another grid onto the ground-truth grid "
                  "(nearest neighbour, in physical space)")


def print_error(message: str) -> None:
    error_console.print("[bold red]error:[/] " + _escape(message), highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    error_console.print("[yellow]warning:[/] " + _escape(message), highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


INTERRUPTED = "interrupted; finished cases are kept — rerun the same command to continue"
"""What Ctrl-C prints by default: the words of the per-case commands."""
INTERRUPTED_TRAINING = "interrupted; the last training checkpoint is kept — rerun the same command to continue"
"""What Ctrl-C prints in a training command."""


@contextmanager
def user_errors(*, interrupted: str = INTERRUPTED) -> Iterator[None]:
    """Turn SegqcError / ValueError / OS errors into one red line on stderr and exit code 2;
    Ctrl-C — and SIGTERM, which raises it here — into one line (``interrupted``: what it means for
    this command) and exit code 130.
    Output folders claimed inside (:func:`prepare_output_dir`) are released when it ends."""
    try:
        with claims(), sigterm_interrupts():
            yield
    except SegqcError as error:
        print_error(str(error))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (ValueError, OSError) as error:
        if isinstance(error, OSError) and error.filename is not None:
            print_error(f"{error.filename}: {error.strerror or error}")
        else:
            print_error(str(error))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        print_error(interrupted)
        note_interruption_reported()
        raise typer.Exit(EXIT_INTERRUPTED) from None


def prepare_output_dir(path: Path) -> Path:
    """Create the output folder (and parents), check it is writable and claim it for this command
    (:func:`segqc.execution.lock.claim_output`); one-line InputError if ``path`` is an existing
    file, cannot be written, or another segqc run is writing into it."""
    path = _writable_dir(path)
    claim_output(path)
    return path


def _writable_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is a file; the output must be a folder", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write the output folder: {error.strerror or error}", path) from None
    return path


def prepare_output_file(path: Path, *, suffixes: tuple[str, ...] = (), inputs: Iterable[Path] = ()) -> Path:
    """Check that ``path`` can be written as a file: not an existing folder, a name ending in one of
    ``suffixes`` (any, when empty; case-insensitive), not one of the command's ``inputs`` (files,
    or folders it must not lie in; compared after resolving links), parent folders created and
    writable. One-line :class:`InputError` naming ``path`` otherwise."""
    from segqc.io.atomic import check_writable_file

    path = Path(path)
    check_writable_file(path)  # not a folder, no parent that is a file
    if suffixes and not path.name.lower().endswith(suffixes):
        raise InputError(f"expected a file name ending in {' or '.join(suffixes)}", path)
    target = Path(os.path.realpath(path))
    for source in inputs:
        resolved = Path(os.path.realpath(source))
        if target.is_relative_to(resolved):  # the input file itself, or a path below an input folder
            where = "is an input" if target == resolved else f"lies in the input folder {source}"
            raise InputError(f"{where} of this command; write the output elsewhere", path)
    _writable_dir(path.parent if str(path.parent) else Path("."))
    return path


def require_nn(command: str) -> None:
    """One line naming what to install when PyTorch, MONAI or safetensors are missing."""
    missing = [name for name in ("torch", "monai", "safetensors", "einops") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"segqc {command} needs {', '.join(missing)}; install with: {NN_INSTALL_HINT}")


def check_device(device: str) -> None:
    """One-line error for a CUDA or MPS device on a machine without it, or an unknown device."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
    elif device.startswith("mps"):
        import torch

        if device not in ("mps", "mps:0"):
            raise InputError(f"--device {device}: expected mps (one Apple GPU), cpu, cuda, cuda:N or auto")
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: Apple's MPS is not available on this machine; use --device cpu or "
                             "auto")
    elif device not in ("cpu", "auto"):
        raise InputError(f"--device {device}: expected cpu, cuda, cuda:N, mps or auto")


def _grouped(lines: Iterable[str], cases: set[str]) -> list[str]:
    """``lines`` with those of the form ``CASE: message`` (CASE one of ``cases``) that share their
    message merged into ``message (N cases: a, b, c, ...)``, in the order of their first line."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        case, _, message = line.partition(": ")
        key = message if message and case in cases else line
        groups.setdefault(key, []).append(case if key == message else "")
    out = []
    for key, owners in groups.items():
        named = [owner for owner in owners if owner]
        if len(named) < 2:
            out.append(f"{named[0]}: {key}" if named else key)
        else:
            shown = ", ".join(named[:3]) + (", ..." if len(named) > 3 else "")
            out.append(f"{key} ({len(named)} cases: {shown})")
    return out


def print_run_footer(report: RunReport | None, *, warnings: Iterable[str] = (), out_dir: Path | None = None,
                     resample_hint: bool = False) -> int:
    """The footer of every per-case command, from the engine's :class:`RunReport`: warnings
    (``warnings`` first: the command's own, e.g. ignored files), skipped cases, one error line per
    problem (plus, with ``resample_hint`` — a command that has ``--resample`` — a hint for
    geometry mismatches), and one count line; returns the exit code. Case warnings that say the
    same of several cases (``CASE: message``) are one line naming how many and the first three."""
    cases = set(report.done) | set(report.failed) | set(report.skipped) if report else set()
    for note in list(warnings) + _grouped(report.warnings if report else [], cases):
        print_warning(note)
    if report is None:
        return 0
    for note in _grouped([f"{case}: {why}; skipped" for case, why in report.skipped.items()], cases):
        print_warning(note)
    for message in dict.fromkeys(report.failed.values()):  # one line per problem (a case may fail in several tasks)
        print_error(message)
    if resample_hint and any(kind == "GeometryMismatchError" for kind in report.failure_kinds.values()):
        error_console.print(_RESAMPLE_HINT, highlight=False, soft_wrap=True)
    total = len(report.done) + len(report.failed) + len(report.skipped)
    counts = [f"{len(report.done)} of {total} case(s) done"]
    if report.reused:
        where = f" in {out_dir}" if out_dir is not None else ""
        counts.append(f"reused {len(report.reused)} finished case(s) of an earlier run with the same settings and "
                      f"inputs{where}")
    if report.failed:
        counts.append(f"{len(report.failed)} failed")
    if report.skipped:
        counts.append(f"{len(report.skipped)} skipped")
    error_console.print(", ".join(counts), highlight=False, soft_wrap=True)
    return EXIT_CASE_FAILURES if report.failed else 0




#: ``--split``, ``--holdout-fraction``, ``--group-by``: which cases a training run uses (qc train, seg train).
SPLIT_OPTION: Path | None = typer.Option(None, "--split",
                                         help="split.json (one segqc wrote, or {\"train\": [case ids], \"holdout\": "
                                              "[...]}); train on its 'train' cases.")
HOLDOUT_OPTION: float = typer.Option(
    0.0, "--holdout-fraction", help="Hold out this fraction of patients (writes OUT/split.json); 0 = train on all.")
GROUP_BY_OPTION: str | None = typer.Option(
    None, "--group-by", help="With --holdout-fraction: regular expression whose first group is the patient of a case "
                             "id (e.g. '^(HC18_[0-9]+)'); default: the id without a _frameNN/_tpNN/... suffix.")
