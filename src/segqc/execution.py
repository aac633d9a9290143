"""One place that maps per-case work: serially, on a local process pool, or on a Dask cluster.

``map_cases(function, items)`` calls ``function(item)`` for every item and yields
``(item, result_or_exception)`` as cases finish, with a Rich progress bar. A case that raises a
:class:`~segqc.errors.SegqcError` does not stop the others: the error is yielded in place of its
result, so the caller can report it (one line naming the file) and go on. Any other exception is a
bug and propagates.

Skip-if-done is the caller's business (it knows where a finished case's output lives): pass only
the items still to do.

Local workers are forked (fast: nothing is re-imported) unless PyTorch is already loaded in this
process: then they are spawned, because PyTorch's OpenMP runtime (libgomp) is not fork-safe — a
child forked after the parent ran a multi-threaded tensor operation (e.g. loading a model) waits
forever in its first parallel region. Spawned workers also get an equal share of the cores as
torch threads (a worker's function may still set its own), so N workers do not each run on every
core.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from segqc.errors import SegqcError

Item = TypeVar("Item")
Result = TypeVar("Result")


def _call(function: Callable[[Item], Result], item: Item) -> Result | SegqcError:
    try:
        return function(item)
    except SegqcError as error:
        return error


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def map_cases(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    description: str = "cases",
    progress: bool = True,
) -> Iterator[tuple[Item, Result | SegqcError]]:
    """Yield ``(item, function(item))`` for every item as it completes (order not guaranteed).

    ``jobs``: worker processes (1 = serial in this process; 0 or negative = one per CPU core).
    ``scheduler``: address of a Dask distributed scheduler (``tcp://host:8786``) or a
    ``distributed.Client``-compatible object; when given, work runs on that cluster instead.
    ``function`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    items = list(items)
    if jobs <= 0:
        jobs = os.cpu_count() or 1
    with _progress(progress) as bar:
        task = bar.add_task(description, total=len(items))
        if scheduler is not None:
            yield from _map_dask(function, items, scheduler, bar, task)
        elif jobs == 1 or len(items) <= 1:
            for item in items:
                yield item, _call(function, item)
                bar.advance(task)
        else:
            yield from _map_pool(function, items, jobs, bar, task)


def pool_start_method() -> str:
    """How local workers start: ``"spawn"`` once PyTorch is imported here (module docstring),
    else the platform's default (``"fork"`` on Linux)."""
    if "torch" in sys.modules:
        return "spawn"
    return multiprocessing.get_start_method(allow_none=False)


def _share_cores(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _map_pool(function, items, jobs, bar, task):
    workers = min(jobs, len(items))
    method = pool_start_method()
    share = {"initializer": _share_cores, "initargs": (max(1, (os.cpu_count() or 1) // workers),)} \
        if method == "spawn" and "torch" in sys.modules else {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method), **share) as pool:
        pending = {pool.submit(_call, function, item): item for item in items}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                yield item, future.result()
                bar.advance(task)


def _map_dask(function, items, scheduler, bar, task):
    from distributed import Client, as_completed

    client = scheduler if hasattr(scheduler, "submit") else Client(scheduler)
    try:
        futures = {client.submit(_call, function, item, pure=False): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            yield items[futures[future]], future.result()
            bar.advance(task)
    finally:
        if client is not scheduler:
            client.close()
