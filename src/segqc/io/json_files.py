"""Reading JSON settings files with one clear error line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from segqc.errors import InputError


def read_json_object(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``InputError`` naming the file if it is unreadable, malformed or
    not an object (``what`` names the kind of file in the message, e.g. "zoo config")."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (line {exc.lineno})", path) from None
    if not isinstance(data, dict):
        raise InputError(f"a {what} is a JSON object", path)
    return data
