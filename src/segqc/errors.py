"""User-facing error types.

Every error that reaches a user carries one line that names the file (when there is one) and the
problem; the CLI prints that line and exits with a non-zero code instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SegqcError(Exception):
    """Base class of all errors segqc raises on purpose (bad input, bad configuration)."""


class InputError(SegqcError):
    """Bad input data: unreadable file, wrong labels, NaNs, geometry mismatch, ...

    ``str(error)`` is ``"<path>: <problem>"`` when a path is given, else ``"<problem>"``.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class GeometryMismatchError(InputError):
    """Prediction and ground truth do not share shape, spacing or orientation."""
