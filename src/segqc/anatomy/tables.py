"""What a rule preset knows about anatomy, in the form the label checks use it.

:func:`load_anatomy_tables` reads a rule preset (a shipped name or a YAML file; the format of
:mod:`segqc.anatomy.rules`) and keeps its body regions, the classes bound to each region, the
classes that occur once and the vertebra order (:class:`AnatomyTables`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from segqc.anatomy.rules import check_steps
from segqc.errors import InputError, parse_problem

__all__ = ["AnatomyTables", "load_anatomy_tables"]


@dataclass(frozen=True)
class AnatomyTables:
    """What the rule preset knows about anatomy, as the checks use it: ``regions`` (the region spec of
    :mod:`segqc.anatomy.regions`), ``region_classes`` (region -> class names), ``single`` (classes that
    occur once) and ``vertebrae`` (vertebra names top to bottom)."""

    regions: Mapping[str, Any]
    region_classes: Mapping[str, tuple[str, ...]]
    single: tuple[str, ...]
    vertebrae: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"regions": dict(self.regions), "region_classes": {k: list(v) for k, v in self.region_classes.items()},
                "single": list(self.single), "vertebrae": list(self.vertebrae)}


def load_anatomy_tables(spec: str | Path = "dap_total") -> AnatomyTables:
    """The regions, region classes, single-component classes and vertebra order of a rule preset: a
    shipped name (``dap_total``) or a YAML file with ``steps`` (``restrict_to_region``,
    ``largest_component``, ``order_series`` of ``vertebrae``). A missing step leaves its table empty;
    an unreadable file raises :class:`InputError` naming it."""
    text = str(spec)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        try:
            raw = resources.files("segqc.anatomy").joinpath("presets", f"{text}.yaml").read_text()
        except FileNotFoundError:
            raise InputError(f"no rule preset {text!r} (a shipped name such as dap_total, or a YAML file)") from None
        source: Path | str = f"{text}.yaml"
    else:
        path = Path(spec)
        try:
            raw = path.read_text()
        except OSError as error:
            raise InputError(f"cannot read the rule preset: {error.strerror or error}", path) from None
        source = path
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise InputError(f"cannot read the rule preset: {parse_problem(error)}", source) from None
    steps = data.get("steps") if isinstance(data, Mapping) else None
    if not isinstance(steps, list):
        raise InputError("a rule preset needs a 'steps' list", source)
    try:
        check_steps(steps)
    except ValueError as error:
        raise InputError(str(error), source) from None
    regions: dict[str, Any] = {}
    region_classes: dict[str, tuple[str, ...]] = {}
    single: tuple[str, ...] = ()
    vertebrae: tuple[str, ...] = ()
    for step in steps:
        if not isinstance(step, Mapping):
            continue
        if step.get("rule") == "restrict_to_region":
            regions = dict(step.get("regions") or {})
            region_classes = {str(k): tuple(str(n) for n in v) for k, v in (step.get("classes") or {}).items()}
        elif step.get("rule") == "largest_component":
            single = tuple(str(n) for n in step.get("classes") or ())
        elif step.get("rule") == "order_series" and step.get("series") == "vertebrae" and step.get("names"):
            vertebrae = tuple(str(n) for n in step["names"])
    return AnatomyTables(regions, region_classes, single, vertebrae)
