"""What a finished case is keyed on, and where its result is kept.

A finished case may be reused only when nothing it depends on changed: the settings, the content
of every input file, and the content of the model weights. :func:`file_digest` is the SHA-256 of
a file's bytes, read every time it is asked for (never memoised on path, size or modification
time: a file rewritten in place with its time stamp restored still gets its new digest);
:func:`directory_digest` covers every file of a folder (a model directory);
:func:`case_key` combines them.

:class:`CaseStore` keeps one Parquet part per finished case under ``OUT/cases/``:
``CASE.parquet`` (the case's main table) and ``.extra/<name>/CASE.parquet`` for further tables. The
key, the case's warnings and the output files it wrote are stored in the main part's Parquet
metadata; the main part is written last and atomically, so it marks the case as finished. A part
that is unreadable, carries another key, or whose output files are gone is simply recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from segqc.io.atomic import atomic_path

_KEY_FIELD = b"segqc_key"
_INFO_FIELD = b"segqc_case"


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's content, hashed anew on every call (about 1 s per GB): no
    memo keyed on path, size or time stamps, which a file rewritten in place can keep. Raises
    ``FileNotFoundError`` for a missing file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def directory_digest(directory: str | os.PathLike[str]) -> str:
    """SHA-256 over the names and contents of every file below ``directory`` (hidden files
    excluded), e.g. a model directory: another training run gives another digest."""
    directory = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(path.relative_to(directory)).encode())
        h.update(file_digest(path).encode())
    return h.hexdigest()


def settings_digest(settings: Any) -> str:
    """SHA-256 of a JSON-able settings object (a dict, or anything with ``to_dict()``)."""
    if hasattr(settings, "to_dict"):
        settings = settings.to_dict()
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def case_key(settings: str, inputs: Mapping[str, Iterable[Path]], extra: str = "") -> str:
    """The cache key of one case: settings digest + content digest of each input file (by role)
    + ``extra`` (e.g. the model weights' digest)."""
    record = {
        "settings": settings,
        "inputs": {role: [file_digest(p) for p in paths] for role, paths in sorted(inputs.items())},
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class CaseStore:
    """Parquet parts of finished cases in ``directory`` (module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, case: str, name: str | None = None) -> Path:
        """``CASE.parquet`` for the main part; an extra table in its own folder, ``.extra/NAME/CASE.parquet``
        (as ``CASE.NAME.parquet`` it was also the main part of a case named ``CASE.NAME``)."""
        if name is None:
            return self.directory / f"{case}.parquet"
        return self.directory / ".extra" / name / f"{case}.parquet"

    def save(self, case: str, key: str, tables: Mapping[str, pd.DataFrame], *, warnings: Iterable[str] = (),
             files: Iterable[str] = ()) -> None:
        """Store a finished case: the extra tables first, the main table (``tables["table"]``)
        last with the key in its metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for name, frame in tables.items():
            if name == "table":
                continue
            with atomic_path(self._path(case, name)) as tmp:
                frame.to_parquet(tmp, index=False)
        table = pa.Table.from_pandas(tables["table"], preserve_index=False)
        info = json.dumps({"warnings": list(warnings), "files": list(files), "tables": sorted(tables)})
        metadata = dict(table.schema.metadata or {})
        metadata.update({_KEY_FIELD: key.encode(), _INFO_FIELD: info.encode()})
        with atomic_path(self._path(case)) as tmp:
            pq.write_table(table.replace_schema_metadata(metadata), tmp)

    def cases(self) -> list[str]:
        """The cases with a finished main part in the store (any key); a case id with ``/`` (e.g.
        ``MODEL/CASE``) is stored in sub-folders."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.rglob("*.parquet"):
            relative = path.relative_to(self.directory)
            if not any(part.startswith(".") for part in relative.parts):  # extra tables, temporary files
                found.append(relative.as_posix()[:-len(".parquet")])
        return sorted(found)

    def files(self, case: str) -> list[str]:
        """The output files (relative to the output folder) recorded with the finished part of
        ``case``; empty when there is none or it cannot be read."""
        import pyarrow.parquet as pq

        path = self._path(case)
        try:
            metadata = pq.read_schema(path).metadata or {}
            info = json.loads(metadata.get(_INFO_FIELD, b"{}").decode())
        except (OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError):
            return []
        except Exception as error:  # pyarrow's own errors (ArrowInvalid, ...)
            if type(error).__module__.startswith("pyarrow"):
                return []
            raise
        files = info.get("files", []) if isinstance(info, dict) else []
        return [str(f) for f in files] if isinstance(files, list) else []

    def load(
        self, case: str, key: str, out_dir: Path | None = None
    ) -> tuple[dict[str, pd.DataFrame], list[str]] | None:
        """``(tables, warnings)`` of a case finished under ``key``, or None (not finished, another
        key, an unreadable part, or an output file that is gone)."""
        import pyarrow.parquet as pq

        path = self._path(case)
        if not path.is_file():
            return None
        try:
            metadata = pq.read_schema(path).metadata or {}
            if metadata.get(_KEY_FIELD, b"").decode() != key:
                return None
            info = json.loads(metadata.get(_INFO_FIELD, b"{}").decode())
            if out_dir is not None and not all((out_dir / f).is_file() for f in info.get("files", [])):
                return None
            tables = {"table": pd.read_parquet(path)}
            for name in info.get("tables", []):
                if name != "table":
                    tables[name] = pd.read_parquet(self._path(case, name))
        except (OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError, KeyError):
            return None
        except Exception as error:  # pyarrow's own errors (ArrowInvalid, ...) mean "not usable"
            if type(error).__module__.startswith("pyarrow"):
                return None
            raise
        return tables, list(info.get("warnings", []))
