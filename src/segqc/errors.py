"""User-facing error types.

Every error that reaches a user carries one line that names the file (when there is one) and the
problem; the CLI prints that line and exits with a non-zero code instead of a traceback. Library
messages never mention command-line options: callers add such hints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

    def __reduce__(self):  # keep problem and path when sent between processes
        return (self.__class__, (self.problem, self.path))


@dataclass(frozen=True)
class GeometryDifference:
    """One way in which a prediction's voxel grid differs from the ground truth's.

    ``what`` is one of ``"dimension"``, ``"shape"``, ``"spacing"``, ``"orientation"`` (the axis
    codes differ, e.g. a flipped axis), ``"direction"`` (same axis codes, different cosines) or
    ``"origin"``; ``pred`` and ``gt`` are the two values as displayed (e.g. ``"(1.0, 1.0, 2.5) mm"``).
    """

    what: str
    pred: str
    gt: str


class GeometryMismatchError(InputError):
    """Prediction and ground truth do not share a voxel grid (dimension, shape, spacing,
    orientation/direction or origin).

    ``differences`` holds one :class:`GeometryDifference` per differing property, so that callers
    can decide what to do (or suggest) without parsing the message.
    """

    def __init__(
        self,
        problem: str,
        path: str | Path | None = None,
        differences: Iterable[GeometryDifference] = (),
    ) -> None:
        super().__init__(problem, path)
        self.differences: tuple[GeometryDifference, ...] = tuple(differences)

    def __reduce__(self):
        return (self.__class__, (self.problem, self.path, self.differences))


def parse_problem(error: Exception) -> str:
    """One line saying why a YAML or JSON text could not be parsed: the parser's first line, and
    for YAML the line and column of the problem (1-based), which its first line leaves out."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        problem = getattr(error, "problem", None)
        first = f"{problem or first} (line {mark.line + 1}, column {mark.column + 1})"
    return first


_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "DefaultCPUAllocator")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the memory ran out: a :class:`MemoryError`, or PyTorch's allocator
    failure (a ``RuntimeError`` on the CPU, ``torch.OutOfMemoryError`` on a GPU)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(mark in str(error) for mark in _OUT_OF_MEMORY)


_ACCELERATOR_OUT_OF_MEMORY = ("CUDA out of memory", "MPS backend out of memory", "HIP out of memory")


def accelerator_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says a GPU's (or other accelerator's) memory ran out, not the machine's."""
    return (type(error).__name__ == "OutOfMemoryError"
            or any(mark in str(error) for mark in _ACCELERATOR_OUT_OF_MEMORY))


@contextmanager
def out_of_memory_as(problem: str, path: str | Path | None = None) -> Iterator[None]:
    """Turn running out of memory inside the block into one :class:`InputError` line
    (``problem``, naming ``path``; say which setting to lower), not a traceback. When a GPU's
    memory ran out, the line adds that ``--device cpu`` runs in the machine's memory instead."""
    try:
        yield
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        if accelerator_out_of_memory(error):
            problem += "; the GPU's memory ran out: --device cpu runs in the machine's memory"
        raise InputError(problem, path) from None
