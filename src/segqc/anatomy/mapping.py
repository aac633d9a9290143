"""Mapping label maps from one scheme to another with a lookup table.

A :class:`LabelMapping` sends every value of a source scheme to a value of a target scheme (0 =
dropped to background). Several source classes may go to one target class (their union);
``regions`` are nnU-Net-style unions of target classes evaluated as one mask each (they may
overlap, so they are masks, not values of the mapped map). Applying a mapping is one lookup-table
read per voxel (``lut[array]``).

Mapping file (YAML or JSON)::

    source: total_v1          # a shipped scheme name or a scheme file (relative to this file)
    target: total
    map:                      # source name -> target name; null drops the class
      heart_myocardium: heart
      face: null
    unmapped: by_name         # what happens to source classes not listed under ``map``
    regions:                  # optional; each a list of target class names
      heart_and_vessels: [heart, aorta, pulmonary_vein]

``unmapped``: ``by_name`` (default) — the class of the same name in the target; otherwise the
nearest ancestor of the source class (its parent group, e.g. ``heart_*`` -> ``heart``) that is a
class of the target; otherwise dropped (and listed by :meth:`LabelMapping.table` as
``no match``). ``drop`` — dropped. ``error`` — every source class must be listed.

A mapping is invertible when no two source classes share a target class and nothing is dropped
(:meth:`LabelMapping.inverse`); a many-to-one mapping cannot be undone and says which target
classes merged what.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from segqc.anatomy.scheme import LabelScheme, label_dtype, load_scheme, lookup
from segqc.errors import InputError, parse_problem
from segqc.metrics.counts import value_counts

__all__ = ["UNMAPPED_POLICIES", "LabelMapping", "load_mapping", "mapping_by_name", "mapping_into"]

UNMAPPED_POLICIES = ("by_name", "drop", "error")


@dataclass(frozen=True)
class LabelMapping:
    """``values``: source value -> target value (0 = drop) for EVERY source value; ``how``: source
    value -> why (``explicit``, ``same name``, ``ancestor <group>``, ``dropped``, ``no match``);
    ``regions``: region name -> target values."""

    source: LabelScheme
    target: LabelScheme
    values: Mapping[int, int]
    how: Mapping[int, str] = field(default_factory=dict)
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = sorted(set(self.source.values) - set(self.values))
        if missing:
            raise ValueError(f"the mapping from {self.source.name!r} leaves values {missing[:8]} unmapped")
        bad = sorted(v for v in self.values.values() if v != 0 and v not in self.target.by_value)
        if bad:
            raise ValueError(f"the mapping sends classes to values {bad[:8]} that {self.target.name!r} does not have")

    # -- the lookup table --------------------------------------------------------------------

    def lut(self) -> np.ndarray:
        """``lut[source_value]`` = target value; values outside the source scheme are -1. (An
        array as long as the largest source value: :meth:`apply` uses it only for small values.)"""
        size = max(self.source.max_value, max(self.values, default=0)) + 1
        table = np.full(size, -1, dtype=np.int64)
        table[0] = 0
        for s, t in self.values.items():
            table[s] = t
        return table

    def apply(self, array: np.ndarray, path: str | Path | None = None, *,
              present: np.ndarray | None = None) -> np.ndarray:
        """``array`` (source values) in target values, dtype ``uint8`` / ``uint16`` / ``uint32``
        by the largest target value. A value the source scheme does not have raises
        :class:`InputError` naming ``path`` and the values (never silently background).
        ``present``: the values ``array`` holds, when the caller has counted them already."""
        dtype = label_dtype(self.target.max_value)
        if present is None:
            present, _ = value_counts(array)
        sources = np.array([0, *sorted(self.values)], dtype=np.int64)
        targets = np.array([0, *(self.values[s] for s in sorted(self.values))], dtype=np.int64)
        unknown = present[~np.isin(present, sources)]
        if unknown.size:
            raise InputError(f"label values {', '.join(str(int(v)) for v in unknown[:8])} are not classes of the "
                             f"scheme {self.source.name!r}", path)
        if not array.size:
            return np.zeros(array.shape, dtype=dtype)
        return lookup(array, sources, targets, dtype)  # every value is in ``sources``

    def region_masks(self, mapped: np.ndarray) -> dict[str, np.ndarray]:
        """Each region of a MAPPED map as a boolean mask (union of its target values)."""
        return {name: np.isin(mapped, np.asarray(values)) for name, values in self.regions.items()}

    # -- inversion ---------------------------------------------------------------------------

    @property
    def merged(self) -> dict[int, tuple[int, ...]]:
        """Target value -> the source values sent to it, where there are several."""
        groups: dict[int, list[int]] = {}
        for s, t in self.values.items():
            if t:
                groups.setdefault(t, []).append(s)
        return {t: tuple(sorted(s)) for t, s in groups.items() if len(s) > 1}

    @property
    def dropped(self) -> tuple[int, ...]:
        return tuple(sorted(s for s, t in self.values.items() if t == 0))

    @property
    def invertible(self) -> bool:
        return not self.merged and not self.dropped

    def inverse(self) -> LabelMapping:
        """The mapping back (target -> source); target classes that no source class reaches are
        dropped. Raises ``ValueError`` saying what was merged or dropped when it cannot be undone."""
        if not self.invertible:
            merged = "; ".join(f"{self.target.name_of(t)} <- {', '.join(self.source.name_of(s) for s in ss)}"
                               for t, ss in list(self.merged.items())[:4])
            dropped = ", ".join(self.source.name_of(s) for s in self.dropped[:6])
            why = "; ".join(part for part in (f"merged: {merged}" if merged else "",
                                              f"dropped: {dropped}" if dropped else "") if part)
            raise ValueError(f"the mapping {self.source.name!r} -> {self.target.name!r} cannot be inverted ({why})")
        back = {t: 0 for t in self.target.values}
        back.update({t: s for s, t in self.values.items()})
        how = {t: ("explicit" if t in self.values.values() else "dropped") for t in self.target.values}
        return LabelMapping(source=self.target, target=self.source, values=back, how=how)

    # -- report --------------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """One row per source class: source name and value, target name and value (0 dropped), how."""
        rows = [{"source": self.source.name_of(s), "source_value": s,
                 "target": self.target.name_of(t) if t else "", "target_value": t,
                 "how": self.how.get(s, "explicit")} for s, t in sorted(self.values.items())]
        return pd.DataFrame(rows, columns=["source", "source_value", "target", "target_value", "how"])


def mapping_by_name(source: LabelScheme, target: LabelScheme, *, explicit: Mapping[str, str | None] | None = None,
                    unmapped: str = "by_name", regions: Mapping[str, Sequence[str]] | None = None,
                    origin: str | Path | None = None) -> LabelMapping:
    """The mapping of the module docstring from names. Unknown names (in ``explicit`` or
    ``regions``) raise :class:`InputError` naming ``origin`` (the mapping file, if any)."""
    if unmapped not in UNMAPPED_POLICIES:
        raise InputError(f"unmapped must be one of {', '.join(UNMAPPED_POLICIES)}, not {unmapped!r}", origin)
    explicit = dict(explicit or {})
    source_names, target_names = source.by_name, target.by_name
    for name, goal in explicit.items():
        if name not in source_names:
            raise InputError(f"map: {name!r} is not a class of the source scheme {source.name!r}", origin)
        if goal is not None and (goal not in target_names or target_names[goal].value is None):
            raise InputError(f"map: {name!r} -> {goal!r}, which is not a class of the target scheme {target.name!r}",
                             origin)
    values: dict[int, int] = {}
    how: dict[int, str] = {}
    missing = []
    for cls in source.classes:
        if cls.value is None:
            continue
        if cls.name in explicit:
            goal = explicit[cls.name]
            values[cls.value] = 0 if goal is None else target.value_of(goal)
            how[cls.value] = "explicit" if goal is not None else "dropped"
        elif unmapped == "drop":
            values[cls.value], how[cls.value] = 0, "dropped"
        elif unmapped == "error":
            missing.append(cls.name)
        else:
            values[cls.value], how[cls.value] = _by_name(cls.name, source, target)
    if missing:
        raise InputError(f"map: source classes {', '.join(missing[:6])} are not mapped (unmapped: error)", origin)
    region_values: dict[str, tuple[int, ...]] = {}
    for region, members in (regions or {}).items():
        if not _names_list(members):
            raise InputError(f"region {region!r}: regions must be lists of class names, not {members!r}", origin)
        unknown = [m for m in members if m not in target_names]
        if unknown:
            raise InputError(f"region {region!r}: {', '.join(unknown)} not in the target scheme {target.name!r}",
                             origin)
        region_values[str(region)] = tuple(sorted({v for m in members for v in target.values_under(m)}))
    return LabelMapping(source=source, target=target, values=values, how=how, regions=region_values)


def _by_name(name: str, source: LabelScheme, target: LabelScheme) -> tuple[int, str]:
    cls = target.by_name.get(name)
    if cls is not None and cls.value is not None:
        return cls.value, "same name"
    for ancestor in source.ancestors(name):
        cls = target.by_name.get(ancestor)
        if cls is not None and cls.value is not None:
            return cls.value, f"ancestor {ancestor}"
    return 0, "no match"


def load_mapping(path: str | Path) -> LabelMapping:
    """A mapping file (module docstring). Problems raise :class:`InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such mapping file", path)
    try:
        raw = path.read_text()
        data: Any = yaml.safe_load(raw) if path.suffix.lower() in (".yaml", ".yml") else json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise InputError(f"cannot read the mapping: {parse_problem(error)}", path) from None
    if not isinstance(data, Mapping) or "source" not in data or "target" not in data:
        raise InputError("a mapping needs 'source' and 'target' schemes", path)
    unknown = set(data) - {"source", "target", "map", "unmapped", "regions"}
    if unknown:
        raise InputError(f"unknown keys {sorted(unknown)}", path)
    source = load_scheme(_relative(data["source"], path))
    target = load_scheme(_relative(data["target"], path))
    explicit = data.get("map") or {}
    regions = data.get("regions") or {}
    if not isinstance(explicit, Mapping) or not isinstance(regions, Mapping):
        raise InputError("'map' and 'regions' must be mappings of names", path)
    for name, goal in explicit.items():
        if goal is not None and not isinstance(goal, str):
            raise InputError(f"map: {name!r} -> {goal!r}; map each source class to one target class name (or null)",
                             path)
    for region, members in regions.items():
        if not _names_list(members):
            raise InputError(f"region {region!r}: regions must be lists of class names, not {members!r}", path)
    pairs = {str(k): None if v is None else str(v) for k, v in explicit.items()}
    return mapping_by_name(source, target, explicit=pairs,
                           unmapped=str(data.get("unmapped", "by_name")),
                           regions={str(k): list(v) for k, v in regions.items()}, origin=path)


def _names_list(members: Any) -> bool:
    return isinstance(members, (list, tuple)) and all(isinstance(m, str) for m in members)


def _relative(spec: Any, mapping_file: Path) -> str | Path:
    text = str(spec)
    candidate = mapping_file.parent / text
    return candidate if candidate.is_file() else text


def mapping_into(spec: str | Path, target: LabelScheme) -> LabelMapping:
    """The mapping of a source into ``target`` from ``spec``: a mapping file (its target must be
    ``target``'s name) or the source's scheme (a shipped name, a scheme file or a dataset.json),
    mapped by name (``unmapped: by_name``)."""
    path = Path(spec)
    if path.is_file():
        try:
            raw = path.read_text()
            data = yaml.safe_load(raw) if path.suffix.lower() in (".yaml", ".yml") else json.loads(raw)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError):
            data = None
        if isinstance(data, Mapping) and "source" in data and "target" in data:
            mapping = load_mapping(path)
            if mapping.target.name != target.name:
                raise InputError(f"the mapping's target is {mapping.target.name!r}, not {target.name!r}", path)
            return mapping
    return mapping_by_name(load_scheme(spec), target)
