"""The anatomical plausibility flags of ``segqc labels check``, one function per flag: a tidy flag table,
one row per (case, class, flag), for label maps in a scheme with anatomy (TotalSegmentator ``total``).

Flags (each one a function below; ``value`` > ``threshold`` flags unless said otherwise; distances in
mm, volumes in ml, sides and heights from the affine, patient LPS; a function that reads the
classes' bounding boxes takes them as ``boxes``, :func:`~segqc.metrics.masks.label_boxes` of the
map, which :func:`~segqc.anatomy.check.check_case` makes once for all of them):

* ``outside_body`` (error) — label voxels more than ``margin_mm`` (3 mm) outside the body: the largest
  connected component of image > ``body_hu`` (-500 HU, CT), holes filled slice by slice along the
  superior-inferior axis and in 3D. ``value``: ml outside; threshold ``outside_min_ml`` (0.5 ml).
* ``in_air`` (error) — a class that should be solid (not in ``air_allowed``: lungs, airways,
  oesophagus, stomach, bowel) whose voxels have image < ``air_hu`` (-500 HU). Only the class's interior
  (eroded by one voxel) counts, so partial volume at its surface does not. ``value``: fraction of the
  interior in air; threshold ``air_max_fraction`` (0.05).
* ``fov_border`` (warning) — the class touches the border of the field of view (it is cut); the detail
  names the faces (superior, inferior, left, right, anterior, posterior). ``value``: voxels on the
  border; threshold ``fov_max_voxels`` (0).
* ``region`` (error) — a class outside its body region (z slabs between landmarks, from the rule
  preset's ``restrict_to_region`` step): its centroid outside, or more than ``region_max_outside``
  (25 %) of its voxels. ``value``: fraction outside. A region whose landmarks are absent is unknown and
  checks nothing.
* ``left_right`` (error) — a side-paired class (``*_left`` with a ``*_right`` in the scheme) whose
  centroid lies more than ``side_min_distance_mm`` (5 mm) on the wrong side of the midsagittal plane
  fitted to the centroids of the midline landmarks (vertebrae, sternum; a plane tilted more than 30°
  or fewer than two landmarks: the plane x = body centre). ``value``: mm on the wrong side.
* ``merged_vertebrae`` (error) — a vertebra whose largest component is taller (z extent) than
  ``vertebra_height_factor`` (1.6) x the median height of the vertebrae within ``vertebra_window`` (3)
  levels of it, plus one voxel (discretisation); vertebrae cut by the field of view are no reference.
  Heights are divided by ``vertebra_relative_height`` (C2 with the dens counts as 2 ordinary heights);
  the detail names missing neighbours it probably swallowed. ``value``: the ratio of heights.
* ``components`` (warning) — a class that occurs once (the preset's ``largest_component`` list) with
  more than ``max_components`` (1) components of at least ``component_min_ml`` (0.1 ml), 26-connected.
  ``value``: the number of components; the detail lists their sizes.
* ``overlap`` (warning) — per-class binary masks (``CASE/<class>.nii.gz``): voxels claimed by two
  masks. ``class``: ``a+b``; ``value``: voxels; threshold ``overlap_max_voxels`` (0).
* ``geometry`` (error) — label map and image on different grids (``class`` ``all``); the image-based
  flags are then skipped. ``value``: the number of differing properties.
* ``volume_z`` (warning) — volume z-score against a reference (class, mean_ml, sd_ml; or per-case
  volumes to derive it from): flags when ``|value|`` > ``volume_max_abs_z`` (3). Absent classes are
  not scored (the field of view may not hold them).

Empty inputs: a class absent from the map raises no flag (absence is not checked); a map without
foreground gives an empty table. The functions are pure (arrays, a :class:`Geometry` and a
:class:`LabelScheme` in, a table out); :mod:`segqc.anatomy.check` runs them on a case
(:func:`~segqc.anatomy.check.check_case`) and on a folder through the case engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from segqc.anatomy.regions import parse_regions, region_limits
from segqc.anatomy.scheme import LabelScheme
from segqc.anatomy.space import axis_coordinate, centroid_mm, fit_midsagittal_plane, index_to_mm
from segqc.anatomy.tables import AnatomyTables, load_anatomy_tables
from segqc.io.geometry import Geometry, geometry_differences
from segqc.metrics.counts import chunked_bincount
from segqc.metrics.masks import LabelBoxes, label_boxes, nonempty_box

__all__ = [
    "AIR_ALLOWED",
    "FILL_HOLES",
    "FLAGS",
    "FLAG_COLUMNS",
    "SEVERITY",
    "body_mask",
    "class_volumes",
    "flag_components",
    "flag_fov_border",
    "flag_geometry",
    "flag_in_air",
    "flag_left_right",
    "flag_merged_vertebrae",
    "flag_outside_body",
    "flag_overlap",
    "flag_region",
    "flag_table",
    "flag_volume_z",
    "side_pairs",
]

#: Every flag, in the order the checks run and the tables list them.
FLAGS = ("geometry", "outside_body", "in_air", "fov_border", "region", "left_right", "merged_vertebrae",
         "components", "overlap", "volume_z")
#: The severity of each flag.
SEVERITY = {"geometry": "error", "outside_body": "error", "in_air": "error", "fov_border": "warning",
            "region": "error", "left_right": "error", "merged_vertebrae": "error", "components": "warning",
            "overlap": "warning", "volume_z": "warning"}
#: The columns of the flag table.
FLAG_COLUMNS = ["case", "class", "flag", "severity", "value", "threshold", "detail"]
#: Classes (or groups) that may hold air: lungs, airways, gas in the digestive tract. Names the scheme
#: does not have are ignored.
AIR_ALLOWED = ("lung", "trachea", "esophagus", "stomach", "duodenum", "small_bowel", "colon", "airways",
               "lung_trachea_bronchia")
_FACES = {(0, 1): "left", (0, -1): "right", (1, 1): "posterior", (1, -1): "anterior", (2, 1): "superior",
          (2, -1): "inferior"}
FILL_HOLES = ("axial", "3d", "both", "none")
"""The ways :func:`body_mask` fills the body's holes."""


# -- helpers -----------------------------------------------------------------------------


def flag_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The flag table (:data:`FLAG_COLUMNS`, typed) of ``rows``; empty without rows."""
    table = pd.DataFrame(list(rows), columns=FLAG_COLUMNS)
    return table.astype({"case": str, "class": str, "flag": str, "severity": str, "value": float,
                         "threshold": float, "detail": str})


def _row(case: str, name: str, flag: str, value: float, threshold: float, detail: str) -> dict[str, Any]:
    return {"case": case, "class": name, "flag": flag, "severity": SEVERITY[flag], "value": float(value),
            "threshold": float(threshold), "detail": detail}


def _matrix(geometry: Geometry) -> np.ndarray:
    return geometry.direction_matrix() * np.asarray(geometry.spacing, dtype=float)


def _crop_geometry(geometry: Geometry, box: tuple[slice, ...]) -> Geometry:
    start = np.array([s.start or 0 for s in box], dtype=float)
    shape = tuple((s.stop if s.stop is not None else n) - (s.start or 0) for s, n in zip(box, geometry.shape,
                                                                                         strict=True))
    return Geometry(shape=shape, spacing=geometry.spacing, origin=tuple(index_to_mm(geometry, start).tolist()),
                    direction=geometry.direction)


def _centroid(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """LPS mm of the centre of mass of a non-empty mask (no coordinate list is built)."""
    centre = centroid_mm(mask, geometry)
    assert centre is not None, "the centroid of an empty mask"
    return centre


def _z_extent_of_voxel(geometry: Geometry) -> float:
    """The z extent (mm) of one voxel: the sum of |z step| over the array axes."""
    return float(np.abs(_matrix(geometry)[2]).sum())


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, not {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def _values_of(names: Iterable[str], scheme: LabelScheme) -> set[int]:
    """The label values of classes or groups ``names`` (names the scheme lacks are ignored)."""
    values: set[int] = set()
    for name in names:
        if name in scheme.by_name:
            values.update(scheme.values_under(name))
    return values


def _ml(voxels: float, geometry: Geometry) -> float:
    return float(voxels) * geometry.voxel_volume_ml()


# -- body and image-based flags ---------------------------------------------------------------


def _fill_holes(mask: np.ndarray, *, across: int | None = None) -> np.ndarray:
    """``mask`` with its holes filled: the background regions (face-connected) that do not reach the
    border of the array. ``across``: an axis, to fill the holes of every slice across it separately
    (a region must then reach the slice's border, not only the array's first or last slice).
    Equals scipy's ``binary_fill_holes`` (in 3D, or slice by slice) from one labelling of the
    background instead of repeated dilations (about 4 times faster on a whole-body CT). Empty
    mask: empty."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    if across is not None:  # no neighbours across the axis
        for end in (0, 2):
            structure[(slice(None),) * across + (end,)] = False
    regions, n = ndimage.label(~mask, structure=structure)
    reaches_border = np.zeros(n + 1, dtype=bool)
    reaches_border[0] = True  # the mask itself
    for axis in range(mask.ndim):
        if axis != across:
            for end in (0, -1):
                reaches_border[np.take(regions, end, axis=axis)] = True
    return mask | ~reaches_border[regions]


def body_mask(image: np.ndarray, geometry: Geometry, *, threshold_hu: float = -500.0,
              fill_holes: str = "both") -> np.ndarray:
    """The body of a CT: the largest 6-connected component of ``image > threshold_hu`` (HU), its holes
    (lungs, airways, bowel gas) filled slice by slice across the superior-inferior axis (``axial``), in
    3D (``3d``; cavities open to the border of the field of view are not holes), ``both`` or ``none``.
    A hole in 3D is a hole of each of its axial slices too, so ``both`` fills what ``axial`` fills.
    An image with no voxel above the threshold gives an empty mask."""
    if fill_holes not in FILL_HOLES:
        raise ValueError(f"fill_holes must be one of {', '.join(FILL_HOLES)}, not {fill_holes!r}")
    foreground = image > threshold_hu
    components, n = ndimage.label(foreground)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = chunked_bincount(components, minlength=n + 1)
    sizes[0] = 0
    body = components == int(np.argmax(sizes))
    del components
    if fill_holes in ("axial", "both"):
        axis = int(np.argmax(np.abs(geometry.direction_matrix()[2])))  # the array axis closest to z
        return _fill_holes(body, across=axis)
    if fill_holes == "3d":
        return _fill_holes(body)
    return body


def flag_outside_body(labels: np.ndarray, body: np.ndarray, geometry: Geometry, scheme: LabelScheme, *,
                      margin_mm: float = 3.0, min_ml: float = 0.5, case: str = "") -> pd.DataFrame:
    """``outside_body``: per class, the voxels farther than ``margin_mm`` from ``body``
    (:func:`body_mask`), in ml; flagged above ``min_ml``. An empty body: every label voxel is outside."""
    outside = (labels > 0) & ~body
    if not outside.any():
        return flag_table([])
    if margin_mm > 0 and body.any():
        box = tuple(slice(max(s.start - int(math.ceil(margin_mm / sp)) - 1, 0),
                          min(s.stop + int(math.ceil(margin_mm / sp)) + 1, n))
                    for s, sp, n in zip(nonempty_box(outside), geometry.spacing, geometry.shape, strict=True))
        crop_body = body[box]
        far = outside[box].copy()
        if crop_body.any():
            distance = ndimage.distance_transform_edt(~crop_body, sampling=geometry.spacing)
            far &= distance > margin_mm
        outside = np.zeros_like(outside)
        outside[box] = far
    counts = np.bincount(labels[outside].ravel(), minlength=1)
    rows = []
    for value in np.flatnonzero(counts):
        if value == 0:
            continue
        ml = _ml(counts[value], geometry)
        if ml > min_ml:
            rows.append(_row(case, scheme.name_of(int(value)), "outside_body", ml, min_ml,
                             f"{int(counts[value])} voxels ({ml:.2f} ml) more than {margin_mm:g} mm outside the body"))
    return flag_table(rows)


def flag_in_air(labels: np.ndarray, image: np.ndarray, scheme: LabelScheme, *, air_hu: float = -500.0,
                max_fraction: float = 0.05, allowed: Sequence[str] = AIR_ALLOWED, erode: bool = True,
                case: str = "", boxes: LabelBoxes | None = None) -> pd.DataFrame:
    """``in_air``: per class not under ``allowed`` (names or groups of the scheme), the fraction of its
    voxels with ``image < air_hu`` (HU); with ``erode`` only its interior counts (the mask eroded by one
    voxel; the whole mask where nothing is left). Flagged above ``max_fraction``."""
    skip = _values_of(allowed, scheme)
    rows = []
    for value, box in (label_boxes(labels) if boxes is None else boxes).items():
        if value in skip:
            continue
        mask = labels[box] == value
        interior = ndimage.binary_erosion(mask) if erode else mask
        if not interior.any():
            interior = mask
        n = int(interior.sum())
        in_air = int((image[box][interior] < air_hu).sum())
        fraction = in_air / n
        if fraction > max_fraction:
            rows.append(_row(case, scheme.name_of(value), "in_air", fraction, max_fraction,
                             f"{in_air} of {n} {'interior ' if interior is not mask else ''}voxels "
                             f"({100 * fraction:.1f} %) below {air_hu:g} HU"))
    return flag_table(rows)


# -- label-only flags -----------------------------------------------------------------------


def _face_name(geometry: Geometry, axis: int, end: int) -> str:
    column = geometry.direction_matrix()[:, axis] * (1 if end else -1)
    lps = int(np.argmax(np.abs(column)))
    return _FACES[(lps, 1 if column[lps] > 0 else -1)]


def flag_fov_border(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *, max_voxels: int = 0,
                    case: str = "") -> pd.DataFrame:
    """``fov_border``: classes with more than ``max_voxels`` voxels on the faces of the grid (cut by the
    field of view); the detail names the faces in patient terms (from the direction). Axes of one
    voxel have no faces."""
    per_face: dict[str, np.ndarray] = {}
    for axis, n in enumerate(labels.shape):
        if n < 2:
            continue
        for end in (0, 1):
            face = np.take(labels, n - 1 if end else 0, axis=axis)
            counts = np.bincount(face.ravel())
            name = _face_name(geometry, axis, end)
            previous = per_face.get(name)
            if previous is not None:
                size = max(previous.size, counts.size)
                counts = np.pad(counts, (0, size - counts.size)) + np.pad(previous, (0, size - previous.size))
            per_face[name] = counts
    totals: dict[int, dict[str, int]] = {}
    for name, counts in per_face.items():
        for value in np.flatnonzero(counts[1:]) + 1:
            totals.setdefault(int(value), {})[name] = int(counts[value])
    rows = []
    for label in sorted(totals):
        faces = totals[label]
        total = sum(faces.values())
        if total > max_voxels:
            text = ", ".join(f"{face} ({n} voxels)" for face, n in faces.items())
            rows.append(_row(case, scheme.name_of(label), "fov_border", total, max_voxels,
                             f"cut by the field of view: touches the {text} face(s)"))
    return flag_table(rows)


def flag_region(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *,
                tables: AnatomyTables | None = None, max_outside: float = 0.25, case: str = "",
                boxes: LabelBoxes | None = None) -> pd.DataFrame:
    """``region``: classes bound to a body region (``tables``: default the ``dap_total`` preset's)
    whose centroid lies outside it, or more than ``max_outside`` of their voxels (voxel centres'
    z, mm). A region without any of its landmarks in the map checks nothing; a class listed for
    several regions may lie in any of them."""
    tables = tables if tables is not None else load_anatomy_tables()
    usable = {name: spec for name, spec in tables.regions.items() if _landmarks_known(spec, scheme)}
    regions = parse_regions(usable, scheme)
    limits: dict[str, list[tuple[str, float, float]]] = {}
    boxes = label_boxes(labels) if boxes is None else boxes
    for region_name, region in regions.items():
        found = region_limits(region, labels, geometry, scheme, boxes=boxes)
        if found is None:
            continue
        for name in tables.region_classes.get(region_name, ()):
            limits.setdefault(name, []).append((region_name, found[0], found[1]))
    rows = []
    for name, slabs in limits.items():
        if name not in scheme.by_name or scheme.by_name[name].value is None:
            continue
        value = scheme.value_of(name)
        if value not in boxes:
            continue
        box = boxes[value]
        mask = labels[box] == value
        z = np.broadcast_to(axis_coordinate(_crop_geometry(geometry, box), 2), mask.shape)[mask]
        inside = np.zeros(z.shape, dtype=bool)
        centre = float(z.mean())
        centre_inside = False
        for _, low, high in slabs:
            inside |= (z >= low) & (z <= high)
            centre_inside |= low <= centre <= high
        fraction = 1.0 - float(inside.mean())
        if fraction > max_outside or not centre_inside:
            where = " or ".join(f"the {r} (z {_mm(low)} to {_mm(high)} mm)" for r, low, high in slabs)
            rows.append(_row(case, name, "region", fraction, max_outside,
                             f"{100 * fraction:.0f} % of the voxels (centroid z {centre:.0f} mm"
                             f"{'' if centre_inside else ', outside'}) lie outside {where}"))
    return flag_table(rows)


def _mm(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) else ("-inf" if value < 0 else "inf")


def _landmarks_known(spec: Any, scheme: LabelScheme) -> bool:
    if not isinstance(spec, Mapping):
        return True  # parse_regions names the problem
    return all(not isinstance(b, Mapping) or b.get("landmark") in scheme.by_name for b in spec.values())


def side_pairs(scheme: LabelScheme) -> list[tuple[str, str]]:
    """(left, right) class names of the scheme: a name with the word ``left`` whose ``right``
    counterpart (same name, ``left`` -> ``right``) is also a class with a value."""
    pairs = []
    valued = {c.name for c in scheme.classes if c.value is not None}
    for name in sorted(valued):
        words = name.split("_")
        if "left" in words:
            other = "_".join("right" if w == "left" else w for w in words)
            if other in valued:
                pairs.append((name, other))
    return pairs


def flag_left_right(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *,
                    midline: Sequence[str] = ("vertebrae", "sternum"), min_distance_mm: float = 5.0,
                    max_tilt_degrees: float = 30.0, body: np.ndarray | None = None,
                    case: str = "", boxes: LabelBoxes | None = None) -> pd.DataFrame:
    """``left_right``: side-paired classes (:func:`side_pairs`) whose centroid lies more than
    ``min_distance_mm`` on the wrong side of the midsagittal plane, fitted to the centroid of every
    class under ``midline`` (a plane tilted more than ``max_tilt_degrees``, or fewer than two
    landmarks: x = the centre of ``body``, else of all labelled voxels). ``value``: mm on the wrong
    side (patient left is +x, LPS)."""
    boxes = label_boxes(labels) if boxes is None else boxes
    if not boxes:
        return flag_table([])
    points = []
    for value in sorted(_values_of(midline, scheme)):
        if value in boxes:
            box = boxes[value]
            points.append(_centroid(labels[box] == value, _crop_geometry(geometry, box)))
    centre_mask = body if body is not None and body.any() else labels > 0
    fallback = float(_centroid(centre_mask, geometry)[0])
    plane = fit_midsagittal_plane(points, fallback_x=fallback)
    if plane.tilt_degrees > max_tilt_degrees:
        plane = fit_midsagittal_plane([], fallback_x=fallback)
    source = (f"fitted to {plane.points} midline centroids" if plane.source == "landmarks"
              else "x = the body centre")
    rows = []
    for left, right in side_pairs(scheme):
        for name, sign in ((left, 1.0), (right, -1.0)):
            value = scheme.value_of(name)
            if value not in boxes:
                continue
            box = boxes[value]
            centre = _centroid(labels[box] == value, _crop_geometry(geometry, box))
            wrong = -sign * plane.side(centre)
            if wrong > min_distance_mm:
                rows.append(_row(case, name, "left_right", wrong, min_distance_mm,
                                 f"centroid {wrong:.0f} mm on the patient's {'right' if sign > 0 else 'left'} of the "
                                 f"midsagittal plane ({source})"))
    return flag_table(rows)


def _largest_component(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    components, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask
    sizes = chunked_bincount(components, minlength=n + 1)
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def flag_merged_vertebrae(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *,
                          order: Sequence[str] | None = None, factor: float = 1.6, window: int = 3,
                          relative_height: Mapping[str, float] | None = None,
                          case: str = "", boxes: LabelBoxes | None = None) -> pd.DataFrame:
    """``merged_vertebrae``: a vertebra whose largest (26-connected) component is taller (z extent of
    its voxels, mm) than ``factor`` x the median height of the other vertebrae within ``window``
    levels of ``order`` (top to bottom; default the ``dap_total`` preset's; all others when fewer
    than two are that close), plus one voxel's z extent (the height of a few voxels is uncertain by
    one). Reference heights come only from vertebrae not cut by the field of view (not touching a
    face of the grid across z); fewer than two such references: nothing is checked. Heights are
    divided by ``relative_height`` (default C2: 2, for the dens) before comparing. ``value``: the
    ratio of heights; ``threshold``: ``factor`` + the one-voxel allowance as a ratio. The detail names
    the neighbouring levels missing from the map (probably swallowed)."""
    order = list(order) if order is not None else list(load_anatomy_tables().vertebrae)
    relative = {"vertebrae_C2": 2.0} if relative_height is None else dict(relative_height)
    order = [n for n in order if n in scheme.by_name and scheme.by_name[n].value is not None]
    boxes = label_boxes(labels) if boxes is None else boxes
    structure = _structure(26)
    voxel_z = _z_extent_of_voxel(geometry)
    across_z = [k for k in range(labels.ndim) if abs(geometry.direction_matrix()[2, k]) > 1e-3 and labels.shape[k] > 1]
    heights: dict[int, float] = {}
    cut: set[int] = set()
    for i, name in enumerate(order):
        value = scheme.value_of(name)
        if value not in boxes:
            continue
        box = boxes[value]
        mask = _largest_component(labels[box] == value, structure)
        z = np.broadcast_to(axis_coordinate(_crop_geometry(geometry, box), 2), mask.shape)[mask]
        heights[i] = (float(z.max() - z.min()) + voxel_z) / relative.get(name, 1.0)
        if any(box[k].start == 0 or box[k].stop == labels.shape[k] for k in across_z):
            cut.add(i)
    rows = []
    for i, height in heights.items():
        references = {j: h for j, h in heights.items() if j != i and j not in cut}
        near = [h for j, h in references.items() if abs(j - i) <= window]
        if len(near) < 2:
            near = list(references.values())
        if len(near) < 2:
            continue
        expected = float(np.median(near))
        name = order[i]
        allowance = voxel_z / relative.get(name, 1.0) / expected
        ratio = height / expected
        if ratio > factor + allowance:
            missing = [order[j] for j in (i - 1, i + 1) if 0 <= j < len(order) and j not in heights]
            note = f"; {' and '.join(missing)} missing (merged into it?)" if missing else ""
            rows.append(_row(case, name, "merged_vertebrae", ratio, factor + allowance,
                             f"{height * relative.get(name, 1.0):.0f} mm tall, {ratio:.2f} x the median height of "
                             f"its neighbours ({expected * relative.get(name, 1.0):.0f} mm){note}"))
    return flag_table(rows)


def flag_components(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *,
                    classes: Sequence[str] | None = None, max_components: int = 1, min_ml: float = 0.1,
                    connectivity: int = 26, case: str = "", boxes: LabelBoxes | None = None) -> pd.DataFrame:
    """``components``: classes that occur once (``classes``; default the ``dap_total`` preset's
    ``largest_component`` list) with more than ``max_components`` connected components
    (``connectivity`` 6, 18 or 26) of at least ``min_ml`` ml; the detail lists the sizes (ml, largest
    first)."""
    names = classes if classes is not None else load_anatomy_tables().single
    structure = _structure(connectivity)
    boxes = label_boxes(labels) if boxes is None else boxes
    minimum = min_ml / geometry.voxel_volume_ml()
    rows = []
    for name in names:
        if name not in scheme.by_name or scheme.by_name[name].value is None:
            continue
        value = scheme.value_of(name)
        if value not in boxes:
            continue
        components, n = ndimage.label(labels[boxes[value]] == value, structure=structure)
        sizes = np.sort(chunked_bincount(components, minlength=n + 1)[1:])[::-1]
        kept = sizes[sizes >= minimum]
        if len(kept) > max_components:
            listed = ", ".join(f"{_ml(s, geometry):.1f}" for s in kept[:6]) + (" ..." if len(kept) > 6 else "")
            rows.append(_row(case, name, "components", len(kept), max_components,
                             f"{len(kept)} components of at least {min_ml:g} ml: {listed} ml"))
    return flag_table(rows)


def flag_overlap(masks: Mapping[str, np.ndarray], geometry: Geometry, *, max_voxels: int = 0,
                 case: str = "") -> pd.DataFrame:
    """``overlap``: for per-class binary masks (name -> array, one grid), every pair of masks that
    claims more than ``max_voxels`` common voxels; ``class`` is ``a+b`` (in the order given),
    ``value`` the number of common voxels."""
    names = list(masks)
    if len(names) < 2:
        return flag_table([])
    count = np.zeros(geometry.shape, dtype=np.uint16)
    for name in names:
        count += masks[name].astype(bool)
    where = np.flatnonzero(count.ravel() >= 2)
    if not where.size:
        return flag_table([])
    claims = np.stack([masks[n].astype(bool).ravel()[where] for n in names], axis=1).astype(np.int64)
    pairs = claims.T @ claims
    rows = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            voxels = int(pairs[a, b])
            if voxels > max_voxels:
                rows.append(_row(case, f"{names[a]}+{names[b]}", "overlap", voxels, max_voxels,
                                 f"{names[a]} and {names[b]} both claim {voxels} voxels "
                                 f"({_ml(voxels, geometry):.2f} ml)"))
    return flag_table(rows)


def flag_geometry(label_geometry: Geometry, image_geometry: Geometry, *, case: str = "") -> pd.DataFrame:
    """``geometry``: one flag (class ``all``) when the label map's grid differs from the image's
    (:func:`~segqc.io.geometry.geometry_differences`: shape, spacing, direction, origin); ``value``: the
    number of differing properties."""
    diffs = geometry_differences(label_geometry, image_geometry)
    if not diffs:
        return flag_table([])
    text = "; ".join(f"{d.what} {d.pred} (image {d.gt})" for d in diffs)
    return flag_table([_row(case, "all", "geometry", len(diffs), 0,
                        f"label map and image on different grids: {text}; image-based flags skipped")])


def class_volumes(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *, case: str = "") -> pd.DataFrame:
    """case, class, value, voxels, volume_ml of every class present."""
    counts = chunked_bincount(labels)
    rows = [{"case": case, "class": scheme.name_of(int(v)), "value": int(v), "voxels": int(counts[v]),
             "volume_ml": _ml(counts[v], geometry)} for v in np.flatnonzero(counts[1:]) + 1]
    return pd.DataFrame(rows, columns=["case", "class", "value", "voxels", "volume_ml"])


def flag_volume_z(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, reference: pd.DataFrame, *,
                  max_abs_z: float = 3.0, case: str = "") -> pd.DataFrame:
    """``volume_z``: z = (volume - mean_ml) / sd_ml of every class present that ``reference`` (class,
    mean_ml, sd_ml; :func:`reference_volumes`) describes with sd_ml > 0; flagged when |z| >
    ``max_abs_z`` (``value`` is the signed z)."""
    volumes = class_volumes(labels, geometry, scheme).set_index("class")["volume_ml"]
    rows = []
    for entry in reference.itertuples(index=False):
        name = str(entry[0])
        mean, sd = float(entry[1]), float(entry[2])
        if name not in volumes.index or not (sd > 0 and math.isfinite(mean)):
            continue
        volume = float(volumes[name])
        z = (volume - mean) / sd
        if abs(z) > max_abs_z:
            rows.append(_row(case, name, "volume_z", z, max_abs_z,
                             f"{volume:.1f} ml against {mean:.1f} ± {sd:.1f} ml: z = {z:+.1f}"))
    return flag_table(rows)
