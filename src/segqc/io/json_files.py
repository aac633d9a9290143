"""Reading JSON settings files with one clear error line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from segqc.errors import InputError


def read_json_object(path: str | os.PathLike[str], *, what: str, advice: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; ``InputError`` naming the file if it is unreadable, not UTF-8
    text, malformed or not an object (``what`` names the kind of file in the message, e.g. "zoo
    config"; ``advice``, when given, ends the message, e.g. "use an empty folder")."""
    path = Path(path)
    tail = f"; {advice}" if advice else ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}{tail}", path) from None
    except UnicodeDecodeError:
        raise InputError(f"corrupt {what}: not UTF-8 text{tail}", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (line {exc.lineno}){tail}", path) from None
    if not isinstance(data, dict):
        raise InputError(f"a {what} is a JSON object{tail}", path)
    return data
