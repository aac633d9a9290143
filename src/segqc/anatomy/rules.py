"""Anatomical post-processing rules (DAP Atlas Algorithm 3), as data, orientation- and spacing-aware.

A rule set is a YAML file: a target ``scheme`` and a list of ``steps``, each ``{rule: NAME, ...
options}``, run in order on one label map; every change is logged (:data:`CHANGE_COLUMNS`). The
shipped preset ``dap_total`` (``src/segqc/anatomy/presets/dap_total.yaml``) is the thesis'
Algorithm 3 for the TotalSegmentator ``total`` scheme. Sides and heights come from the affine
(:mod:`segqc.anatomy.space`: LPS mm, +x patient left, +z superior), components from cc3d
(26-connected), distances in mm; the rules need 3D label maps. Every option is checked when the
rules are loaded (:func:`check_steps`): class names as lists, numbers in their range, series
templates with ``{n}``; a problem is one error naming the file, the step and the option.

Rules:

* ``left_right`` (Algorithm 8) — side-paired classes (names with a ``left`` / ``right`` token,
  e.g. ``kidney_left`` / ``kidney_right``, ``rib_left_3`` / ``rib_right_3``): every connected
  component takes the side of the midsagittal plane its centroid lies on. The plane is fitted to
  the centroids of the ``midline`` classes (each class separately: every vertebra, the sternum);
  with fewer than two of them, or a plane tilted more than ``max_tilt_degrees`` from the sagittal,
  the plane is x = the centroid x of all labels (the fallback, logged). Components closer than
  ``min_distance_mm`` to the plane are left alone.
* ``order_series`` (Algorithm 7 for ribs; also vertebrae) — the classes of a series (``left`` /
  ``right`` name templates with ``{n}`` = 1..``count`` per side, or an explicit top-to-bottom
  ``names`` list) are taken together; per side the ``count`` largest components (of each label
  separately, so touching neighbours stay apart) are kept (smaller ones are removed) and numbered
  top-down by the height of their median points. Where the order by the
  lowest points differs from the order by the median points, the series is left unchanged (DAP:
  an inconsistent order is not trusted). With fewer components than ``count`` (field of view), the
  numbering keeps the offset most components already had.
* ``largest_component`` (Algorithm 5) — each of ``classes`` keeps its largest component; others
  (and a largest one under ``min_voxels``) are removed. ``keep_fraction`` (default 1: the DAP
  rule) keeps every component at least that fraction of the largest (logged): the preset uses
  0.5, so that a structure a model split into two similar pieces is not halved silently.
* ``restrict_to_region`` (Algorithm 6) — ``regions`` (:mod:`segqc.anatomy.regions`) and which
  ``classes`` belong to each: a component whose centroid lies outside its class's region is
  removed (a component, not a voxel clip: an organ reaching over a margin keeps its tip).
* ``sex`` (Algorithm 4) — ``male_only`` classes are removed in cases whose metadata sex is F,
  ``female_only`` ones in M cases; an unknown sex changes nothing (logged).

Removed voxels become background (0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import pandas as pd
import yaml

from segqc.anatomy.regions import check_region_spec, parse_regions, region_limits
from segqc.anatomy.scheme import LabelScheme, load_scheme
from segqc.anatomy.space import centroid_mm, fit_midsagittal_plane, index_centroid, index_to_mm
from segqc.errors import InputError, parse_problem
from segqc.io.geometry import Geometry
from segqc.metrics.counts import chunked_bincount
from segqc.metrics.masks import find_values, label_boxes, union_box

__all__ = ["CHANGE_COLUMNS", "PRESETS", "RULES", "RuleSet", "apply_rules", "check_steps", "load_rules", "side_pairs"]

PRESETS = ("dap_total",)
RULES = ("left_right", "order_series", "largest_component", "restrict_to_region", "sex")
CHANGE_COLUMNS = ["step", "rule", "class_from", "class_to", "voxels", "detail"]


@dataclass(frozen=True)
class RuleSet:
    """A named list of steps (dicts ``{rule, ...options}``) for maps of ``scheme``."""

    name: str
    scheme: LabelScheme
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scheme": self.scheme.name, "steps": [dict(s) for s in self.steps]}


def load_rules(spec: str | Path, *, scheme: LabelScheme | None = None) -> RuleSet:
    """A shipped preset (``dap_total``) or a rules YAML file; its ``scheme`` names a shipped scheme or
    a file beside it (``scheme`` overrides). Unknown rules, options or class names raise
    :class:`InputError` naming the file."""
    text = str(spec)
    if text in PRESETS:
        raw, source = resources.files("segqc.anatomy").joinpath("presets", f"{text}.yaml").read_text(), Path(text)
    else:
        source = Path(spec)
        if not source.is_file():
            raise InputError(f"no such rules file (or preset: {', '.join(PRESETS)})", source)
        raw = source.read_text()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise InputError(f"cannot read the rules: {parse_problem(error)}", source) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("steps"), list):
        raise InputError("a rules file needs a 'steps' list", source)
    if scheme is None:
        scheme_spec = str(data.get("scheme", "total"))
        beside = source.parent / scheme_spec
        scheme = load_scheme(beside if beside.is_file() else scheme_spec)
    rules = RuleSet(name=str(data.get("name") or source.stem), scheme=scheme, steps=tuple(data["steps"]))
    try:
        _validate(rules)
    except ValueError as error:
        raise InputError(str(error), source) from None
    return rules


_OPTIONS = {
    "left_right": {"midline", "max_tilt_degrees", "min_distance_mm"},
    "order_series": {"series", "left", "right", "count", "names"},
    "largest_component": {"classes", "min_voxels", "keep_fraction"},
    "restrict_to_region": {"regions", "classes"},
    "sex": {"male_only", "female_only"},
}
#: Options that list class names (``restrict_to_region``'s ``classes`` is a mapping: region -> list).
_NAME_LISTS = {"midline", "names", "male_only", "female_only", "classes"}
#: Numeric options: (smallest, largest, whether it must be a whole number).
_NUMBERS = {"max_tilt_degrees": (0.0, 90.0, False), "min_distance_mm": (0.0, math.inf, False),
            "count": (1.0, math.inf, True), "min_voxels": (0.0, math.inf, True), "keep_fraction": (0.0, 1.0, False)}


def check_steps(steps: Sequence[Any]) -> None:
    """Check the form of rule steps without a scheme: known rules and options, and every option of
    its type (class-name lists, numbers in range, name templates with ``{n}`` only, regions).
    Raises ``ValueError`` naming the step and the option."""
    for i, step in enumerate(steps, 1):
        rule = step.get("rule") if isinstance(step, Mapping) else None
        if not isinstance(rule, str) or rule not in RULES:
            raise ValueError(f"step {i}: unknown rule {rule!r}; rules: {', '.join(RULES)}")
        unknown = set(step) - {"rule"} - _OPTIONS[rule]
        if unknown:
            raise ValueError(f"step {i} ({rule}): unknown options {sorted(unknown, key=str)}")
        where = f"step {i} ({rule})"
        for option, value in step.items():
            if option == "rule":
                continue
            if rule == "restrict_to_region" and option == "classes":
                if not isinstance(value, Mapping) or not all(_is_names(v) for v in value.values()):
                    raise ValueError(f"{where}: classes must map each region to a list of class names, e.g. "
                                     f"{{abdomen: [liver, spleen]}}; got {value!r}")
            elif rule == "restrict_to_region" and option == "regions":
                if not isinstance(value, Mapping):
                    raise ValueError(f"{where}: regions must map region names to bounds, got {value!r}")
                try:
                    check_region_spec(value)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from None
            elif option in _NAME_LISTS:
                if not _is_names(value):
                    raise ValueError(f"{where}: {option} must be a list of class names, got {value!r}")
            elif option in _NUMBERS:
                low, high, whole = _NUMBERS[option]
                ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                      and low <= value <= high)
                if not ok or (whole and value != int(value)):
                    kind = "a whole number" if whole else "a number"
                    span = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
                    raise ValueError(f"{where}: {option} must be {kind} {span}, got {value!r}")
            elif option in ("left", "right"):
                if not isinstance(value, str) or not _is_template(value):
                    raise ValueError(f"{where}: {option} must be a class name template with {{n}} for the number "
                                     f"(e.g. rib_{option}_{{n}}), got {value!r}")
            elif option == "series" and not isinstance(value, str):
                raise ValueError(f"{where}: series must be a name, got {value!r}")
        if rule == "restrict_to_region":
            regions = step.get("regions") or {}
            for region in step.get("classes") or {}:
                if region not in regions:
                    raise ValueError(f"{where}: classes of an undefined region {region!r}")


def _is_names(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _is_template(text: str) -> bool:
    try:
        return text.format(n=1) != text.format(n=2)
    except (KeyError, IndexError, ValueError, AttributeError):
        return False


def _validate(rules: RuleSet) -> None:
    check_steps(rules.steps)
    scheme = rules.scheme
    names = scheme.by_name
    for i, step in enumerate(rules.steps, 1):
        rule = step["rule"]
        grouped: list[str] = []  # classes or groups: every value under them counts
        listed: list[str] = []  # classes with a label value
        if rule == "left_right":
            grouped = list(step.get("midline", []))
        elif rule == "largest_component":
            listed = list(step.get("classes", []))
        elif rule == "sex":
            listed = list(step.get("male_only", [])) + list(step.get("female_only", []))
        elif rule == "restrict_to_region":
            parse_regions(step.get("regions", {}), scheme)
            for members in (step.get("classes") or {}).values():
                listed += list(members)
        elif rule == "order_series":
            listed = list(_series_names(step, scheme, "left") + _series_names(step, scheme, "right")
                          if "names" not in step else step["names"])
        missing = [n for n in grouped + listed if n not in names]
        if missing:
            raise ValueError(f"step {i} ({rule}): {', '.join(missing[:6])} not in the scheme {scheme.name!r}")
        groups = [n for n in listed if names[n].value is None]
        if groups:
            raise ValueError(f"step {i} ({rule}): {', '.join(groups[:6])}: a group of the scheme {scheme.name!r}, "
                             "not a class with a label value; list its classes")


def _series_names(step: Mapping[str, Any], scheme: LabelScheme, side: str) -> list[str]:
    template = step.get(side)
    if template is None:
        return []
    return [str(template).format(n=n) for n in range(1, int(step.get("count", 12)) + 1)]


def side_pairs(scheme: LabelScheme) -> list[tuple[int, int]]:
    """(left value, right value) of every class with a ``left`` token whose ``right`` partner exists."""
    pairs = []
    by_name = scheme.by_name
    for cls in scheme.classes:
        if cls.value is None or not re.search(r"(^|_)left(_|$)", cls.name):
            continue
        partner = re.sub(r"(^|_)left(_|$)", r"\1right\2", cls.name)
        if partner in by_name and by_name[partner].value is not None:
            pairs.append((cls.value, int(by_name[partner].value)))  # type: ignore[arg-type]
    return pairs


# -- the rules ------------------------------------------------------------------------------


@dataclass
class _Case:
    labels: np.ndarray
    geometry: Geometry
    scheme: LabelScheme
    metadata: Mapping[str, Any]
    changes: list[dict[str, Any]]
    step: int = 0
    rule: str = ""
    boxes: dict[int, tuple[slice, ...]] | None = None  # value -> a box holding all its voxels

    def find(self, values: Sequence[int]) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """(tight bounding box, mask within it) of the voxels holding any of ``values``; None when
        there are none. Only the boxes of :attr:`boxes` are read (made in one pass of the map on
        first use): a rule that removes voxels may leave a box larger than needed, never smaller;
        one that gives voxels to a class widens its box (:meth:`gained`)."""
        return find_values(self.labels, values, self.all_boxes())

    def all_boxes(self) -> dict[int, tuple[slice, ...]]:
        """Label value -> a box holding all its voxels (see :meth:`find`)."""
        if self.boxes is None:
            self.boxes = label_boxes(self.labels)
        return self.boxes

    def gained(self, value: int, box: tuple[slice, ...]) -> None:
        """Voxels within ``box`` were set to ``value``: its box grows to hold them."""
        if self.boxes is not None:  # before the first find(), the boxes are made from the map as it is then
            self.boxes[int(value)] = union_box([self.boxes.get(int(value)), box], self.labels.ndim) or box

    def log(self, class_from: int, class_to: int, voxels: int, detail: str = "") -> None:
        if voxels:
            self.changes.append({"step": self.step, "rule": self.rule, "class_from": self.scheme.name_of(class_from),
                                 "class_to": self.scheme.name_of(class_to) if class_to else "", "voxels": int(voxels),
                                 "detail": detail})


def _components(mask_or_labels: np.ndarray) -> tuple[np.ndarray, int]:
    connectivity = 26 if mask_or_labels.ndim == 3 else 8
    cc, n = cc3d.connected_components(np.ascontiguousarray(mask_or_labels), connectivity=connectivity,  # type: ignore[call-overload]
                                      return_N=True)
    return cc, int(n)


def _left_right(case: _Case, *, midline: Sequence[str] = ("vertebrae", "sternum"), max_tilt_degrees: float = 30.0,
                min_distance_mm: float = 5.0) -> None:
    scheme, labels = case.scheme, case.labels
    points = []
    for name in midline:
        if name not in scheme.by_name:  # a scheme without a sternum (or any midline group) still has the others
            continue
        for value in scheme.values_under(name):
            found = case.find([value])
            if found is not None:
                box, mask = found
                centre = index_centroid(mask)
                assert centre is not None  # find() returns no empty mask
                points.append(index_to_mm(case.geometry, centre + [b.start for b in box]))
    everything = centroid_mm(labels > 0, case.geometry)
    fallback = float(everything[0]) if everything is not None else 0.0
    plane = fit_midsagittal_plane(points, fallback_x=fallback)
    detail = f"plane from {plane.points} midline centroids"
    if plane.source == "landmarks" and plane.tilt_degrees > max_tilt_degrees:
        detail = f"plane tilted {plane.tilt_degrees:.0f} deg > {max_tilt_degrees:g}: body-centre fallback"
        plane = fit_midsagittal_plane([], fallback_x=fallback)
    elif plane.source != "landmarks":
        detail = "fewer than two midline landmarks: body-centre fallback"
    for left, right in side_pairs(scheme):
        found = case.find([left, right])
        if found is None:
            continue
        sub, pair = found
        cc, n = _components(np.where(pair, labels[sub], 0))
        offset = np.array([s.start for s in sub], dtype=float)
        for k in range(1, n + 1):
            points_k = np.argwhere(cc == k)
            centre = index_to_mm(case.geometry, points_k.mean(axis=0) + offset)
            side = plane.side(centre)
            if abs(side) < min_distance_mm:
                continue
            current = int(labels[sub][tuple(points_k[0])])
            wanted = left if side > 0 else right
            if current != wanted:
                view = labels[sub]
                view[cc == k] = wanted
                case.gained(wanted, sub)
                case.log(current, wanted, len(points_k), f"{detail}; centroid {side:+.0f} mm from the plane")


def _order_series(case: _Case, *, series: str = "", left: str | None = None, right: str | None = None,
                  count: int = 12, names: Sequence[str] | None = None) -> None:
    scheme = case.scheme
    groups: list[list[str]] = []
    if names is not None:
        groups.append(list(names))
    else:
        step = {"left": left, "right": right, "count": count}
        groups += [g for g in (_series_names(step, scheme, "left"), _series_names(step, scheme, "right")) if g]
    z_axis = _z_of_index(case.geometry)
    for group in groups:
        values = np.array([scheme.value_of(n) for n in group])
        located = case.find(values.tolist())
        if located is None:
            continue
        sub, mask = located
        view = case.labels[sub]
        cc, n = _components(np.where(mask, view, 0))  # per label: touching neighbours stay apart
        sizes = chunked_bincount(cc, minlength=n + 1)[1:]
        keep = np.argsort(-sizes, kind="stable")[: len(group)] + 1
        for k in sorted(set(range(1, n + 1)) - set(keep.tolist())):  # beyond the largest len(group): removed
            part = cc == k
            for value in np.unique(view[part]):
                case.log(int(value), 0, int((view[part] == value).sum()), f"{series}: not among the {len(group)} "
                                                                           "largest components")
            view[part] = 0
        medians, lows, current = [], [], []
        offset = np.array([s.start for s in sub], dtype=float)
        for k in keep:
            points = np.argwhere(cc == k) + offset
            heights = points @ z_axis[0] + z_axis[1]
            medians.append(float(np.median(heights)))
            lows.append(float(heights.min()))
            found, counts = np.unique(view[cc == k], return_counts=True)
            current.append(int(np.flatnonzero(values == found[np.argmax(counts)])[0]))
        by_median = np.argsort(-np.array(medians), kind="stable")
        by_low = np.argsort(-np.array(lows), kind="stable")
        if not np.array_equal(by_median, by_low):
            case.changes.append({"step": case.step, "rule": case.rule, "class_from": series, "class_to": series,
                                 "voxels": 0, "detail": "order by median points differs from order by lowest "
                                                        "points: left unchanged"})
            continue
        rank = np.empty(len(keep), dtype=int)
        rank[by_median] = np.arange(len(keep))  # 0 = highest
        # all components present: numbered by rank; fewer (field of view): keep the most common offset
        shift = int(np.bincount(np.array(current) - rank + len(group)).argmax()) - len(group)
        shift = int(np.clip(shift, 0, len(group) - len(keep)))
        for i, k in enumerate(keep):
            index = int(np.clip(rank[i] + shift, 0, len(group) - 1))
            wanted = int(values[index])
            part = cc == k
            for value in np.unique(view[part]):
                if int(value) != wanted:
                    case.log(int(value), wanted, int((view[part] == value).sum()), f"{series}: number {index + 1} "
                                                                                   "from the top")
            view[part] = wanted
            case.gained(wanted, sub)


def _z_of_index(geometry: Geometry) -> tuple[np.ndarray, float]:
    """(row of the index->mm matrix for z, z origin): z = index @ row + origin."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(geometry.ndim, geometry.ndim)
    matrix = direction * np.asarray(geometry.spacing, dtype=float)
    return matrix[2], float(geometry.origin[2])


def _class_components(case: _Case, value: int) -> tuple[tuple[slice, ...], np.ndarray, int] | None:
    """(bounding box, components within it, count) of the voxels of ``value``; None when absent."""
    found = case.find([value])
    if found is None:
        return None
    sub, mask = found
    cc, n = _components(mask)
    return sub, cc, n


def _largest_component(case: _Case, *, classes: Sequence[str] = (), min_voxels: int = 0,
                       keep_fraction: float = 1.0) -> None:
    for name in classes:
        value = case.scheme.value_of(name)
        found = _class_components(case, value)
        if found is None:
            continue
        sub, cc, n = found
        sizes = chunked_bincount(cc, minlength=n + 1)[1:]
        largest = int(sizes.max())
        if largest < min_voxels:
            drop = np.arange(1, n + 1)
        else:
            drop = np.flatnonzero(sizes < keep_fraction * largest) + 1
            kept = n - len(drop)
            if kept > 1:
                case.changes.append({"step": case.step, "rule": case.rule, "class_from": name, "class_to": name,
                                     "voxels": 0, "detail": f"{kept} components of at least {keep_fraction:g} x the "
                                                            f"largest ({largest} voxels) kept"})
        if len(drop):
            remove = np.isin(cc, drop)
            case.labels[sub][remove] = 0
            case.log(value, 0, int(remove.sum()), f"{len(drop)} smaller component(s) of {n}")


def _restrict_to_region(case: _Case, *, regions: Mapping[str, Any] | None = None,
                        classes: Mapping[str, Sequence[str]] | None = None) -> None:
    parsed = parse_regions(regions or {}, case.scheme)
    z_row, z0 = _z_of_index(case.geometry)
    for region_name, members in (classes or {}).items():
        limits = region_limits(parsed[region_name], case.labels, case.geometry, case.scheme, boxes=case.all_boxes())
        if limits is None:
            continue
        low, high = limits
        for name in members:
            value = case.scheme.value_of(name)
            found = _class_components(case, value)
            if found is None:
                continue
            sub, cc, n = found
            offset = np.array([s.start for s in sub], dtype=float)
            view = case.labels[sub]
            for k in range(1, n + 1):
                part = cc == k
                centre_z = float((np.argwhere(part).mean(axis=0) + offset) @ z_row + z0)
                if not low <= centre_z <= high:
                    view[part] = 0
                    case.log(value, 0, int(part.sum()), f"component centre z {centre_z:.0f} mm outside {region_name} "
                                                        f"[{low:.0f}, {high:.0f}] mm")


def _sex(case: _Case, *, male_only: Sequence[str] = (), female_only: Sequence[str] = ()) -> None:
    sex = str(case.metadata.get("sex", "")).strip().upper()[:1]
    if sex not in ("M", "F"):
        if any(case.find([case.scheme.value_of(n)]) is not None for n in [*male_only, *female_only]):
            case.changes.append({"step": case.step, "rule": case.rule, "class_from": "", "class_to": "", "voxels": 0,
                                 "detail": "sex unknown: reproductive structures left unchecked"})
        return
    for name in (female_only if sex == "M" else male_only):
        value = case.scheme.value_of(name)
        found = case.find([value])
        if found is not None:
            box, mask = found
            case.labels[box][mask] = 0
            case.log(value, 0, int(mask.sum()), f"{name} in a case of sex {sex}")


_FUNCTIONS = {"left_right": _left_right, "order_series": _order_series, "largest_component": _largest_component,
              "restrict_to_region": _restrict_to_region, "sex": _sex}


def apply_rules(labels: np.ndarray, geometry: Geometry, rules: RuleSet, *,
                metadata: Mapping[str, Any] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Run every step of ``rules`` on a copy of ``labels`` (values of ``rules.scheme``). Returns the
    fixed map and the change log (:data:`CHANGE_COLUMNS`; voxels per change). ``metadata``: the
    case's row (``sex``). The input is not modified; an empty map comes back unchanged."""
    if tuple(labels.shape) != tuple(geometry.shape):
        raise ValueError(f"labels of shape {labels.shape} on a grid of shape {geometry.shape}")
    if labels.ndim != 3:
        raise ValueError(f"rules need 3D label maps, not {labels.ndim}D")
    case = _Case(labels=np.array(labels, copy=True), geometry=geometry, scheme=rules.scheme,
                 metadata=dict(metadata or {}), changes=[])
    for i, step in enumerate(rules.steps, 1):
        case.step, case.rule = i, str(step["rule"])
        options = {k: v for k, v in step.items() if k != "rule"}
        _FUNCTIONS[case.rule](case, **options)  # type: ignore[operator]
    return case.labels, pd.DataFrame(case.changes, columns=CHANGE_COLUMNS)
