"""Degrade a ground truth until its Dice falls into a requested bin; balanced sampling over bins.

:func:`degrade_to_bin` draws a random *recipe* (one or two nnQC operations, each on all classes or
on one class, plus with probability 0.5 a SegGen block in which each of rotation, scaling,
translation and elastic deformation is present with probability 0.5), applies it at a common
strength ``s`` in ``[0, 1]`` (each step at ``s * w``, ``w`` a per-step weight in [0.5, 1]) and
bisects ``s`` towards a Dice drawn uniformly inside the bin. Every step's random draws come from
its own seed, fixed for the recipe, so the result is a deterministic function of ``s`` and the
damage grows with it. If the recipe cannot get below the bin even at full strength, a further
operation is added (up to :data:`MAX_STEPS`); if bisection cannot land inside the bin (the Dice
jumps over it), a new recipe is drawn. After ``max_attempts`` recipes the closest result is
returned with ``reached=False``: the search always ends.

The Dice is the QCResUNet subject-level multi-class Dice (:func:`segqc.metrics.multiclass.
multiclass_dice`), or the one-vs-rest Dice of one class with ``target_label``. The reported Dice
is always the one achieved by the returned map, never the target.

Speed: the search works on the bounding box of the ground-truth foreground grown by
``margin_mm`` (40 mm by default; the room for false positives "far" from the organ, shifts and
SegGen moves); outside it both maps are background, so the Dice is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from segqc.degrade.operations import NNQC_OPERATIONS, as_rng, present_labels
from segqc.degrade.seggen import SEGGEN_OPERATIONS
from segqc.metrics.multiclass import multiclass_dice, per_class_dice

__all__ = [
    "BALANCED_BINS",
    "MAX_STEPS",
    "NNQC_BINS",
    "DiceBin",
    "Degraded",
    "Recipe",
    "Step",
    "assign_bins",
    "balanced_sample",
    "balanced_training_set",
    "bins_from_edges",
    "degrade_to_bin",
    "draw_recipe",
    "parse_bins",
]

MAX_STEPS = 5  # operations a recipe may grow to before a new recipe is drawn
_PATIENCE = 5  # bisection steps after which any Dice inside the bin is accepted
_OPERATIONS = {**NNQC_OPERATIONS, **SEGGEN_OPERATIONS}


# --------------------------------------------------------------------------------------------
# Bins
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiceBin:
    """A Dice interval ``[lo, hi)``, or ``[lo, hi]`` when ``closed`` (the last bin of a set)."""

    lo: float
    hi: float
    closed: bool = False

    def __post_init__(self) -> None:
        if not (0.0 <= self.lo < self.hi <= 1.0):
            raise ValueError(f"a Dice bin needs 0 <= lo < hi <= 1, got [{self.lo}, {self.hi}]")

    def contains(self, dice: float) -> bool:
        if not math.isfinite(dice):
            return False
        return self.lo <= dice < self.hi or (self.closed and dice == self.hi)

    def distance(self, dice: float) -> float:
        """0 inside the bin, else the distance to its nearest end (inf for NaN)."""
        if not math.isfinite(dice):
            return math.inf
        if self.contains(dice):
            return 0.0
        return self.lo - dice if dice < self.lo else dice - self.hi + (0.0 if self.closed else 1e-12)

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def __str__(self) -> str:
        return f"[{self.lo:.2f},{self.hi:.2f}{']' if self.closed else ')'}"


def bins_from_edges(edges: Iterable[float]) -> tuple[DiceBin, ...]:
    """Consecutive bins ``[e0,e1), [e1,e2), ..., [e_{n-1},e_n]`` (the last one closed)."""
    edges = [float(e) for e in edges]
    if len(edges) < 2:
        raise ValueError(f"bins need at least two edges, got {edges}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must increase strictly, got {edges}")
    if edges[0] < 0 or edges[-1] > 1:
        raise ValueError(f"bin edges must lie in [0, 1], got {edges}")
    n = len(edges) - 1
    return tuple(DiceBin(a, b, closed=(i == n - 1)) for i, (a, b) in enumerate(zip(edges, edges[1:])))


def parse_bins(text: str) -> tuple[DiceBin, ...]:
    """``"0.05,0.10,0.25,0.50,0.75,0.95"`` -> the bins between consecutive edges."""
    try:
        edges = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"Dice bin edges must be comma-separated numbers such as 0.05,0.10,0.25, "
                         f"got {text!r}") from None
    return bins_from_edges(edges)


#: nnQC (IV-A.4): [0.05,0.10), [0.10,0.25), [0.25,0.50), [0.50,0.75), [0.75,0.95].
NNQC_BINS = bins_from_edges((0.05, 0.10, 0.25, 0.50, 0.75, 0.95))
#: QCResUNet (2.2): 10 equal bins [0,0.1), ..., [0.9,1.0].
BALANCED_BINS = bins_from_edges(np.round(np.linspace(0.0, 1.0, 11), 10))


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One operation of a recipe: its name, the classes it acts on (None = all), its weight."""

    name: str
    target: int | None
    weight: float
    seed: int

    def describe(self, strength: float) -> str:
        where = "all" if self.target is None else str(self.target)
        return f"{self.name}[{where}]@{min(1.0, strength * self.weight):.3f}"


@dataclass(frozen=True)
class Recipe:
    """Operations applied in order at a common strength ``s`` (step ``i`` at ``s * weight_i``)."""

    steps: tuple[Step, ...]

    def apply(self, label: np.ndarray, strength: float, *, spacing: Sequence[float],
              labels: Sequence[int] | None) -> np.ndarray:
        out = label
        for step in self.steps:
            out = _OPERATIONS[step.name](out, np.random.default_rng(step.seed), min(1.0, strength * step.weight),
                                         spacing=spacing, target=step.target, labels=labels)
        return out

    def describe(self, strength: float) -> list[str]:
        return [step.describe(strength) for step in self.steps]

    def extended(self, step: Step) -> Recipe:
        return Recipe(self.steps + (step,))


def _draw_step(rng: np.random.Generator, names: Sequence[str], present: Sequence[int], target_label: int | None,
               *, weight: float | None = None, whole: bool = False) -> Step:
    name = str(rng.choice(list(names)))
    if target_label is not None:
        target = target_label if rng.random() < 0.75 else None
    elif whole or len(present) <= 1 or rng.random() < 0.5:
        target = None
    else:
        target = int(rng.choice(list(present)))
    w = float(rng.uniform(0.5, 1.0)) if weight is None else weight
    return Step(name, target, w, int(rng.integers(2**63 - 1)))


def _nnqc_names(present: Sequence[int], pool: Sequence[int]) -> list[str]:
    names = list(NNQC_OPERATIONS)
    if len(set(present) | set(pool)) < 2:  # nothing to swap with or collapse into
        names = [n for n in names if n not in ("swap", "collapse")]
    return names


def draw_recipe(rng: np.random.Generator, present: Sequence[int], pool: Sequence[int],
                *, target_label: int | None = None, seggen_probability: float = 0.5) -> Recipe:
    """A random recipe: 1-2 nnQC operations, then with ``seggen_probability`` a SegGen block
    (rotation, scaling, translation, elastic, each with probability 0.5)."""
    names = _nnqc_names(present, pool)
    steps = []
    for _ in range(int(rng.integers(1, 3))):
        steps.append(_draw_step(rng, names, present, target_label))
    if rng.random() < seggen_probability:
        for name in SEGGEN_OPERATIONS:
            if rng.random() < 0.5:
                steps.append(_draw_step(rng, [name], present, target_label, whole=True))
    rng.shuffle(steps)
    return Recipe(tuple(steps))


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


@dataclass
class Degraded:
    """A degraded label map and what it is.

    ``achieved_dice``: the Dice of ``label`` against the ground truth (multi-class, or of
    ``target_label``); ``per_class``: one-vs-rest Dice per label; ``operations``: the recipe with
    the strength of every step (e.g. ``"erosion[2]@0.412"``); ``reached``: whether
    ``achieved_dice`` is inside ``bin``; ``attempts``: recipes tried; ``evaluations``: maps made;
    ``note``: why a bin was not reached ("" otherwise).
    """

    label: np.ndarray
    achieved_dice: float
    per_class: dict[int, float]
    operations: list[str]
    reached: bool
    bin: DiceBin
    strength: float = 0.0
    attempts: int = 0
    evaluations: int = 0
    note: str = ""


def _crop_box(gt: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[slice, ...]:
    boxes = []
    for d in range(gt.ndim):
        other = tuple(a for a in range(gt.ndim) if a != d)
        hits = np.flatnonzero((gt != 0).any(axis=other))
        pad = int(math.ceil(margin_mm / float(spacing[d])))
        boxes.append(slice(max(0, hits[0] - pad), min(gt.shape[d], hits[-1] + 1 + pad)))
    return tuple(boxes)


def degrade_to_bin(
    gt: np.ndarray,
    spacing: Sequence[float],
    bin: DiceBin,
    rng: np.random.Generator | int,
    *,
    labels: Sequence[int] | None = None,
    target_label: int | None = None,
    max_attempts: int = 8,
    max_iterations: int = 14,
    margin_mm: float = 40.0,
    seggen_probability: float = 0.5,
) -> Degraded:
    """Degrade ``gt`` (integer label map, 2D/3D, ``spacing`` in mm) to a Dice inside ``bin``.

    ``labels``: the dataset's foreground labels (for swaps, collapses and false positives; default
    the labels present). ``target_label``: target that class's one-vs-rest Dice instead of the
    multi-class Dice. At most ``max_attempts`` recipes and ``max_iterations`` bisection steps per
    recipe (each recipe may grow by up to ``MAX_STEPS`` operations): the search always ends, and
    when the bin is not reached the closest map is returned with ``reached=False`` and a ``note``.
    Raises ``ValueError`` if ``gt`` has no foreground (or lacks ``target_label``).
    """
    gt = np.asarray(gt)
    rng = as_rng(rng)
    present = present_labels(gt)
    if not present:
        raise ValueError("the ground truth has no foreground: there is nothing to degrade")
    if target_label is not None and target_label not in present:
        raise ValueError(f"label {target_label} is absent from the ground truth")
    pool = sorted({int(v) for v in labels if int(v) != 0}) if labels is not None else list(present)
    box = _crop_box(gt, spacing, margin_mm)
    crop = np.ascontiguousarray(gt[box])
    score = _scorer(crop, target_label)

    best: tuple[float, float, float, Recipe, float] | None = None  # (distance, |d - t|, dice, recipe, s)
    evaluations = 0
    attempts = 0
    reached = False
    for attempts in range(1, max_attempts + 1):  # noqa: B007 - the count is reported after the loop
        recipe = draw_recipe(rng, present, pool, target_label=target_label, seggen_probability=seggen_probability)
        goal = float(rng.uniform(bin.lo + 0.1 * bin.width, bin.hi - 0.1 * bin.width))
        names = _nnqc_names(present, pool)

        # Late binding on purpose: `recipe` may be extended below and dice_at must use the current one.
        def dice_at(s: float) -> float:
            nonlocal evaluations, best
            evaluations += 1
            d = score(recipe.apply(crop, s, spacing=spacing, labels=pool))  # noqa: B023
            key = (_miss(bin, d), abs(d - goal) if math.isfinite(d) else math.inf)  # noqa: B023
            if best is None or key < best[:2]:
                best = (key[0], key[1], d, recipe, s)  # noqa: B023
            return d

        top = dice_at(1.0)
        while not top < bin.hi and len(recipe.steps) < MAX_STEPS:  # too weak even at full strength
            recipe = recipe.extended(_draw_step(rng, names, present, target_label, weight=1.0, whole=True))
            top = dice_at(1.0)
        if not top < bin.hi:
            continue
        if _miss(bin, top) == 0.0 and abs(top - goal) <= 0.25 * bin.width:
            reached = True
            break
        lo_s, hi_s = 0.0, 1.0  # dice(lo_s) > goal >= dice(hi_s), as far as monotonicity holds
        for iteration in range(max_iterations):
            s = 0.5 * (lo_s + hi_s)
            d = dice_at(s)
            # near the goal, or anywhere in the bin once the search has narrowed a while
            if _miss(bin, d) == 0.0 and (abs(d - goal) <= 0.25 * bin.width or iteration >= _PATIENCE):
                break
            if d > goal:
                lo_s = s
            else:
                hi_s = s
        if best is not None and best[0] == 0.0:
            reached = True
            break

    assert best is not None
    _, _, dice, recipe, strength = best
    degraded_crop = recipe.apply(crop, strength, spacing=spacing, labels=pool)
    label = np.zeros_like(gt)
    label[box] = degraded_crop
    per_class_labels = sorted(set(pool) | set(present))
    per_class = {c: r.value for c, r in per_class_dice(degraded_crop, crop, per_class_labels).items()}
    note = ""
    if not reached:
        note = (f"bin {bin} not reached after {attempts} recipes ({evaluations} maps); "
                f"closest achieved Dice {dice:.4f}")
    return Degraded(label=label, achieved_dice=float(dice), per_class=per_class, operations=recipe.describe(strength),
                    reached=reached, bin=bin, strength=float(strength), attempts=attempts,
                    evaluations=evaluations, note=note)


def _miss(bin: DiceBin, dice: float) -> float:
    """How far ``dice`` is from ``bin`` (0 = a hit). A Dice of 1 (a map equal to the ground truth
    on the scored classes) is never a hit: it is no degradation, even for a bin that contains 1."""
    distance = bin.distance(dice)
    return max(distance, 1e-9) if dice >= 1.0 else distance


def _scorer(gt: np.ndarray, target_label: int | None) -> Callable[[np.ndarray], float]:
    if target_label is None:
        return lambda pred: multiclass_dice(pred, gt).value
    return lambda pred: per_class_dice(pred, gt, [target_label])[target_label].value


# --------------------------------------------------------------------------------------------
# Balanced sets
# --------------------------------------------------------------------------------------------


def assign_bins(n: int, n_bins: int, rng: np.random.Generator | int) -> list[int]:
    """Bin index of each of ``n`` masks of one case: every bin ``n // n_bins`` times, the
    remainder to consecutive bins from a random start, so that over many cases all bins get the
    same count. Sorted."""
    if n < 0 or n_bins < 1:
        raise ValueError(f"need n >= 0 and at least one bin, got n={n}, n_bins={n_bins}")
    start = int(as_rng(rng).integers(n_bins))
    out = [i for i in range(n_bins) for _ in range(n // n_bins)]
    out += [(start + j) % n_bins for j in range(n % n_bins)]
    return sorted(out)


def balanced_training_set(
    gt: np.ndarray,
    spacing: Sequence[float],
    n: int,
    rng: np.random.Generator | int,
    *,
    bins: Sequence[DiceBin] = BALANCED_BINS,
    labels: Sequence[int] | None = None,
    target_label: int | None = None,
    max_attempts: int = 8,
) -> list[Degraded]:
    """``n`` degraded maps of one ground truth spread evenly over ``bins`` (default: QCResUNet's
    10 equal Dice bins), see :func:`assign_bins`."""
    rng = as_rng(rng)
    return [
        degrade_to_bin(gt, spacing, bins[b], rng, labels=labels, target_label=target_label, max_attempts=max_attempts)
        for b in assign_bins(n, len(bins), rng)
    ]


def balanced_sample(
    dice: Iterable[float],
    rng: np.random.Generator | int,
    *,
    bins: Sequence[DiceBin] = BALANCED_BINS,
    per_bin: int | None = None,
) -> np.ndarray:
    """QCResUNet resampling (2.2): indices of a subset with the same number of samples per bin.

    ``per_bin`` defaults to the smallest non-zero count over the bins (QCResUNet's ``n_s``);
    bins with fewer samples give all they have. Samples outside every bin (and NaN) are never
    chosen. Random without replacement; indices sorted.
    """
    values = np.asarray(list(dice), dtype=float)
    rng = as_rng(rng)
    members = [np.flatnonzero([b.contains(v) for v in values]) for b in bins]
    counts = [m.size for m in members if m.size]
    if not counts:
        return np.zeros(0, dtype=int)
    k = min(counts) if per_bin is None else int(per_bin)
    chosen = [rng.choice(m, size=min(k, m.size), replace=False) for m in members if m.size]
    return np.sort(np.concatenate(chosen)).astype(int)

