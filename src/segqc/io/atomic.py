"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader (or a resumed run) never sees a half-written output: either the old file, or the new one.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from segqc.errors import InputError

_JOURNAL: ContextVar[tuple[Path, Path, frozenset[str] | None] | None] = ContextVar("segqc_write_journal", default=None)


@contextmanager
def write_journal(root: str | os.PathLike[str], journal: str | os.PathLike[str], *,
                  own_files: Iterable[str] | None = None) -> Iterator[None]:
    """Within the block, every file that segqc's writers (:func:`atomic_path` and its users,
    ``segqc.io.images.write_image``) write below ``root`` is first appended to the text file
    ``journal`` (one path relative to ``root`` per line). The case engine keeps one journal per
    running case, so the files of a case killed or failed half-way can be found and removed.
    ``own_files``: when given, the paths relative to ``root`` that earlier runs of this case
    wrote; writing over an existing file that neither they nor the journal list (a file segqc
    did not write, e.g. the user's own segmentation of that name) raises :class:`InputError`
    naming it instead."""
    token = _JOURNAL.set((Path(root).resolve(), Path(journal), None if own_files is None else frozenset(own_files)))
    try:
        yield
    finally:
        _JOURNAL.reset(token)


def note_write(path: str | os.PathLike[str]) -> None:
    """Record ``path`` in the active :func:`write_journal` before it is written (nothing outside
    one, or for a path outside its root); :class:`InputError` naming ``path`` when it exists and
    is not one of the journal's own files."""
    entry = _JOURNAL.get()
    if entry is None:
        return
    root, journal, own_files = entry
    try:
        relative = Path(path).resolve().relative_to(root)
    except ValueError:
        return
    if (own_files is not None and os.path.lexists(path) and relative.as_posix() not in own_files
            and str(relative) not in read_journal(journal)):
        raise InputError("exists and no segqc run into this folder wrote it; this run would overwrite it: "
                         "write into another folder, or move the file", Path(path))
    journal.parent.mkdir(parents=True, exist_ok=True)
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write(f"{relative}\n")


def read_journal(journal: str | os.PathLike[str]) -> list[str]:
    """The relative paths a :func:`write_journal` recorded (empty when it is missing or unreadable)."""
    try:
        return [line for line in Path(journal).read_text(encoding="utf-8").splitlines() if line]
    except (OSError, UnicodeDecodeError):
        return []


def check_writable_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` naming ``path`` where writing it as a file could only fail with an
    error about a temporary file or a parent: ``path`` is a folder, or its nearest existing parent
    is a file. Callers with long work before the write check first."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give a file name", path)
    for parent in path.parents:
        if parent.is_dir():
            return
        if parent.exists():
            raise InputError(f"cannot be written: its parent {parent} is a file, not a folder", path)


_TEMPORARY = re.compile(r"^\.tmp-[0-9a-f]+-(?P<rest>.+)$")
"""The name of a temporary file (``.tmp-TOKEN-NAME``) or folder (``.tmp-TOKEN-NAME.d``) of an atomic
write of ``NAME`` (:func:`atomic_path`, ``segqc.io.images.write_image``); see :func:`_temporary_of`."""


def _temporary_of(item: str, names: set[str]) -> bool:
    """Whether ``item`` is the temporary file or folder of an atomic write of one of ``names`` (a
    name may itself end in ``.d``: both readings are tried)."""
    match = _TEMPORARY.match(item)
    if match is None:
        return False
    rest = match["rest"]
    return rest in names or (rest.endswith(".d") and rest[:-2] in names)


def remove_temporaries(paths: Iterable[str | os.PathLike[str]] = (), *,
                       folders: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Delete what atomic writes killed half-way (kill -9) left: the temporary files
    (``.tmp-<token>-NAME``, or folders ``...NAME.d``) of each of ``paths`` (beside it), and every
    temporary file below ``folders``. Only for folders no other process writes into (callers hold
    their lock, :mod:`segqc.execution.lock`)."""
    wanted: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        wanted.setdefault(path.parent, set()).add(path.name)
    leftovers = [item for folder in map(Path, folders) if folder.is_dir() for item in folder.rglob(".tmp-*")]
    for folder, names in wanted.items():
        if folder.is_dir():
            leftovers += [item for item in folder.iterdir() if _temporary_of(item.name, names)]
    for item in leftovers:
        if not _TEMPORARY.match(item.name):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, else delete it.

    The temporary name keeps the final suffix (``.tmp-<token>-<name>``) so that writers that pick a
    format from the extension still work. Parent folders are created. Raises :class:`InputError`
    naming ``path`` when it is an existing folder or when one of its parents is a file; an
    ``OSError`` of writing the temporary file (permission, full disk) names ``path``.
    """
    path = Path(path)
    check_writable_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    note_write(path)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.errno is None or error.filename is None or Path(error.filename) != tmp:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None  # name the file asked for, not tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv_atomic(path: str | os.PathLike[str], table) -> Path:
    """Write the pandas ``table`` to ``path`` as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def json_safe(value):
    """A copy of ``value`` that strict JSON accepts: NaN and infinities become ``None``, dict keys
    strings, tuples lists, numpy scalars Python numbers."""
    import math

    import numpy as np

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike[str], value, *, indent: int = 2) -> Path:
    """Write ``value`` as strict JSON (see :func:`json_safe`) to ``path`` atomically."""
    import json

    return write_text_atomic(path, json.dumps(json_safe(value), indent=indent) + "\n")
