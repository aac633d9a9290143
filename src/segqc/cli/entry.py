"""The ``segqc`` console entry point. The command modules are imported here, inside the guard, so
that Ctrl-C at any moment — while they load (about a second), or after a command has said what
it wrote — is one line and exit code 130, never a traceback from the middle of an import."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main() -> None:  # pragma: no cover - exercised through the console script in tests
    try:
        from segqc.cli.main import app

        app()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
