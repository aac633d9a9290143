"""The ``segqc`` console entry point. The command modules are imported here, inside the guard, so
that Ctrl-C at any moment — while they load (about a second), while a command runs, or after it
has said what it wrote — is one line and exit code 130, never a traceback from the middle of an
import and never a silent exit.

A Ctrl-C inside a command's :func:`segqc.cli._common.user_errors` prints what it means for that
command; one that reaches Typer elsewhere (while a command imports its work functions, or prints
its summary) becomes a silent exit 130 there, and this module adds the line.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130
INTERRUPTED_LINE = "error: interrupted\n"

_reported = False


def note_interruption_reported() -> None:
    """Called by a command that has printed its own interruption line (with what it means for that
    command), so that :func:`main` does not print a second one."""
    global _reported
    _reported = True


def main() -> None:  # pragma: no cover - exercised through the console script in tests
    try:
        from segqc.cli.main import app

        app()
    except KeyboardInterrupt:
        code: str | int | None = EXIT_INTERRUPTED
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if code == EXIT_INTERRUPTED and not _reported:
        sys.stderr.write(INTERRUPTED_LINE)
    sys.exit(code)
