"""A whole-body label phantom in the TotalSegmentator ``total`` scheme, with a CT-like image, for the
tests and demos of the anatomical rules and checks (no real case here has the whole spine, the
ribs and the sex organs at once).

Shapes are defined in patient LPS millimetres (+x left, +y posterior, +z superior) and drawn onto
any grid (spacing, axis flips, permutations), so a rule that ignores the affine fails on a
flipped phantom. Body: an elliptic cylinder (x radius 170 mm, y radius 120 mm) from z = 0 to 820
mm, a neck and a head above. Spine at x = 0, y = +70: sacrum, S1, L5..L1, T12..T1, C7..C1 bottom to
top, each a box with a 10 mm gap to the next. Twelve ribs a side at the levels of T1..T12, lateral
bars outside the lungs. Lungs (lobes split by height), heart, liver (right), spleen (left),
kidneys, aorta, urinary bladder, femurs, hips, brain, skull, sternum; prostate in a male.

:class:`Phantom` holds the map, the image, the geometry and the z range of every vertebra (to
build tests with known answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from segqc.anatomy.scheme import LabelScheme, shipped_scheme
from segqc.anatomy.space import axis_coordinate
from segqc.io.geometry import Geometry

__all__ = ["Phantom", "VERTEBRAE_BOTTOM_UP", "make_phantom"]

#: The vertebrae of ``total`` from the bottom up (S1 lowest, C1 highest).
VERTEBRAE_BOTTOM_UP = ("vertebrae_S1", *(f"vertebrae_L{i}" for i in range(5, 0, -1)),
                       *(f"vertebrae_T{i}" for i in range(12, 0, -1)), *(f"vertebrae_C{i}" for i in range(7, 0, -1)))

_HEIGHT = {"S": 24.0, "L": 24.0, "T": 18.0, "C": 12.0}  # mm
_GAP = 10.0  # mm between vertebrae
_SPINE_START = 230.0  # mm: bottom of S1
_HEAD_Z = 1010.0  # mm: centre of the head (its bottom, 915 mm, is above C1)


@dataclass
class Phantom:
    """``labels`` (``total`` values, ITK index order), ``image`` (HU, float32), ``geometry``,
    ``scheme``, ``sex`` (``M``/``F``), ``vertebra_z`` (name -> (bottom, top) in mm)."""

    labels: np.ndarray
    image: np.ndarray
    geometry: Geometry
    scheme: LabelScheme
    sex: str
    vertebra_z: dict[str, tuple[float, float]] = field(default_factory=dict)

    def value(self, name: str) -> int:
        return self.scheme.value_of(name)


def _grid(spacing: float, direction: Sequence[float] | None) -> Geometry:
    """A grid covering x, y in [-190, 190] mm and z in [-20, 1120] mm with ``direction``."""
    direction = tuple(direction) if direction is not None else (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    low, high = np.array([-190.0, -190.0, -20.0]), np.array([190.0, 190.0, 1120.0])
    # array axis d runs along physical column d of the direction; find its extent and start
    shape, origin = [], np.zeros(3)
    for d in range(3):
        axis = int(np.argmax(np.abs(matrix[:, d])))
        length = high[axis] - low[axis]
        shape.append(int(round(length / spacing)) + 1)
        origin[axis] = low[axis] if matrix[axis, d] > 0 else high[axis]
    return Geometry(shape=tuple(shape), spacing=(spacing,) * 3, origin=tuple(origin), direction=direction)


def make_phantom(*, spacing: float = 6.0, sex: str = "M", direction: Sequence[float] | None = None) -> Phantom:
    """The phantom of the module docstring on a grid of ``spacing`` mm (isotropic) with the axis
    ``direction`` (row-major 3x3 of ±1 permutation entries; default identity)."""
    geometry = _grid(spacing, direction)
    x = axis_coordinate(geometry, 0)
    y = axis_coordinate(geometry, 1)
    z = axis_coordinate(geometry, 2)
    scheme = shipped_scheme("total")
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    image = np.full(geometry.shape, -1000.0, dtype=np.float32)

    def put(name: str, mask: np.ndarray, hu: float) -> None:
        labels[mask] = scheme.value_of(name)
        image[mask] = hu

    def box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)

    def ellipsoid(cx: float, cy: float, cz: float, rx: float, ry: float, rz: float) -> np.ndarray:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    trunk = ((x / 170.0) ** 2 + (y / 120.0) ** 2 <= 1.0) & (z >= 0) & (z <= 820)
    head = ellipsoid(0, 0, _HEAD_Z, 85, 95, 95)
    neck = ((x / 70.0) ** 2 + (y / 110.0) ** 2 <= 1.0) & (z > 800) & (z < _HEAD_Z - 60)
    image[trunk | head | neck] = 30.0
    vertebra_z: dict[str, tuple[float, float]] = {}
    bottom = _SPINE_START
    for name in VERTEBRAE_BOTTOM_UP:
        top = bottom + _HEIGHT[name.split("_")[1][0]]
        vertebra_z[name] = (bottom, top)
        bottom = top + _GAP
    level = {n: (lo + hi) / 2 for n, (lo, hi) in vertebra_z.items()}
    # lungs (upper / lower lobes by height; the right lung has a middle lobe)
    lung_low, lung_high = level["vertebrae_T11"], level["vertebrae_T1"] + 10
    for side, sign in (("left", 1.0), ("right", -1.0)):
        lung = (((x - sign * 85) / 50.0) ** 2 + ((y + 10) / 80.0) ** 2 <= 1.0) & (z >= lung_low) & (z <= lung_high)
        split = level["vertebrae_T6"]
        if side == "left":
            put("lung_lower_lobe_left", lung & (z < split), -800)
            put("lung_upper_lobe_left", lung & (z >= split), -800)
        else:
            put("lung_lower_lobe_right", lung & (z < split - 30), -800)
            put("lung_middle_lobe_right", lung & (z >= split - 30) & (z < split + 20), -800)
            put("lung_upper_lobe_right", lung & (z >= split + 20), -800)
    aorta = ((x - 20) ** 2 + (y - 35) ** 2 <= 14.0 ** 2) & (z >= level["vertebrae_L4"])
    put("aorta", aorta & (z <= level["vertebrae_T4"]), 200)
    put("heart", ellipsoid(15, -35, level["vertebrae_T7"], 55, 45, 50), 40)
    put("liver", ellipsoid(-75, 0, level["vertebrae_T12"], 70, 70, 55), 60)
    put("spleen", ellipsoid(95, 40, level["vertebrae_T11"], 28, 28, 40), 50)
    put("kidney_right", ellipsoid(-65, 60, level["vertebrae_L2"], 28, 25, 45), 35)
    put("kidney_left", ellipsoid(65, 60, level["vertebrae_L1"], 28, 25, 45), 35)
    put("urinary_bladder", ellipsoid(0, -50, 185, 40, 35, 30), 10)
    if sex == "M":
        put("prostate", ellipsoid(0, -25, 135, 18, 18, 18), 40)
    put("hip_left", box(45, 140, -40, 60, 150, 260), 500)
    put("hip_right", box(-140, -45, -40, 60, 150, 260), 500)
    put("femur_left", ((x - 95) ** 2 + y ** 2 <= 25.0 ** 2) & (z >= 0) & (z < 140), 700)
    put("femur_right", ((x + 95) ** 2 + y ** 2 <= 25.0 ** 2) & (z >= 0) & (z < 140), 700)
    put("sacrum", box(-35, 35, 45, 100, 170, _SPINE_START - _GAP), 600)
    for name, (lo, hi) in vertebra_z.items():
        put(name, box(-25, 25, 45, 100, lo, hi), 600)
    put("sternum", box(-15, 15, -118, -100, level["vertebrae_T8"], level["vertebrae_T2"]), 600)
    for i in range(1, 13):
        lo, hi = vertebra_z[f"vertebrae_T{i}"]
        for side, sign in (("left", 1.0), ("right", -1.0)):
            bar = box(138, 152, -40, 40, lo, hi) if sign > 0 else box(-152, -138, -40, 40, lo, hi)
            put(f"rib_{side}_{i}", bar, 600)
    put("skull", head & ~ellipsoid(0, 0, _HEAD_Z, 70, 80, 80), 900)
    put("brain", ellipsoid(0, 0, _HEAD_Z, 65, 75, 75), 35)
    return Phantom(labels=labels, image=image, geometry=geometry, scheme=scheme, sex=sex, vertebra_z=vertebra_z)
