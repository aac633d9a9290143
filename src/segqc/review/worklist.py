"""The cases a reviewer goes through, worst estimated quality first, with the files of each.

:func:`load_worklist` reads a segqc output folder through :func:`segqc.report.cohort.load_cohort`
(``qc predict``, ``qc benchmark`` or ``evaluate``) and keeps, per case, the flag and reason of
``worklist.csv``, the estimates per class, and the files of its layers. File paths stay on the
server: the web app names cases and layers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from segqc.errors import InputError
from segqc.report.cohort import (
    Cohort,
    case_order,
    label_names,
    label_order,
    load_cohort,
    primary_metric,
    primary_scores,
    use_files,
)

LAYERS = ("image", "segmentation", "reference", "error", "uncertainty")
"""Layer names, bottom to top. ``reference`` is the pGT (QC) or the ground truth (evaluate);
``error`` is the folder's ``errors/CASE.nii.gz`` when it has one, else the voxels where the
segmentation and the reference disagree; ``uncertainty`` is the per-voxel entropy map of the folder
or of the segmentation folder (:func:`segqc.report.cohort.uncertainty_file`)."""


@dataclass
class ReviewCase:
    """One case of the worklist. ``estimate``: the primary metric's value for ``all`` classes
    (the mean over classes when there is no ``all`` row; None when unknown). ``values``: label ->
    metric -> {column: value} (estimate, spread, true)."""

    id: str
    flagged: bool
    reason: str
    estimate: float | None
    values: dict[str, dict[str, dict[str, float | None]]]
    files: dict[str, Path] = field(default_factory=dict)

    def label_estimate(self, label: str, metric: str) -> float | None:
        """The estimate (or value) of ``label`` and ``metric``, None when missing."""
        cell = self.values.get(label, {}).get(metric, {})
        return cell.get("estimate", cell.get("value"))


@dataclass
class ReviewWorklist:
    """The cases in review order. ``labels``: class value -> name; ``metric``: the primary metric;
    ``ref_name``: what the reference layer is (``pGT`` or ``GT``)."""

    folder: Path
    kind: str
    metric: str
    ref_name: str
    labels: dict[str, str]
    cases: list[ReviewCase]

    def __post_init__(self) -> None:
        self._by_id = {case.id: case for case in self.cases}

    def get(self, case_id: str) -> ReviewCase | None:
        """The case with this id, None for any other text (ids are never paths)."""
        return self._by_id.get(case_id)

    def layers(self, case: ReviewCase) -> list[str]:
        """The layers this case can show, bottom to top."""
        present = [name for name in LAYERS if name in case.files]
        if "error" not in present and "segmentation" in case.files and "reference" in case.files:
            present.insert(present.index("reference") + 1, "error")
        return present


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _values(cohort: Cohort) -> dict[str, dict[str, dict[str, dict[str, float | None]]]]:
    columns = [c for c in ("estimate", "spread", "true", "value") if c in cohort.long.columns]
    out: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for row in cohort.long[["case", "label", "metric", *columns]].itertuples(index=False):
        cell = {c: _number(getattr(row, c)) for c in columns}
        out.setdefault(str(row.case), {}).setdefault(str(row.label), {})[str(row.metric)] = cell
    return out


def load_worklist(out_dir: str | Path, *, images: str | Path | None = None,
                  segs: str | Path | None = None) -> ReviewWorklist:
    """The worklist of a ``segqc qc predict`` / ``qc benchmark`` / ``evaluate`` / ``labels check``
    output folder.

    Order: the primary metric's estimate (or value) for all classes, worst first (ascending for a
    score such as Dice, descending for a distance such as HD95, as the metric registry declares);
    cases without one (nothing to compare) before all others, as in ``worklist.csv``; a check
    folder in the order of its ``worklist.csv``. Flags and reasons come from ``worklist.csv`` (no
    case is flagged without one; an empty flag cell is not a flag). ``images`` / ``segs``:
    folders whose files replace the image and segmentation files recorded in the output (first
    image channel; a case is found by its id, by the case its segmentation segments, or by its id
    without a trailing ``_NN`` variant suffix). Raises :class:`InputError` for a folder of
    another kind, missing recorded files, or a case the given folders do not hold.
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        raise InputError("is not a folder", folder)
    cohort = load_cohort(folder)
    use_files(cohort, images=images, segs=segs)
    metric = primary_metric(cohort.long)
    values = _values(cohort)
    scores = primary_scores(cohort.long, metric)
    work = cohort.worklist.set_index("case") if cohort.worklist is not None else pd.DataFrame()
    names = label_names(cohort.long)
    known = {**cohort.classes, **names}
    labels = {label: known[label] for label in label_order([*cohort.long["label"], *cohort.classes]) if label != "all"}
    cases = []
    for case_id, inputs in cohort.inputs.items():
        files: dict[str, Path] = {"segmentation": inputs.seg}
        if inputs.image is not None:
            files["image"] = inputs.image
        if inputs.ref is not None and inputs.ref != inputs.seg:
            files["reference"] = inputs.ref
        error_map = folder / "errors" / f"{case_id}.nii.gz"
        if error_map.is_file():
            files["error"] = error_map
        if inputs.uncertainty is not None:
            files["uncertainty"] = inputs.uncertainty
        flagged = bool(work.loc[case_id, "flag"]) if case_id in work.index and "flag" in work.columns else False
        reason = str(work.loc[case_id, "reason"]) if flagged and "reason" in work.columns else ""
        cases.append(ReviewCase(case_id, flagged, "" if reason == "nan" else reason,
                                scores.get(case_id), values.get(case_id, {}), files))
    position = {case: i for i, case in enumerate(case_order(cohort))}
    cases.sort(key=lambda c: position[c.id])
    return ReviewWorklist(folder, cohort.kind, metric, cohort.ref_name, labels, cases)
