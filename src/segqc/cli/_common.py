"""Helpers shared by the CLI modules: one clear error line and an exit code, never a traceback."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console

from segqc.errors import SegqcError

console = Console(width=None if sys.stdout.isatty() else 140)
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

EXIT_CASE_FAILURES = 1  # the run finished but some cases could not be processed
EXIT_BAD_INPUT = 2  # the run could not proceed


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn SegqcError / ValueError into one red line on stderr and exit code 2."""
    try:
        yield
    except SegqcError as error:
        error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (ValueError, FileNotFoundError) as error:
        error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
