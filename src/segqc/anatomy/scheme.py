"""Label schemes: which integer value means which structure, with colours, codes and a coarse-to-fine
hierarchy.

A :class:`LabelScheme` is a list of :class:`LabelClass` entries. A class has a unique ``name``, an
optional ``value`` (the integer written in label maps; ``None`` for a *group* such as ``vertebrae``
that only organises finer classes), an RGB ``colour``, optional ``codes`` (e.g.
``{"SNOMED": "78961009"}``) and an optional ``parent`` (the coarser class or group it refines).
The depth of a class (0 for a root) orders merging coarse → fine (DAP Atlas).

File format (YAML or JSON, the same keys)::

    name: total
    description: TotalSegmentator task "total" (v2)
    classes:
      - {name: spleen, value: 1, colour: [157, 108, 162]}
      - {name: ribs, parent: null}                      # a group: no value
      - {name: rib_left_1, value: 92, parent: ribs}

Value 0 is background and never a class; values go up to 2**32 - 1 (maps are written as the
smallest of uint8 / uint16 / uint32 that holds the largest value). Shipped schemes (``shipped_scheme(name)``): the
TotalSegmentator tasks ``total``, ``total_v1`` and ``total_mr`` (label values and names from
TotalSegmentator's ``class_map``, Apache-2.0; groups such as ``vertebrae`` / ``ribs`` /
``lung`` added here as parents). :func:`scheme_diff` tells which names moved to another value,
vanished or are new between two schemes (e.g. TotalSegmentator v1 → v2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from segqc.errors import InputError, parse_problem
from segqc.metrics.counts import DENSE_LIMIT, value_counts

__all__ = ["MAX_LABEL_VALUE", "SHIPPED_SCHEMES", "LabelClass", "LabelScheme", "label_dtype", "load_scheme",
           "lookup", "scheme_diff", "scheme_from_class_map", "shipped_scheme"]

#: Schemes that ship with segqc (``src/segqc/anatomy/schemes/<name>.yaml``).
SHIPPED_SCHEMES = ("total", "total_v1", "total_mr")
#: The largest label value a scheme may use: label maps are written as unsigned integers of at most 32 bits.
MAX_LABEL_VALUE = 2**32 - 1


@dataclass(frozen=True)
class LabelClass:
    """One structure of a scheme (module docstring). ``value`` None: a group without voxels."""

    name: str
    value: int | None = None
    colour: tuple[int, int, int] | None = None
    parent: str | None = None
    codes: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.value is not None:
            out["value"] = self.value
        if self.colour is not None:
            out["colour"] = list(self.colour)
        if self.parent is not None:
            out["parent"] = self.parent
        if self.codes:
            out["codes"] = dict(self.codes)
        return out


@dataclass(frozen=True)
class LabelScheme:
    """A named list of classes (module docstring). Construction validates: unique names, unique
    positive values, parents that exist, no cycles; a problem raises ``ValueError``."""

    name: str
    classes: tuple[LabelClass, ...]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        names: dict[str, LabelClass] = {}
        values: dict[int, str] = {}
        for cls in self.classes:
            if not cls.name or not isinstance(cls.name, str):
                raise ValueError(f"scheme {self.name!r}: a class needs a name")
            if cls.name in names:
                raise ValueError(f"scheme {self.name!r}: class {cls.name!r} appears twice")
            names[cls.name] = cls
            if cls.value is not None:
                if cls.value <= 0:
                    raise ValueError(f"scheme {self.name!r}: class {cls.name!r} has value {cls.value}; "
                                     "values are positive (0 is background)")
                if cls.value > MAX_LABEL_VALUE:
                    raise ValueError(f"scheme {self.name!r}: class {cls.name!r} has value {cls.value}; values are "
                                     f"at most {MAX_LABEL_VALUE} (label maps hold 32-bit unsigned integers)")
                if cls.value in values:
                    raise ValueError(f"scheme {self.name!r}: value {cls.value} is both {values[cls.value]!r} "
                                     f"and {cls.name!r}")
                values[cls.value] = cls.name
        for cls in self.classes:
            if cls.parent is not None and cls.parent not in names:
                raise ValueError(f"scheme {self.name!r}: class {cls.name!r} has an unknown parent {cls.parent!r}")
        for cls in self.classes:  # cycles
            seen = {cls.name}
            parent = cls.parent
            while parent is not None:
                if parent in seen:
                    raise ValueError(f"scheme {self.name!r}: the parents of {cls.name!r} form a cycle")
                seen.add(parent)
                parent = names[parent].parent

    # -- queries ---------------------------------------------------------------------------

    @cached_property
    def by_name(self) -> dict[str, LabelClass]:
        return {c.name: c for c in self.classes}

    @cached_property
    def by_value(self) -> dict[int, LabelClass]:
        return {c.value: c for c in self.classes if c.value is not None}

    @property
    def values(self) -> tuple[int, ...]:
        """The label values of the scheme, ascending."""
        return tuple(sorted(self.by_value))

    @property
    def max_value(self) -> int:
        return max(self.by_value, default=0)

    def value_of(self, name: str) -> int:
        """The label value of class ``name`` (``KeyError`` naming the scheme when unknown or a group)."""
        cls = self.by_name.get(name)
        if cls is None:
            raise KeyError(f"scheme {self.name!r} has no class {name!r}")
        if cls.value is None:
            raise KeyError(f"{name!r} is a group of scheme {self.name!r}, not a label value")
        return cls.value

    def name_of(self, value: int) -> str:
        cls = self.by_value.get(int(value))
        return cls.name if cls is not None else str(value)

    def depth(self, name: str) -> int:
        """0 for a class without parent, 1 for its children, ..."""
        by_name = self.by_name
        depth, parent = 0, by_name[name].parent
        while parent is not None:
            depth, parent = depth + 1, by_name[parent].parent
        return depth

    def ancestors(self, name: str) -> list[str]:
        """Parent, grandparent, ... of ``name``."""
        by_name = self.by_name
        out: list[str] = []
        parent = by_name[name].parent
        while parent is not None:
            out.append(parent)
            parent = by_name[parent].parent
        return out

    def descendants(self, name: str) -> list[str]:
        """Every class below ``name`` (children, their children, ...), in scheme order."""
        return [c.name for c in self.classes if name in self.ancestors(c.name)]

    def values_under(self, name: str) -> tuple[int, ...]:
        """The label values of ``name`` and all its descendants (a group's voxels)."""
        by_name = self.by_name
        names = [name, *self.descendants(name)]
        return tuple(sorted(v for v in (by_name[n].value for n in names) if v is not None))

    def check_values(self, array: np.ndarray, path: str | Path | None = None, *, hint: str = "") -> None:
        """Raise :class:`InputError` naming ``path`` (and the values) when ``array`` holds a value
        that is neither background nor a class of the scheme; ``hint`` is appended in brackets."""
        if not array.size:
            return
        present, _ = value_counts(array)
        unknown = present[~np.isin(present, np.asarray((0, *self.values), dtype=np.int64))]
        if unknown.size:
            raise InputError(f"label values {', '.join(str(int(v)) for v in unknown[:8])} are not classes of the "
                             f"scheme {self.name!r}" + (f" ({hint})" if hint else ""), path)

    def colour_of(self, name: str) -> tuple[int, int, int]:
        cls = self.by_name[name]
        return cls.colour if cls.colour is not None else _default_colour(cls.value or 0)

    # -- conversion ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["classes"] = [c.to_dict() for c in self.classes]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | Path | None = None) -> LabelScheme:
        """A scheme from the file format of the module docstring; problems raise
        :class:`InputError` naming ``source``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("classes"), list):
            raise InputError("a label scheme needs a 'classes' list", source)
        classes = []
        for i, item in enumerate(data["classes"]):
            if not isinstance(item, Mapping) or "name" not in item:
                raise InputError(f"class {i + 1} of the scheme has no name", source)
            unknown = set(item) - {"name", "value", "colour", "color", "parent", "codes"}
            if unknown:
                raise InputError(f"class {item['name']!r}: unknown keys {sorted(unknown)}", source)
            try:
                colour = item.get("colour", item.get("color"))
                classes.append(LabelClass(
                    name=str(item["name"]),
                    value=None if item.get("value") is None else _integer(item["value"]),
                    colour=None if colour is None else _rgb(colour),
                    parent=None if item.get("parent") is None else str(item["parent"]),
                    codes={str(k): str(v) for k, v in (item.get("codes") or {}).items()},
                ))
            except (TypeError, ValueError) as error:
                raise InputError(f"class {item['name']!r}: {error}", source) from None
        name = str(data.get("name") or (Path(source).stem.split(".")[0] if source is not None else "scheme"))
        try:
            return cls(name=name, classes=tuple(classes), description=str(data.get("description") or ""))
        except ValueError as error:
            raise InputError(str(error), source) from None

    def save(self, path: str | Path) -> Path:
        """Write the scheme as YAML (``.yaml``/``.yml``) or JSON (any other ending)."""
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            head = {k: v for k, v in self.to_dict().items() if k != "classes"}
            lines = [yaml.safe_dump(head, sort_keys=False, width=1000).rstrip(), "classes:"]
            lines += ["- " + yaml.safe_dump(c.to_dict(), sort_keys=False, default_flow_style=True, width=1000).strip()
                      for c in self.classes]
            text = "\n".join(lines) + "\n"
        else:
            text = json.dumps(self.to_dict(), indent=1) + "\n"
        path.write_text(text)
        return path

    def table(self) -> pd.DataFrame:
        """One row per class: name, value (nullable), parent, depth, colour as #rrggbb."""
        rows = [{"name": c.name, "value": c.value, "parent": c.parent or "", "depth": self.depth(c.name),
                 "colour": "#{:02x}{:02x}{:02x}".format(*self.colour_of(c.name)),
                 "codes": ";".join(f"{k}:{v}" for k, v in c.codes.items())} for c in self.classes]
        table = pd.DataFrame(rows, columns=["name", "value", "parent", "depth", "colour", "codes"])
        table["value"] = table["value"].astype("Int64")
        return table


def load_scheme(spec: str | Path) -> LabelScheme:
    """A shipped scheme by name (``total``, ``total_v1``, ``total_mr``) or a YAML/JSON file, or a
    ``dataset.json`` (its ``labels``: name -> value, background dropped). A problem raises
    :class:`InputError` naming the file."""
    text = str(spec)
    if text in SHIPPED_SCHEMES:
        return shipped_scheme(text)
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"no such label scheme (a file, or one of {', '.join(SHIPPED_SCHEMES)})", path)
    try:
        raw = path.read_text()
        data = yaml.safe_load(raw) if path.suffix.lower() in (".yaml", ".yml") else json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise InputError(f"cannot read the label scheme: {parse_problem(error)}", path) from None
    if isinstance(data, Mapping) and "classes" not in data and isinstance(data.get("labels"), Mapping):
        return _scheme_from_dataset_json(data, path)
    return LabelScheme.from_dict(data, source=path)


def shipped_scheme(name: str) -> LabelScheme:
    """One of :data:`SHIPPED_SCHEMES`."""
    if name not in SHIPPED_SCHEMES:
        raise KeyError(f"no shipped label scheme {name!r}; shipped: {', '.join(SHIPPED_SCHEMES)}")
    text = resources.files("segqc.anatomy").joinpath("schemes", f"{name}.yaml").read_text()
    return LabelScheme.from_dict(yaml.safe_load(text), source=f"{name}.yaml")


def scheme_from_class_map(name: str, class_map: Mapping[Any, str], *, description: str = "",
                          groups: bool = True) -> LabelScheme:
    """A scheme from a value -> name map (TotalSegmentator's ``class_map`` style). With ``groups``,
    families of names get a parent group: ``vertebrae_*`` -> ``vertebrae``, ``rib_left_*`` /
    ``rib_right_*`` -> ``ribs``, ``lung_*`` -> ``lung``, ``heart_*`` -> ``heart`` (a group only
    where no class has that name already; a class of that name becomes the parent instead)."""
    items = sorted((int(v), str(n)) for v, n in class_map.items())
    names = {n for _, n in items}
    parents: dict[str, str] = {}
    if groups:
        for _, n in items:
            for pattern, group in _GROUP_PATTERNS:
                if re.fullmatch(pattern, n) and n != group:
                    parents[n] = group
                    break
    group_names = sorted(set(parents.values()) - names)
    classes = [LabelClass(name=g) for g in group_names]
    classes += [LabelClass(name=n, value=v, colour=_default_colour(v), parent=parents.get(n)) for v, n in items]
    return LabelScheme(name=name, classes=tuple(classes), description=description)


_GROUP_PATTERNS = (
    (r"vertebrae_[CTLS][0-9]+", "vertebrae"),
    (r"rib_(left|right)_[0-9]+", "ribs"),
    (r"lung_(upper|middle|lower)_lobe_(left|right)", "lung"),
    (r"lung_(left|right)", "lung"),
    (r"heart_(myocardium|atrium_left|atrium_right|ventricle_left|ventricle_right)", "heart"),
)


def scheme_diff(old: LabelScheme, new: LabelScheme) -> pd.DataFrame:
    """How the classes of ``old`` appear in ``new``, by name: one row per name of either scheme
    with ``old_value``, ``new_value`` and ``status`` — ``same`` (same value), ``moved`` (another
    value), ``vanished`` (only in ``old``), ``new`` (only in ``new``) — and ``new_name_at_old_value``
    (what the old value means in ``new``: where a value was reused for another structure, a map
    read with the wrong scheme silently changes meaning). Groups (no value) are left out."""
    old_values = {c.name: c.value for c in old.classes if c.value is not None}
    new_values = {c.name: c.value for c in new.classes if c.value is not None}
    new_by_value = new.by_value
    rows = []
    for name in [*old_values, *[n for n in new_values if n not in old_values]]:
        a, b = old_values.get(name), new_values.get(name)
        status = "new" if a is None else "vanished" if b is None else "same" if a == b else "moved"
        at_old = new_by_value.get(a) if a is not None else None
        rows.append({"name": name, "old_value": a, "new_value": b, "status": status,
                     "new_name_at_old_value": at_old.name if at_old is not None else ""})
    table = pd.DataFrame(rows, columns=["name", "old_value", "new_value", "status", "new_name_at_old_value"])
    for column in ("old_value", "new_value"):
        table[column] = table[column].astype("Int64")
    return table


# -- helpers -----------------------------------------------------------------------------


def _scheme_from_dataset_json(data: Mapping[str, Any], path: Path) -> LabelScheme:
    classes = []
    for name, value in data["labels"].items():
        if isinstance(value, (list, tuple)):  # an nnU-Net region: not a class of the map
            continue
        v = _integer(value)
        if v != 0 and name != "ignore":
            classes.append(LabelClass(name=str(name), value=v, colour=_default_colour(v)))
    try:
        return LabelScheme(name=str(data.get("name") or path.parent.name), classes=tuple(classes))
    except ValueError as error:
        raise InputError(str(error), path) from None


def label_dtype(max_value: int) -> type[np.unsignedinteger]:
    """The smallest unsigned integer type (uint8 / uint16 / uint32) that holds ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"label value {max_value} is above {MAX_LABEL_VALUE}")


def lookup(values: np.ndarray, keys: np.ndarray, mapped: np.ndarray, dtype: Any) -> np.ndarray:
    """``mapped[i]`` (as ``dtype``) for every entry of ``values`` equal to ``keys[i]``; ``keys``
    ascending, non-negative, holding every value. A table indexed by the value up to a largest key
    of 2^20, a binary search above (no array sized by a huge class value)."""
    if int(keys[-1]) < DENSE_LIMIT:  # a table indexed by the value itself
        table = np.zeros(int(keys[-1]) + 1, dtype=dtype)
        table[keys] = mapped
        return table[values]
    return np.asarray(mapped)[np.searchsorted(keys, values)].astype(dtype)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"value {value!r} is not an integer")
    number = float(value)
    if number != int(number):
        raise ValueError(f"value {value!r} is not an integer")
    return int(number)


def _rgb(colour: Any) -> tuple[int, int, int]:
    if isinstance(colour, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
        return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
    if isinstance(colour, Sequence) and not isinstance(colour, str) and len(colour) == 3:
        rgb = tuple(int(c) for c in colour)
        if all(0 <= c <= 255 for c in rgb):
            return rgb[0], rgb[1], rgb[2]
    raise ValueError(f"colour {colour!r} is neither [r, g, b] (0-255) nor #rrggbb")


def _default_colour(value: int) -> tuple[int, int, int]:
    """A fixed, well-spread colour per label value (golden-ratio hue steps, fixed saturation)."""
    import colorsys

    hue = (value * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9 if value % 2 else 0.75)
    return round(r * 255), round(g * 255), round(b * 255)


def class_names(scheme: LabelScheme, values: Iterable[int]) -> list[str]:
    """The names of ``values`` in ``scheme`` (the value as text where it has no class)."""
    return [scheme.name_of(v) for v in values]
