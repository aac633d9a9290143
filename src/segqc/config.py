"""One base for every settings object of a learned method (zoo, nnQC, CAE, ...).

A config is a frozen dataclass that inherits :class:`ConfigBase` and sets three class
attributes: ``KIND`` (a short name for messages and the JSON ``format`` tag), ``PRESETS``
(name -> config; filled in after the class, see :func:`register_presets`) and
``RESUMABLE_FIELDS`` (fields that may change when an interrupted training run is continued,
e.g. the number of epochs). It then gets, the same way for every method:

* ``Config.preset("Small", seed=1)`` — a preset by case-insensitive name, *or* the path of a JSON
  file written by :meth:`ConfigBase.save`, with fields replaced by keyword overrides (``None``
  values are ignored so CLI options pass through; unknown fields are a ``ValueError``);
* ``to_dict()`` / ``from_dict()`` (tuples as JSON lists, unknown keys or bad values are an
  :class:`~segqc.errors.InputError`), ``save(path)`` / ``load(path)``;
* ``digest()`` (SHA-256 of the settings) and ``resume_key()`` (all but ``RESUMABLE_FIELDS``).

Each subclass keeps its own validation in ``__post_init__`` (which must turn JSON lists back
into tuples for its tuple fields).
"""

from __future__ import annotations

import ast
import hashlib
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from segqc.errors import InputError
from segqc.io.atomic import write_text_atomic
from segqc.io.json_files import read_json_object

C = TypeVar("C", bound="ConfigBase")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class ConfigBase:
    """Mixin for frozen settings dataclasses (module docstring)."""

    KIND: ClassVar[str] = "config"
    LABEL: ClassVar[str] = ""  # the method's name in messages (default: KIND)
    PRESETS: ClassVar[Mapping[str, Any]] = {}
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def label(cls) -> str:
        return cls.LABEL or cls.KIND

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """A preset by (case-insensitive) name or a JSON config file, with ``overrides``."""
        key = str(name).strip().lower()
        if key in cls.PRESETS:
            base = cls.PRESETS[key]
        elif str(name).lower().endswith(".json") or Path(name).is_file():
            base = cls.load(name)
        else:
            raise ValueError(f"unknown {cls.label()} config preset {name!r}; "
                             f"use one of {', '.join(cls.PRESETS)} or a JSON file")
        return base.with_overrides(**overrides)

    def with_overrides(self: C, **overrides: Any) -> C:
        """A copy with fields replaced (``None`` values ignored); unknown fields or invalid values
        are a ``ValueError`` naming them."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(changes) - self.field_names())
        if unknown:
            raise ValueError(f"unknown {self.label()} config field(s): {', '.join(unknown)}")
        changes = {k: _typed(self.label(), k, getattr(self, k), v) for k, v in changes.items()}
        try:
            return replace(self, **changes)  # type: ignore[type-var]
        except TypeError as error:
            raise ValueError(f"invalid {self.label()} config override: {error}") from None

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys or bad values raise :class:`InputError`."""
        values = {k: v for k, v in data.items() if k != "format"}
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            raise InputError(f"unknown {cls.label()} config field(s): {', '.join(unknown)}")
        try:
            defaults = _field_defaults(cls)
            values = {k: _typed(cls.label(), k, defaults[k], v) if k in defaults else v for k, v in values.items()}
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise InputError(f"invalid {cls.label()} config: {error}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        text = json.dumps({"format": f"segqc-{self.KIND}-config", **self.to_dict()}, indent=2) + "\n"
        return write_text_atomic(path, text)

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str]) -> C:
        path = Path(path)
        data = read_json_object(path, what=f"{cls.label()} config")
        try:
            return cls.from_dict(data)
        except InputError as error:
            raise InputError(error.problem, path) from None

    # -- identity --------------------------------------------------------------------------

    def digest(self) -> str:
        """SHA-256 (hex) of the settings."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def resume_key(self) -> dict[str, Any]:
        """The settings that must match for an interrupted training run to be continued."""
        data = self.to_dict()
        for name in self.RESUMABLE_FIELDS:
            data.pop(name, None)
        return data


def register_presets(cls: type[ConfigBase], presets: Mapping[str, Any]) -> None:
    """Attach the presets (defined after the class, from instances of it) to ``cls``."""
    cls.PRESETS = {k.lower(): v for k, v in presets.items()}


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _field_defaults(cls: type) -> dict[str, Any]:
    """The default value of every field that has one (plain or from a factory)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def _typed(label: str, key: str, current: Any, value: Any) -> Any:
    """``value`` for the field ``key`` whose present value is ``current``: a yes/no field takes
    True/False or true/false/yes/no/on/off/1/0 (any case); a number field refuses text and
    yes/no; a list field (one holding a tuple) takes a sequence, one entry, or text (``(16, 32)``,
    ``a,b``, ``(false, true)``), each entry typed like the field's first entry; anything else passes
    unchanged (the dataclass checks it). ValueError naming the field."""
    if isinstance(current, tuple):
        return _typed_sequence(label, key, current, value)
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"{label} config field {key} takes true or false, got {value!r}")
    if isinstance(current, numbers.Real):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{label} config field {key} takes a number, got {value!r}")
        if isinstance(current, numbers.Integral) and not isinstance(value, numbers.Integral):
            if not float(value).is_integer():
                raise ValueError(f"{label} config field {key} takes a whole number, got {value!r}")
            return int(float(value))
    return value


def _typed_sequence(label: str, key: str, current: tuple, value: Any) -> tuple:
    if isinstance(value, str):
        parsed = _literal(value)
        if isinstance(parsed, str):  # not a Python literal: comma-separated entries, brackets optional
            text = parsed[1:-1] if parsed[:1] in ("(", "[") and parsed[-1:] in (")", "]") else parsed
            value = [_literal(part) for part in text.split(",") if part.strip()]
        else:
            value = parsed
    if not isinstance(value, (tuple, list)):
        value = (value,)
    if not current:
        return tuple(value)
    return tuple(_typed(label, f"{key}[{i}]", current[0], v) for i, v in enumerate(value))


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict; values are Python literals where they parse (``3``,
    ``0.5``, ``(16, 32)``, ``True``), else strings. A missing ``=``, or a key given twice (which
    one was meant?), raises ``ValueError``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a config override must be KEY=VALUE, got {item!r}")
        if key.strip() in out:
            raise ValueError(f"--set {key.strip()} is given twice; give each setting once")
        out[key.strip()] = _literal(value)
    return out
