"""Body regions bounded by landmark structures along the patient's superior-inferior axis.

A region is a z interval (LPS mm, +z superior) whose ends are read off landmark classes of the
same label map, e.g. the abdomen from the bottom of the sacrum to the top of T10, with margins in
mm. A landmark may be a class or a group of the scheme (``vertebrae``: all of them). When a
landmark is absent from the map (cut by the field of view), that end of the region is open; a
region whose landmarks are all absent is unknown and restricts nothing. DAP Atlas Algorithm 6 uses
a box around anchors; here the box is the z slab (the left-right and anterior-posterior limits are
the body itself).

Region spec (YAML / dict)::

    abdomen:
      inferior: {landmark: sacrum, at: min, margin_mm: 30}
      superior: {landmark: vertebrae_T10, at: max, margin_mm: 60}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segqc.anatomy.scheme import LabelScheme
from segqc.anatomy.space import axis_coordinate
from segqc.io.geometry import Geometry
from segqc.metrics.masks import LabelBoxes, find_values, label_boxes

__all__ = ["AT", "BodyRegion", "Bound", "check_region_spec", "parse_regions", "region_limits"]

AT = ("min", "max", "centre")


@dataclass(frozen=True)
class Bound:
    """One end of a region: the ``at`` (min / max / centre) z of ``landmark``, moved outwards by
    ``margin_mm`` (a negative margin moves it inwards)."""

    landmark: str
    at: str = "min"
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.at not in AT:
            raise ValueError(f"'at' must be one of {', '.join(AT)}, not {self.at!r}")


@dataclass(frozen=True)
class BodyRegion:
    """A named z slab between an ``inferior`` and a ``superior`` bound (either may be None: open)."""

    name: str
    inferior: Bound | None = None
    superior: Bound | None = None


def check_region_spec(spec: Mapping[str, Any]) -> None:
    """Check the form of a region spec (module docstring) without a scheme: bounds of known keys,
    a landmark name, ``at`` one of :data:`AT`, ``margin_mm`` a number. Raises ``ValueError``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"regions must map region names to bounds, got {spec!r}")
    for name, entry in spec.items():
        if not isinstance(entry, Mapping) or set(entry) - {"inferior", "superior"}:
            raise ValueError(f"region {name!r}: give 'inferior' and/or 'superior' bounds")
        for end in ("inferior", "superior"):
            raw = entry.get(end)
            if raw is None:
                continue
            if not isinstance(raw, Mapping) or "landmark" not in raw or set(raw) - {"landmark", "at", "margin_mm"}:
                raise ValueError(f"region {name!r}: {end} needs 'landmark' (and optional 'at', 'margin_mm')")
            if not isinstance(raw["landmark"], str):
                raise ValueError(f"region {name!r}: the {end} landmark must be a class name, got {raw['landmark']!r}")
            if raw.get("at", "min") not in AT:
                raise ValueError(f"region {name!r}: {end} 'at' must be one of {', '.join(AT)}, not {raw['at']!r}")
            margin = raw.get("margin_mm", 0.0)
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
                raise ValueError(f"region {name!r}: {end} margin_mm must be a number (mm), got {margin!r}")


def parse_regions(spec: Mapping[str, Any], scheme: LabelScheme) -> dict[str, BodyRegion]:
    """Regions from the spec of the module docstring; unknown landmarks or keys raise ``ValueError``."""
    check_region_spec(spec)
    regions = {}
    for name, entry in spec.items():
        bounds: dict[str, Bound | None] = {}
        for end in ("inferior", "superior"):
            raw = entry.get(end)
            if raw is None:
                bounds[end] = None
                continue
            if raw["landmark"] not in scheme.by_name:
                raise ValueError(f"region {name!r}: landmark {raw['landmark']!r} is not in the scheme {scheme.name!r}")
            bounds[end] = Bound(str(raw["landmark"]), str(raw.get("at", "min" if end == "inferior" else "max")),
                                float(raw.get("margin_mm", 0.0)))
        regions[str(name)] = BodyRegion(str(name), bounds["inferior"], bounds["superior"])
    return regions


def _landmark_z(bound: Bound, labels: np.ndarray, z: np.ndarray, scheme: LabelScheme,
                boxes: LabelBoxes) -> float | None:
    found = find_values(labels, scheme.values_under(bound.landmark), boxes)
    if found is None:
        return None
    box, mask = found
    heights = np.broadcast_to(z, labels.shape)[box][mask]
    if bound.at == "min":
        return float(heights.min())
    if bound.at == "max":
        return float(heights.max())
    return float(heights.mean())


def region_limits(region: BodyRegion, labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *,
                  boxes: LabelBoxes | None = None) -> tuple[float, float] | None:
    """(lowest, highest) z in mm of ``region`` in this map (``-inf`` / ``inf`` for an open end);
    None when the region has bounds but none of their landmarks is in the map. ``boxes``: label
    value -> a box holding every voxel of that value (e.g. :func:`~segqc.metrics.masks.label_boxes`;
    a larger box is fine), so that only those boxes are read; a value without a box is absent."""
    z = axis_coordinate(geometry, 2)
    boxes = label_boxes(labels) if boxes is None else boxes
    low, high = -np.inf, np.inf
    found = False
    if region.inferior is not None:
        value = _landmark_z(region.inferior, labels, z, scheme, boxes)
        if value is not None:
            low, found = value - region.inferior.margin_mm, True
    if region.superior is not None:
        value = _landmark_z(region.superior, labels, z, scheme, boxes)
        if value is not None:
            high, found = value + region.superior.margin_mm, True
    if not found and (region.inferior is not None or region.superior is not None):
        return None
    return low, high
