"""One writer per output folder.

Two segqc runs writing into one folder at once would mix their files: each writes its own
tables last, and the case engine deletes the files of an earlier run that it did not write
itself — the other run's. So a run that writes a folder holds an exclusive ``flock`` on the
folder itself (no lock file is left behind) and a second run is refused with one line:

- :func:`output_lock` — a context manager, held while the block runs (the case engine holds it
  during :func:`segqc.execution.run.run_cases`, the stage runner during a training stage);
- :func:`claim_output` — held until the innermost :func:`claims` block ends (every CLI command
  runs in one, so the whole command holds it) or, outside any, until the process exits.

Locks are re-entrant within a process (a command's claim covers its engine runs) and the
operating system drops them when the process dies, kill -9 included: a rerun after a crash is
never refused. Where ``flock`` is unavailable (Windows, some network file systems) runs are not
locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segqc.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

BUSY = ("another segqc run is writing into this folder; wait for it to finish or choose another output folder")

_held: dict[str, tuple[int, int]] = {}
"""Folder (real path) -> (descriptor or -1 when unlocked, holders in this process)."""

_claim_stack: list[list[str]] = []


def _acquire(folder: str | Path) -> str:
    from segqc.execution.pool import stop_if_bootstrapping

    stop_if_bootstrapping()  # a worker re-importing an unguarded script: before it takes the lock
    key = os.path.realpath(folder)
    if key in _held:
        fd, count = _held[key]
        _held[key] = (fd, count + 1)
        return key
    fd = -1
    if fcntl is not None:
        try:
            fd = os.open(key, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            fd = -1  # not a folder we can open: nothing to lock, the writer reports the problem
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(BUSY, Path(folder)) from None
            except OSError:  # flock unsupported here: unlocked
                os.close(fd)
                fd = -1
    _held[key] = (fd, 1)
    return key


def _release(key: str) -> None:
    fd, count = _held[key]
    if count > 1:
        _held[key] = (fd, count - 1)
        return
    del _held[key]
    if fd >= 0:
        os.close(fd)  # closing the only descriptor drops the flock


@contextmanager
def output_lock(folder: str | Path) -> Iterator[None]:
    """Hold the folder's lock while the block runs; :class:`InputError` naming the folder when
    another process holds it. The folder must exist."""
    key = _acquire(folder)
    try:
        yield
    finally:
        _release(key)


def claim_output(folder: str | Path) -> None:
    """Lock ``folder`` until the innermost :func:`claims` block ends, or until the process exits
    when there is none; :class:`InputError` when another process holds it."""
    key = _acquire(folder)
    if _claim_stack:
        _claim_stack[-1].append(key)


@contextmanager
def claims() -> Iterator[None]:
    """Release, when the block ends, the folders :func:`claim_output` locked inside it."""
    _claim_stack.append([])
    try:
        yield
    finally:
        for key in reversed(_claim_stack.pop()):
            _release(key)


def locked_here(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock (for tests and diagnostics)."""
    return os.path.realpath(folder) in _held
