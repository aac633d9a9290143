"""Lesion-wise metrics of the BraTS 2023 challenges (and MIST), and per-case lesion detection counts.

Definitions (BraTS 2023 lesion-wise evaluation, ``get_LesionWiseScores`` / ``get_LesionWiseResults``;
the MIST variant differs only in parameters, see :meth:`LesionSettings.mist`):

1. **Ground-truth lesions.** The ground truth is dilated ``merge_iterations`` times (default: as
   many as ``dilation_iterations``) with the ``dilation_connectivity`` structuring element (18 in
   3D, i.e. ``scipy.ndimage.generate_binary_structure(3, 2)``); the dilated mask is labelled with
   ``connectivity`` (26) and the labels are restricted to the ground-truth voxels. Lesions closer
   than about twice the dilation therefore merge into one lesion, whose voxels are only the
   ground-truth voxels (not the dilated ones).
2. **Small lesions.** A ground-truth lesion whose volume is ``<= lesion_volume_threshold``
   (BraTS; ``<`` with ``ignore_at_threshold=False`` as MIST) is *ignored*: it is neither counted
   nor scored. Volumes are in mm³ (voxels × voxel volume) as BraTS and MIST compute them; with
   ``volume_unit="voxel"`` the threshold counts voxels. Predicted components are never removed,
   whatever their size.
3. **Matching.** Every ground-truth lesion is dilated ``dilation_iterations`` times (same
   structuring element); every predicted component (labelled with ``connectivity``) with at least
   one voxel inside that footprint is *matched* to the lesion (one component may match several
   lesions). A lesion with at least one match is *detected*.
4. **Per-lesion scores.** Dice, HD95 and NSD between the lesion and the union of its matched
   components (whole components, also their parts outside the footprint), in mm with the given
   spacing; HD95 and NSD use :func:`segqc.metrics.binary.compare_masks` with the DeepMind surfel
   surfaces by default (``surface="surfel"``), which is the ``surface-distance`` code BraTS and
   MIST vendor, so the values agree with theirs. A missed lesion scores Dice 0, NSD 0 and HD95
   ``missed_distance_mm`` (BraTS: 374 mm, the infinite HD95 of an empty prediction replaced by 374;
   MIST: the image diagonal in mm, ``missed_distance_mm=None``).
5. **False positives.** Predicted components matched to no ground-truth lesion. BraTS matches
   against *all* lesions, ignored ones included, so a component touching only an ignored lesion is
   not a false positive; MIST matches only against kept lesions (``ignored_match_is_fp=True``).
6. **Lesion-wise score** ``= (Σ_kept-lesions score + n_fp × penalty) / (n_gt + n_fp)``, with
   penalty 0 for Dice and NSD and ``missed_distance_mm`` for HD95.

Empty cases (``n_gt`` counts kept lesions only):

* ``n_gt + n_fp == 0`` (both masks empty, or only ignored ground-truth lesions and no false
  positive): Dice 1, HD95 0, NSD 1, F1 1 (BraTS replaces the 0/0 NaN by 1 and 0; MIST returns the
  metrics' best values); TPR is NaN (no lesion to detect).
* ground truth without kept lesions, prediction with false positives: Dice 0, HD95
  ``missed_distance_mm``, NSD 0, F1 0, TPR NaN.
* prediction empty, ground truth with kept lesions: Dice 0, HD95 ``missed_distance_mm``, NSD 0,
  TPR 0, F1 0.

``dilation_iterations=0`` means no dilation (matching needs overlap, lesions never merge). This
deliberately departs from ``scipy.ndimage.binary_dilation(iterations=0)``, which the original
scripts call and which dilates until nothing changes; no challenge uses 0.

Speed: the masks are labelled once; each lesion is dilated only inside its bounding box plus the
dilation margin; all lesion × component matches come from a single ``np.unique`` over the
footprints; per-lesion metrics are computed on the bounding box of the lesion and its matched
components, padded by one voxel. :func:`detection_counts` reuses the ground-truth footprints for
every threshold. Pure numpy/scipy, no I/O; 2D masks are supported (connectivities map to their
in-plane restriction, 6 -> 4, 18/26 -> 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage

from segqc.metrics import surface as _surface
from segqc.metrics.binary import MetricSettings, compare_masks
from segqc.metrics.components import CONNECTIVITY_2D, label_components
from segqc.metrics.counts import chunked_bincount
from segqc.metrics.masks import as_mask, bounding_box, check_spacing, mask_pair, union_box
from segqc.metrics.surface import SurfaceMode

VolumeUnit = Literal["mm3", "voxel"]

#: BraTS 2023 challenge parameters ``(dilation_factor, lesion_volume_thresh)`` of
#: ``get_LesionWiseResults``; the threshold is in mm³ and lesions with volume <= it are ignored.
BRATS_2023_PARAMETERS: dict[str, tuple[int, float]] = {
    "GLI": (3, 50.0),
    "SSA": (3, 50.0),
    "MEN": (1, 50.0),
    "PED": (3, 50.0),
    "MET": (1, 2.0),
}
#: HD95 (mm) BraTS assigns to missed lesions and to false-positive components.
BRATS_MISSED_DISTANCE_MM = 374.0

_CONNECTIVITIES = (4, 6, 8, 18, 26)
_RANK_3D = {6: 1, 18: 2, 26: 3}
_RANK_2D = {4: 1, 8: 2}


@dataclass(frozen=True)
class LesionSettings:
    """Parameters of the lesion-wise evaluation (defaults: BraTS 2023 GLI, see module docstring).

    dilation_iterations: dilations (voxels, not mm) of each ground-truth lesion when looking for
        matching predicted components; 0 = overlap required.
    merge_iterations: dilations of the ground truth before labelling it, merging nearby lesions;
        ``None`` = ``dilation_iterations`` (BraTS), 0 = no merging (MIST default).
    lesion_volume_threshold: ground-truth lesions with volume <= this (``< this`` when
        ``ignore_at_threshold`` is False) are ignored.
    volume_unit: unit of ``lesion_volume_threshold``: ``"mm3"`` (BraTS, MIST) or ``"voxel"``.
    ignore_at_threshold: True: a lesion of exactly the threshold volume is ignored (BraTS);
        False: kept (MIST).
    connectivity: of the labelling of prediction, ground truth and dilated ground truth
        (BraTS 26, MIST 18).
    dilation_connectivity: structuring element of every dilation: 6, 18 or 26 neighbours (both
        BraTS and MIST use 18).
    ignored_match_is_fp: False: a predicted component matched only to an ignored lesion is not a
        false positive (BraTS); True: it is (MIST).
    tolerance_mm: NSD tolerance per lesion (mm). percentile: of the per-lesion robust Hausdorff.
    missed_distance_mm: HD95 of missed lesions and of each false positive (mm); ``None`` = the
        image diagonal ``‖shape × spacing‖`` (MIST).
    surface: surface definition of HD95 / NSD, ``"surfel"`` (DeepMind ``surface-distance``, as
        BraTS and MIST) or ``"voxel"`` (MONAI).
    """

    dilation_iterations: int = 3
    merge_iterations: int | None = None
    lesion_volume_threshold: float = 50.0
    volume_unit: VolumeUnit = "mm3"
    ignore_at_threshold: bool = True
    connectivity: int = 26
    dilation_connectivity: int = 18
    ignored_match_is_fp: bool = False
    tolerance_mm: float = 1.0
    percentile: float = 95.0
    missed_distance_mm: float | None = BRATS_MISSED_DISTANCE_MM
    surface: SurfaceMode = "surfel"

    def __post_init__(self) -> None:
        if int(self.dilation_iterations) != self.dilation_iterations or self.dilation_iterations < 0:
            raise ValueError(f"dilation_iterations must be an integer >= 0, got {self.dilation_iterations}")
        if self.merge_iterations is not None and (
            int(self.merge_iterations) != self.merge_iterations or self.merge_iterations < 0
        ):
            raise ValueError(f"merge_iterations must be None or an integer >= 0, got {self.merge_iterations}")
        if not (self.lesion_volume_threshold >= 0 and math.isfinite(self.lesion_volume_threshold)):
            raise ValueError(f"lesion_volume_threshold must be finite and >= 0, got {self.lesion_volume_threshold}")
        if self.volume_unit not in ("mm3", "voxel"):
            raise ValueError(f"volume_unit must be 'mm3' or 'voxel', got {self.volume_unit!r}")
        for name in ("connectivity", "dilation_connectivity"):
            if getattr(self, name) not in _CONNECTIVITIES:
                raise ValueError(f"{name} must be one of {_CONNECTIVITIES}, got {getattr(self, name)}")
        if not (self.tolerance_mm >= 0 and math.isfinite(self.tolerance_mm)):
            raise ValueError(f"tolerance_mm must be finite and >= 0, got {self.tolerance_mm}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.missed_distance_mm is not None and not (
            self.missed_distance_mm >= 0 and math.isfinite(self.missed_distance_mm)
        ):
            raise ValueError(f"missed_distance_mm must be None or finite and >= 0, got {self.missed_distance_mm}")
        if self.surface not in _surface.SURFACE_MODES:
            raise ValueError(f"surface must be one of {_surface.SURFACE_MODES}, got {self.surface!r}")

    @property
    def merge_dilations(self) -> int:
        """Dilations applied before labelling the ground truth (``merge_iterations`` resolved)."""
        return self.dilation_iterations if self.merge_iterations is None else int(self.merge_iterations)

    @classmethod
    def brats(cls, challenge: str = "GLI", **overrides: object) -> LesionSettings:
        """BraTS 2023 parameters of ``challenge`` (GLI, SSA, MEN, PED, MET; a ``BraTS-`` prefix is
        accepted): dilation 3 (GLI, SSA, PED) or 1 (MEN, MET), volume threshold 50 mm³ (2 mm³ for
        MET), lesions <= threshold ignored, 26-connectivity, 18-neighbour dilation, HD95 374 mm."""
        key = challenge.upper().removeprefix("BRATS-")
        if key not in BRATS_2023_PARAMETERS:
            raise ValueError(
                f"unknown BraTS 2023 challenge {challenge!r}; expected one of {sorted(BRATS_2023_PARAMETERS)}"
            )
        dilation, threshold = BRATS_2023_PARAMETERS[key]
        base = cls(dilation_iterations=dilation, lesion_volume_threshold=threshold)
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def mist(cls, **overrides: object) -> LesionSettings:
        """MIST 2.3 defaults (``compute_lesion_wise_metrics``): matching dilation 3, no lesion
        merging (``gt_consolidation_iters=0``), lesions < 10 mm³ ignored, 18-connectivity for
        labelling and dilation, components matched only to ignored lesions count as false
        positives, missed / false-positive HD95 = image diagonal, surface-Dice tolerance 1 mm."""
        base = cls(
            dilation_iterations=3,
            merge_iterations=0,
            lesion_volume_threshold=10.0,
            volume_unit="mm3",
            ignore_at_threshold=False,
            connectivity=18,
            dilation_connectivity=18,
            ignored_match_is_fp=True,
            tolerance_mm=1.0,
            missed_distance_mm=None,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LesionRow:
    """One ground-truth lesion (after merging).

    lesion_id: its label (1..n) in the merged ground-truth labelling. volume_voxels / volume_mm3:
    its size (ground-truth voxels only). ignored: below the volume threshold (not counted or
    scored). matched_pred: ids of the matched predicted components (labels of the prediction's
    labelling). detected: at least one match. dice, hd95 (mm), nsd: against the union of the
    matched components; a missed lesion has 0, ``missed_distance_mm`` and 0.
    """

    lesion_id: int
    volume_voxels: int
    volume_mm3: float
    ignored: bool
    matched_pred: tuple[int, ...]
    detected: bool
    dice: float
    hd95: float
    nsd: float


@dataclass(frozen=True)
class LesionScores:
    """Lesion-wise scores of one case (see the module docstring for definitions and empty cases).

    lesion_dice, lesion_nsd: Σ score / (n_gt + n_fp). lesion_hd95 (mm): (Σ hd95 + n_fp × missed
    distance) / (n_gt + n_fp). lesion_tpr: n_detected / n_gt (NaN without kept lesions).
    lesion_f1: detection F1 = 2·TP / (2·TP + FP + FN) (MIST ``lesion_wise_f1``; 1 when all are 0).
    n_gt: kept ground-truth lesions; n_detected: those detected; n_fp: false-positive components;
    n_ignored: ground-truth lesions below the volume threshold.
    """

    lesion_dice: float
    lesion_hd95: float
    lesion_nsd: float
    lesion_tpr: float
    lesion_f1: float
    n_gt: int
    n_detected: int
    n_fp: int
    n_ignored: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "lesion_dice": self.lesion_dice,
            "lesion_hd95": self.lesion_hd95,
            "lesion_nsd": self.lesion_nsd,
            "lesion_tpr": self.lesion_tpr,
            "lesion_f1": self.lesion_f1,
            "n_gt": self.n_gt,
            "n_detected": self.n_detected,
            "n_fp": self.n_fp,
            "n_ignored": self.n_ignored,
        }


@dataclass(frozen=True)
class LesionTable:
    """Per-lesion results of one case.

    lesions: every ground-truth lesion, ignored ones included (flagged), ordered by id.
    fp_components: ids of the false-positive predicted components; fp_volumes_voxels: their sizes.
    n_pred_components: number of predicted components. missed_distance_mm: the HD95 given to missed
    lesions and false positives in this case.
    """

    lesions: tuple[LesionRow, ...]
    fp_components: tuple[int, ...]
    fp_volumes_voxels: tuple[int, ...]
    n_pred_components: int
    missed_distance_mm: float

    @property
    def kept(self) -> tuple[LesionRow, ...]:
        """The lesions that are counted and scored (not ignored)."""
        return tuple(row for row in self.lesions if not row.ignored)

    def scores(self) -> LesionScores:
        """Aggregate the table into :class:`LesionScores`."""
        kept = self.kept
        n_gt, n_fp = len(kept), len(self.fp_components)
        n_detected = sum(1 for row in kept if row.detected)
        denominator = n_gt + n_fp
        if denominator == 0:
            dice, hd95, nsd = 1.0, 0.0, 1.0
        else:
            dice = sum(row.dice for row in kept) / denominator
            nsd = sum(row.nsd for row in kept) / denominator
            hd95 = (sum(row.hd95 for row in kept) + n_fp * self.missed_distance_mm) / denominator
        tpr = n_detected / n_gt if n_gt else math.nan
        f1_denominator = 2 * n_detected + n_fp + (n_gt - n_detected)
        f1 = 2 * n_detected / f1_denominator if f1_denominator else 1.0
        return LesionScores(
            lesion_dice=float(dice),
            lesion_hd95=float(hd95),
            lesion_nsd=float(nsd),
            lesion_tpr=float(tpr),
            lesion_f1=float(f1),
            n_gt=n_gt,
            n_detected=n_detected,
            n_fp=n_fp,
            n_ignored=len(self.lesions) - n_gt,
        )


# --------------------------------------------------------------------------------------------
# internals


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    return (1.0,) * ndim if spacing is None else check_spacing(spacing, ndim)


def _structure(connectivity: int, ndim: int) -> np.ndarray:
    if ndim == 3:
        if connectivity not in _RANK_3D:
            raise ValueError(f"3D dilation connectivity must be 6, 18 or 26, got {connectivity}")
        return ndimage.generate_binary_structure(3, _RANK_3D[connectivity])
    return ndimage.generate_binary_structure(2, _RANK_2D[CONNECTIVITY_2D[connectivity]])


def _grown_box(box: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


@dataclass(frozen=True)
class _GtLesions:
    """Merged ground-truth lesions of one case and their dilated matching footprints.

    labels: merged lesion labels (0 = background). boxes[i - 1]: bounding box of lesion i.
    volumes: voxels per lesion (index 0 unused). ignored: per lesion (index 0 unused).
    footprint_lesion / footprint_index: (lesion id, flat voxel index) of every voxel of every
    lesion's dilated footprint (footprints may overlap when merge < dilation).
    """

    labels: np.ndarray
    n: int
    boxes: list[tuple[slice, ...]]
    volumes: np.ndarray
    ignored: np.ndarray
    footprint_lesion: np.ndarray
    footprint_index: np.ndarray


def _gt_lesions(gt: np.ndarray, spacing: tuple[float, ...], settings: LesionSettings) -> _GtLesions:
    shape = gt.shape
    struct = _structure(settings.dilation_connectivity, gt.ndim)
    merge = settings.merge_dilations
    labels = np.zeros(shape, dtype=np.int32)
    n = 0
    gt_box = bounding_box(gt)
    if gt_box is not None:
        box = _grown_box(gt_box, merge, shape)
        sub = gt[box]
        if merge > 0:
            # labels of the dilated ground truth, restricted to the ground-truth voxels; every dilated
            # component holds ground-truth voxels, so the merged lesions are labelled 1..n
            dilated = ndimage.binary_dilation(sub, structure=struct, iterations=merge)
            merged, n = label_components(dilated, connectivity=settings.connectivity)
            merged[~sub] = 0
        else:
            merged, n = label_components(sub, connectivity=settings.connectivity)
        labels[box] = merged
    boxes: list[tuple[slice, ...]] = [b for b in ndimage.find_objects(labels) if b is not None] if n else []
    if len(boxes) != n:  # pragma: no cover - guaranteed by construction
        raise RuntimeError("merged ground-truth labels are not contiguous")
    flat = labels.reshape(-1)
    volumes = np.bincount(flat[np.flatnonzero(flat)], minlength=n + 1)
    size = volumes * float(np.prod(spacing)) if settings.volume_unit == "mm3" else volumes.astype(np.float64)
    threshold = settings.lesion_volume_threshold
    ignored = size <= threshold if settings.ignore_at_threshold else size < threshold

    iterations = settings.dilation_iterations
    lesion_parts, index_parts = [], []
    for lesion_id, lesion_box in enumerate(boxes, start=1):
        box = _grown_box(lesion_box, iterations, shape)
        footprint = labels[box] == lesion_id
        if iterations > 0:
            footprint = ndimage.binary_dilation(footprint, structure=struct, iterations=iterations)
        coords = np.nonzero(footprint)
        index = np.ravel_multi_index(tuple(c + s.start for c, s in zip(coords, box)), shape)
        index_parts.append(index.astype(np.int64))
        lesion_parts.append(np.full(index.size, lesion_id, dtype=np.int64))
    footprint_lesion = np.concatenate(lesion_parts) if lesion_parts else np.zeros(0, dtype=np.int64)
    footprint_index = np.concatenate(index_parts) if index_parts else np.zeros(0, dtype=np.int64)
    return _GtLesions(labels, n, boxes, volumes, ignored, footprint_lesion, footprint_index)


def _match(lesions: _GtLesions, pred_labels: np.ndarray, n_pred: int) -> tuple[np.ndarray, np.ndarray]:
    """All (lesion id, predicted component id) pairs whose footprint and component share a voxel."""
    component = pred_labels.reshape(-1)[lesions.footprint_index].astype(np.int64)
    hit = component > 0
    key = np.unique(lesions.footprint_lesion[hit] * (n_pred + 1) + component[hit])
    return key // (n_pred + 1), key % (n_pred + 1)


def _false_positives(
    lesions: _GtLesions, pair_lesion: np.ndarray, pair_pred: np.ndarray, n_pred: int, settings: LesionSettings
) -> np.ndarray:
    counting = ~lesions.ignored[pair_lesion] if settings.ignored_match_is_fp else np.ones(pair_lesion.size, bool)
    matched = np.zeros(n_pred + 1, dtype=bool)
    matched[pair_pred[counting]] = True
    return np.flatnonzero(~matched[1:]) + 1


def _lesion_metrics(
    lesions: _GtLesions,
    lesion_id: int,
    pred_labels: np.ndarray,
    pred_boxes: list[tuple[slice, ...] | None],
    matched: np.ndarray,
    spacing: tuple[float, ...],
    metric_settings: MetricSettings,
) -> tuple[float, float, float]:
    box = union_box([lesions.boxes[lesion_id - 1]] + [pred_boxes[p - 1] for p in matched], pred_labels.ndim)
    assert box is not None  # the lesion's own box is always there
    gt_crop = np.pad(lesions.labels[box] == lesion_id, 1)
    pred_crop = np.pad(np.isin(pred_labels[box], matched), 1)
    results = compare_masks(pred_crop, gt_crop, spacing, metrics=("dice", "hd95", "nsd"), settings=metric_settings)
    dice, hd95, nsd = (r.value for r in results)
    return float(dice), float(hd95), float(nsd)


def _missed_distance(shape: tuple[int, ...], spacing: tuple[float, ...], settings: LesionSettings) -> float:
    if settings.missed_distance_mm is not None:
        return float(settings.missed_distance_mm)
    return float(np.linalg.norm(np.asarray(shape, dtype=np.float64) * np.asarray(spacing)))


# --------------------------------------------------------------------------------------------
# public API


def lesion_table(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    settings: LesionSettings | None = None,
) -> LesionTable:
    """Per-lesion Dice / HD95 (mm) / NSD and the false-positive components of one case.

    ``pred``, ``gt``: same-shape binary 2D/3D masks (non-zero = foreground); ``spacing``: mm per
    array axis (used for HD95, NSD, mm³ volumes and the image diagonal; dilations count voxels).
    Every ground-truth lesion is listed, ignored ones flagged; see the module docstring for the
    definitions.
    """
    settings = settings or LesionSettings()
    pred, gt = mask_pair(pred, gt)
    sp = _spacing(spacing, gt.ndim)
    lesions = _gt_lesions(gt, sp, settings)
    pred_labels, n_pred = label_components(pred, connectivity=settings.connectivity)
    pair_lesion, pair_pred = _match(lesions, pred_labels, n_pred)
    missed = _missed_distance(gt.shape, sp, settings)
    metric_settings = MetricSettings(
        tolerance_mm=settings.tolerance_mm, percentile=settings.percentile, surface=settings.surface
    )
    pred_boxes: list[tuple[slice, ...] | None] = list(ndimage.find_objects(pred_labels)) if n_pred else []
    starts = np.searchsorted(pair_lesion, np.arange(lesions.n + 2))
    voxel_mm3 = float(np.prod(sp))
    rows = []
    for lesion_id in range(1, lesions.n + 1):
        matched = pair_pred[starts[lesion_id] : starts[lesion_id + 1]]
        if matched.size:
            dice, hd95, nsd = _lesion_metrics(lesions, lesion_id, pred_labels, pred_boxes, matched, sp, metric_settings)
        else:
            dice, hd95, nsd = 0.0, missed, 0.0
        rows.append(
            LesionRow(
                lesion_id=lesion_id,
                volume_voxels=int(lesions.volumes[lesion_id]),
                volume_mm3=float(lesions.volumes[lesion_id]) * voxel_mm3,
                ignored=bool(lesions.ignored[lesion_id]),
                matched_pred=tuple(int(p) for p in matched),
                detected=bool(matched.size),
                dice=dice,
                hd95=hd95,
                nsd=nsd,
            )
        )
    fp = _false_positives(lesions, pair_lesion, pair_pred, n_pred, settings)
    fp_sizes = chunked_bincount(pred_labels, minlength=n_pred + 1)[fp] if fp.size else np.zeros(0, int)
    return LesionTable(
        lesions=tuple(rows),
        fp_components=tuple(int(p) for p in fp),
        fp_volumes_voxels=tuple(int(v) for v in fp_sizes),
        n_pred_components=n_pred,
        missed_distance_mm=missed,
    )


def lesion_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    settings: LesionSettings | None = None,
) -> LesionScores:
    """BraTS-2023 lesion-wise Dice, HD95 (mm) and NSD, lesion TPR / F1 and counts of one case.

    Arguments as :func:`lesion_table`; the empty-mask conventions are listed in the module
    docstring (both empty: Dice 1, HD95 0, NSD 1, TPR NaN; only ground truth empty or only
    prediction empty: Dice 0, HD95 ``missed_distance_mm``, NSD 0).
    """
    return lesion_table(pred, gt, spacing, settings).scores()


def detection_counts(
    prob: np.ndarray,
    gt: np.ndarray,
    thresholds: Sequence[float],
    settings: LesionSettings | None = None,
    *,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Lesion detection counts of the prediction ``prob >= t`` for every threshold ``t``.

    Returns an int64 array of shape ``(len(thresholds), 3)``: detected kept lesions (TP), missed
    kept lesions (FN), false-positive predicted components (FP), with the matching rules of
    :func:`lesion_table` (ignored lesions count in none of the columns). ``spacing`` (mm per axis)
    only matters for an mm³ volume threshold; ``None`` = 1 mm isotropic. The ground-truth lesions
    and footprints are computed once for all thresholds.
    """
    settings = settings or LesionSettings()
    prob = np.asarray(prob)
    if prob.ndim not in (2, 3):
        raise ValueError(f"prob must be a 2D or 3D map, got {prob.ndim}D")
    if prob.dtype.kind not in "biuf":
        raise ValueError(f"prob must be numeric, got dtype {prob.dtype}")
    if prob.dtype.kind == "f" and not np.isfinite(prob).all():
        raise ValueError("prob contains NaN or infinite values")
    gt = as_mask(gt, "gt")
    if prob.shape != gt.shape:
        raise ValueError(f"prob shape {prob.shape} differs from gt shape {gt.shape}")
    levels = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if not np.isfinite(levels).all():
        raise ValueError("thresholds must be finite")
    lesions = _gt_lesions(gt, _spacing(spacing, gt.ndim), settings)
    kept = ~lesions.ignored
    n_kept = int(np.count_nonzero(kept[1:]))
    out = np.zeros((levels.size, 3), dtype=np.int64)
    for i, t in enumerate(levels):
        pred_labels, n_pred = label_components(prob >= t, connectivity=settings.connectivity)
        pair_lesion, pair_pred = _match(lesions, pred_labels, n_pred)
        tp = int(np.unique(pair_lesion[kept[pair_lesion]]).size)
        fp = int(_false_positives(lesions, pair_lesion, pair_pred, n_pred, settings).size)
        out[i] = (tp, n_kept - tp, fp)
    return out


def froc_points(counts_per_case: Sequence[np.ndarray], thresholds: Sequence[float]) -> list[tuple[float, float, float]]:
    """FROC operating points pooled over cases: ``(threshold, sensitivity, fp_per_case)``.

    ``counts_per_case``: one :func:`detection_counts` array per case, all for ``thresholds``.
    sensitivity = ΣTP / Σ(TP + FN) over cases (NaN when no case has a kept lesion); fp_per_case =
    ΣFP / number of cases.
    """
    levels = [float(t) for t in thresholds]
    if not counts_per_case:
        raise ValueError("froc_points needs at least one case")
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in counts_per_case])
    if stacked.shape[1:] != (len(levels), 3):
        raise ValueError(f"each case needs counts of shape ({len(levels)}, 3), got {stacked.shape[1:]}")
    total = stacked.sum(axis=0)
    n_cases = stacked.shape[0]
    points = []
    for t, (tp, fn, fp) in zip(levels, total):
        sensitivity = tp / (tp + fn) if tp + fn else math.nan
        points.append((t, float(sensitivity), float(fp / n_cases)))
    return points
