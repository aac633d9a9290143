"""Mapping per-case work: serially, on a local process pool, or on a Dask cluster.

``map_cases(function, items)`` calls ``function(item)`` for every item and yields
``(item, result_or_exception)`` as cases finish, with a Rich progress bar. A case that raises a
:class:`~segqc.errors.SegqcError` does not stop the others: the error is yielded in place of its
result, so the caller can report it (one line naming the file) and go on. Any other exception is a
bug and propagates.

Local workers are forked (fast: nothing is re-imported) unless PyTorch is already loaded in this
process: then they are spawned, because PyTorch's OpenMP runtime (libgomp) is not fork-safe — a
child forked after the parent ran a multi-threaded tensor operation (e.g. loading a model) waits
forever in its first parallel region. Spawned workers also get an equal share of the cores as
torch threads (a worker's function may still set its own), so N workers do not each run on every
core.

Stopping. Workers die with their parent: on Linux each asks the kernel for SIGKILL when its
parent ends (``PR_SET_PDEATHSIG``), so ``kill -9`` of the command leaves no orphan computing on.
Workers ignore SIGINT; on Ctrl-C (SIGINT) or SIGTERM the parent cancels the queue, terminates the
workers at once and re-raises ``KeyboardInterrupt``; cases run serially in this process stop on
SIGTERM with ``KeyboardInterrupt`` too, as on Ctrl-C. Finished cases are already stored by the
caller's per-case function, so a rerun resumes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from segqc.errors import InputError, SegqcError

Item = TypeVar("Item")
Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1


def _call(function: Callable[[Item], Result], item: Item) -> Result | SegqcError:
    try:
        return function(item)
    except SegqcError as error:
        return error


def progress_bar(enabled: bool, *extra_columns: Any) -> Progress:
    """The one Rich progress bar style of segqc (description, bar, n/N, elapsed, remaining)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        disable=not enabled,
        transient=False,
    )


def stop_if_bootstrapping() -> None:
    """End this process quietly (exit code 1) when it is a worker that is still starting: spawned
    workers re-import the calling script, and a script that calls segqc without ``if __name__ ==
    "__main__":`` would otherwise run that call again in every worker — taking the output folder's
    lock (a misleading "another segqc run is writing" traceback per worker) or starting workers of
    its own. The parent then reports the missing guard in one line (:data:`_BROKEN_POOL`)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(1)


def map_cases(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    *,
    jobs: int = 1,
    scheduler: Any = None,
    description: str = "cases",
    progress: bool = True,
) -> Iterator[tuple[Item, Result | SegqcError]]:
    """Yield ``(item, function(item))`` for every item as it completes (order not guaranteed).

    ``jobs``: worker processes (1 = serial in this process; 0 or negative = one per CPU core).
    ``scheduler``: address of a Dask distributed scheduler (``tcp://host:8786``) or a
    ``distributed.Client``-compatible object; when given, work runs on that cluster instead
    (an unreachable address is an :class:`InputError`).
    ``function`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    stop_if_bootstrapping()
    items = list(items)
    if jobs <= 0:
        jobs = os.cpu_count() or 1
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(items))
        if scheduler is not None:
            yield from _map_dask(function, items, scheduler, bar, task)
        elif jobs == 1 or len(items) <= 1:
            with sigterm_interrupts():
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


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux); exit at once if the
    parent is already gone (it may have died before the request was made)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent:
        os._exit(1)


def _worker_init(parent: int, threads: int | None) -> None:
    """Initializer of every local worker: die with the parent, leave Ctrl-C to the parent (which
    terminates the pool), and use ``threads`` torch threads when torch is in use."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the parent's handler
    if threads is not None:
        _share_cores(threads)


def _share_cores(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """While the pool runs, Ctrl-C (SIGINT) and SIGTERM only set ``stop`` (main thread only).

    The loop below then raises ``KeyboardInterrupt`` itself, between two waits. Raising it from
    the handler instead could land inside ``concurrent.futures.wait`` while it holds some of the
    futures' locks (taken one by one); the pool's manager thread then blocked on such a lock for
    ever and the interrupted command never exited (seen under heavy load)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    before = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM stops it as Ctrl-C does: ``KeyboardInterrupt`` (main thread
    only; elsewhere nothing changes), so the command reports the interruption and exits 130
    instead of dying silently with 143. Used around cases that run in this process and, by the
    CLI, around every command (training included). Nothing here holds the pool's locks, so
    raising from the handler is safe."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel everything queued and kill the workers now (not after the queue is drained)."""
    processes = list(getattr(pool, "_processes", {}).values())  # CPython keeps them here
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown(wait=False) forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
    # the executor's manager thread closes its wake-up pipe as it ends; if it were still ending at
    # interpreter exit, CPython 3.11's exit hook could write to the pipe as it is closed and print a
    # traceback ("Bad file descriptor")
    if manager is not None and manager is not threading.current_thread():
        manager.join(timeout=5)


_POLL_SECONDS = 0.1  # how often the pool loop looks whether Ctrl-C / SIGTERM arrived


_BROKEN_POOL = ("a worker process ended before its case was done: it was killed (e.g. out of memory), or it could "
                "not start — workers are started with '{method}', so a Python script that calls segqc with jobs > 1 "
                "must do so under `if __name__ == \"__main__\":`")


_SIGNAL_GRACE_SECONDS = 0.5  # how long a broken pool waits for the signal that may have broken it


def _map_pool(function, items, jobs, bar, task):
    workers = min(jobs, len(items))
    method = pool_start_method()
    threads = max(1, (os.cpu_count() or 1) // workers) if method == "spawn" and "torch" in sys.modules else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_worker_init, initargs=(os.getpid(), threads))
    finished = False
    stop = threading.Event()
    try:
        with _signals_set(stop):
            pending: dict[Future, Any] = {}
            for item in items:
                if stop.is_set():
                    raise KeyboardInterrupt
                pending[pool.submit(_call, function, item)] = item
            while pending:
                if stop.is_set():
                    raise KeyboardInterrupt
                done, _ = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        # a SIGTERM to the whole process group ends the workers too, and reaches this
                        # process as well: then it is a stop (a worker's exit code cannot tell, since
                        # the executor itself ends the other workers of a broken pool with SIGTERM)
                        if stop.wait(_SIGNAL_GRACE_SECONDS):
                            raise KeyboardInterrupt from None
                        raise SegqcError(_BROKEN_POOL.format(method=method)) from None
                    yield item, result
                    bar.advance(task)
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted, a bug in a case, or the consumer stopped early
            _terminate(pool)


def _connect(scheduler: Any) -> Any:
    from distributed import Client

    if hasattr(scheduler, "submit"):
        return scheduler
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {reason}") from None


def _map_dask(function, items, scheduler, bar, task):
    from distributed import as_completed

    client = _connect(scheduler)
    futures = {}
    try:
        futures = {client.submit(_call, function, item, pure=False): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            yield items[futures[future]], future.result()
            bar.advance(task)
    finally:
        for future in futures:
            future.cancel()
        if client is not scheduler:
            client.close()
