"""What a segqc output folder holds, for the report and the review app.

:func:`load_cohort` reads a ``segqc qc predict`` folder (``qc.csv``, ``worklist.csv``,
``report.json`` naming each case's input files, ``pgt/``), a ``segqc qc benchmark`` folder
(``pairs.csv`` and ``qc/``), a ``segqc evaluate`` folder (``metrics.csv``, ``summary.json``) or a
``segqc labels check`` folder (``flags.csv``, ``worklist.csv``, ``summary.json``) into one
:class:`Cohort`: a long table of per-case values and the files of every case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.io.json_files import read_json_object

if TYPE_CHECKING:
    from segqc.io.geometry import Geometry


@dataclass
class CaseInputs:
    """The files of one case: image (None for ``evaluate``), segmentation, reference (pGT or GT;
    None for a QC model without pGT), error map (``errors/`` of a quality regressor; value >
    0 where some class is estimated wrong) and uncertainty map (per-voxel entropy of a
    segmentation method, :func:`uncertainty_file`)."""

    image: Path | None
    seg: Path
    ref: Path | None
    errors: Path | None = None
    uncertainty: Path | None = None


@dataclass
class Cohort:
    """What a report shows of one folder. ``long``: case, label, label_name, metric and the value
    columns ``values`` (name -> heading); ``worklist``: case, flag, reason, spread (QC only);
    ``order``: the case order the output itself gives (a check's flags have no estimate to sort by);
    ``classes``: label -> name of every class the segmentations hold where the output lists them
    beyond those with a row in ``long`` (a check's ``volumes.csv``), for the viewer's colours."""

    kind: str
    long: pd.DataFrame
    values: dict[str, str]
    inputs: dict[str, CaseInputs]
    ref_name: str
    worklist: pd.DataFrame | None = None
    slices: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    order: list[str] | None = None  # the output's own case order (worst first) where it has no estimate
    classes: dict[str, str] = field(default_factory=dict)


def read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"case": str, "label": str, "label_name": str, "model": str, "empty": str,
                                         "component": str, "reason": str}, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the table: {error}", path) from None
    return table


def _existing(path_text: str, where: Path) -> Path:
    path = Path(path_text)
    if not path.exists():
        raise InputError(f"the input file named in {where.name} is missing", path)
    return path


def _summary_inputs(summary: dict[str, Any]) -> object:
    """What a ``summary.json`` records as ``cases`` / ``inputs`` (None where ``cases`` is no mapping)."""
    cases = summary.get("cases")
    return cases.get("inputs") if isinstance(cases, dict) else None


def _case_files(recorded: dict[str, Any], case: str, where: Path) -> dict[str, Any] | None:
    """The recorded ``inputs`` entry of ``case`` (role -> list of files); None when there is none.
    Raises :class:`InputError` naming ``where`` for an entry of another structure."""
    files = recorded.get(case)
    if files is None:
        return None
    if not isinstance(files, dict):
        raise InputError(f"records the input files of case {case} as {type(files).__name__}, not as a mapping of "
                         "role to files; is it an output of segqc?", where)
    return files


def recorded_file(recorded: dict[str, Any], case: str, role: str, where: Path, *,
                  required: bool = True) -> Path | None:
    """The first file of ``role`` that the JSON file ``where`` records for ``case`` in its
    ``inputs`` (``{case: {role: [file, ...]}}``), checked to exist. None when the case or role is
    not recorded and not ``required``. Raises :class:`InputError` naming ``where`` for a
    structure other than a list of file names (or a required file not recorded) and for a
    relative path (an older segqc's, whose meaning depended on the folder it ran from), naming
    the file when it is missing."""
    files = _case_files(recorded, case, where)
    if files is None:
        if required:
            raise InputError(f"names no input files of case {case}", where)
        return None
    names = files.get(role)
    if names is None or (isinstance(names, list) and not names):
        if required:
            raise InputError(f"names no {role} file of case {case}", where)
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        shown = repr(names)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(f"records the {role} file(s) of case {case} as {shown}, not as a list of file names", where)
    if not Path(names[0]).is_absolute():  # an older segqc's: relative to a folder no longer known
        raise InputError(f"records the {role} file of case {case} as a relative path ({names[0]}), which depends on "
                         "the folder the run was started from; rerun the command that wrote this folder (it reuses "
                         "the finished cases) to record absolute paths", where)
    return _existing(names[0], where)


def _numbers(table: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    """``table`` with ``columns`` (those present) as floats; an empty cell is NaN. Raises
    :class:`InputError` naming ``path``, the column and the line of the first cell that is not a
    number."""
    for column in columns:
        if column not in table.columns:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & table[column].notna().to_numpy())
        if len(bad):
            raise InputError(f"column '{column}' holds {table[column].iloc[bad[0]]!r} on line {int(bad[0]) + 2}, "
                             "not a number", path)
        table = table.assign(**{column: values.astype(float)})
    return table


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def _flag(value: object, line: int, path: Path) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False  # an empty cell: not flagged
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InputError(f"column 'flag' holds {value!r} on line {line}; expected True, False or an empty cell", path)


def read_worklist(path: Path) -> pd.DataFrame:
    """``worklist.csv`` (case, flag, reason, ...) with ``flag`` as booleans (an empty cell is not
    flagged) and the ``*_estimate`` / ``*_spread`` columns as numbers. Raises :class:`InputError`
    naming ``path`` for a flag other than True/False/1/0/yes/no/empty, a value that is not a
    number, or a case listed twice."""
    table = read_table(path)
    if "case" in table.columns:
        repeated = table["case"][table["case"].duplicated()]
        if len(repeated):
            raise InputError(f"lists case {repeated.iloc[0]} more than once", path)
    if "flag" in table.columns:
        table = table.assign(flag=[_flag(v, i + 2, path) for i, v in enumerate(table["flag"].tolist())])
    numeric = [c for c in table.columns if c.endswith("_estimate") or c.endswith("_spread")]
    return _numbers(table, numeric, path)


def check_layer_grid(geometry: Geometry, path: Path, seg_geometry: Geometry, seg_path: Path, *,
                     layer: str, case: str) -> None:
    """Raise :class:`InputError` naming ``path`` (the ``layer`` of ``case``) unless it lies on the
    segmentation's full voxel grid (shape, spacing, direction, origin; the tolerances of
    :func:`segqc.io.geometry.geometry_differences`) — an overlay on another grid would be wrong."""
    from segqc.io.geometry import geometry_differences

    diffs = geometry_differences(geometry, seg_geometry)
    if diffs:
        what = ", ".join(f"{d.what} {d.pred} vs {d.gt}" for d in diffs)
        raise InputError(f"the {layer} of case {case} is not on the grid of the segmentation {seg_path} ({what})",
                         path)


def require_columns(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"has no column(s) {missing}; is it an output of segqc?", path)


def _load_qc(folder: Path) -> Cohort:
    table = read_table(folder / "qc.csv")
    require_columns(table, ["case", "label", "label_name", "metric", "estimate"], folder / "qc.csv")
    if not len(table):
        raise InputError("holds no cases", folder / "qc.csv")
    table = _numbers(table, ["estimate", "spread"], folder / "qc.csv")
    report_path = folder / "report.json"
    if not report_path.exists():
        raise InputError("is missing; the report needs the input files it names", report_path)
    recorded = read_json_object(report_path, what="QC report").get("inputs")
    if not isinstance(recorded, dict):
        raise InputError("names no input files ('inputs'); rerun `segqc qc predict` with this version", report_path)
    inputs = {}
    for case in sorted(set(table["case"])):
        seg = recorded_file(recorded, case, "seg", report_path)
        assert seg is not None
        image = recorded_file(recorded, case, "image", report_path, required=False)
        pgt, errors = folder / "pgt" / f"{case}.nii.gz", folder / "errors" / f"{case}.nii.gz"
        if not pgt.exists() and not errors.exists():
            raise InputError(f"neither the pseudo ground truth nor the error map of case {case} is there", pgt)
        inputs[case] = CaseInputs(image, seg, pgt if pgt.exists() else None, errors if errors.exists() else None)
    if "spread" not in table.columns:
        table["spread"] = math.nan
    worklist = read_worklist(folder / "worklist.csv") if (folder / "worklist.csv").exists() else None
    slices = read_table(folder / "qc_slices.csv") if (folder / "qc_slices.csv").exists() else None
    if slices is not None:
        slices = _numbers(slices, ["estimate"], folder / "qc_slices.csv")
    ref_name = "pGT" if any(files.ref is not None for files in inputs.values()) else ""
    return Cohort("qc", table, {"estimate": "est."}, inputs, ref_name, worklist=worklist, slices=slices)


def _load_benchmark(folder: Path) -> Cohort:
    cohort = _load_qc(folder / "qc")
    pairs = read_table(folder / "pairs.csv")
    require_columns(pairs, ["case", "label", "metric", "estimate", "true"], folder / "pairs.csv")
    pairs = _numbers(pairs, ["true"], folder / "pairs.csv")
    long = cohort.long.merge(pairs[["case", "label", "metric", "true"]], on=["case", "label", "metric"], how="left")
    cohort.kind, cohort.long = "benchmark", long
    cohort.values = {"estimate": "est.", "true": "true"}
    if (folder / "benchmark.csv").exists():
        cohort.summary = read_table(folder / "benchmark.csv")
    return cohort


def _load_evaluate(folder: Path) -> Cohort:
    table = read_table(folder / "metrics.csv")
    require_columns(table, ["case", "label", "label_name", "component", "metric", "value"], folder / "metrics.csv")
    table = _numbers(table, ["value"], folder / "metrics.csv")
    table = table[table["component"].isna()].drop(columns=["component"])
    if not len(table):
        raise InputError("holds no cases", folder / "metrics.csv")
    summary_path = folder / "summary.json"
    summary = read_json_object(summary_path, what="evaluation summary") if summary_path.exists() else {}
    recorded = _summary_inputs(summary)
    if not isinstance(recorded, dict):
        raise InputError("names no input files ('cases' / 'inputs'); rerun `segqc evaluate` with this version",
                         summary_path)
    inputs = {}
    for case in sorted(set(table["case"])):
        gt = recorded_file(recorded, case, "gt", summary_path)
        assert gt is not None
        pred = recorded_file(recorded, case, "pred", summary_path, required=False)
        inputs[case] = CaseInputs(None, pred if pred is not None else gt, gt)
    return Cohort("evaluate", table, {"value": "value"}, inputs, "GT")


def _check_class_values(path: Path) -> dict[str, str]:
    """Class name -> its label value (as text) from a check's ``volumes.csv``; empty when the file
    is missing or has no ``value`` column (per-class mask folders), or a name has two values."""
    if not path.is_file():
        return {}
    table = read_table(path)
    if not {"class", "value"} <= set(table.columns):
        return {}
    pairs = table[["class", "value"]].dropna().drop_duplicates()
    values = pd.to_numeric(pairs["value"], errors="coerce")
    if values.isna().any() or pairs["class"].duplicated().any():
        return {}
    return {str(name): str(int(value)) for name, value in zip(pairs["class"], values)}


def _load_check(folder: Path) -> Cohort:
    """A ``segqc labels check`` folder: one row per flag (label = the class's label value from
    ``volumes.csv``, the class itself where it has none; label name = class; metric = flag kind, value);
    the worklist in the order ``worklist.csv`` gives (worst cases first); every checked case, flagged
    or not, with its label map (and image, where one was checked)."""
    flags = read_table(folder / "flags.csv")
    require_columns(flags, ["case", "class", "flag", "value"], folder / "flags.csv")
    worklist = read_worklist(folder / "worklist.csv")
    require_columns(worklist, ["case", "flag", "reason"], folder / "worklist.csv")
    if not len(worklist):
        raise InputError("holds no cases", folder / "worklist.csv")
    summary_path = folder / "summary.json"
    summary = read_json_object(summary_path, what="check summary")
    recorded = _summary_inputs(summary)
    if not isinstance(recorded, dict):
        raise InputError("names no input files ('cases' / 'inputs')", summary_path)
    classes = flags["class"].astype(str)
    values = _check_class_values(folder / "volumes.csv")
    long = pd.DataFrame({"case": flags["case"].astype(str), "label": [values.get(c, c) for c in classes],
                         "label_name": classes, "metric": flags["flag"].astype(str),
                         "value": pd.to_numeric(flags["value"], errors="coerce")})
    inputs = {}
    for case in worklist["case"].astype(str):
        files = _case_files(recorded, case, summary_path) or {}
        labels = recorded_file(recorded, case, "labels", summary_path, required=False)
        if labels is not None:
            seg_path = labels
        elif files.get("masks"):
            combined = folder / "combined" / f"{case}.nii.gz"
            if not combined.is_file():
                raise InputError(f"case {case} is a folder of masks; review needs one label map per case", folder)
            seg_path = combined
        else:
            raise InputError(f"names no label map of case {case}", summary_path)
        image = recorded_file(recorded, case, "image", summary_path, required=False)
        inputs[case] = CaseInputs(image, seg_path, None)
    worklist = worklist.assign(case=worklist["case"].astype(str))
    return Cohort("check", long, {"value": "value"}, inputs, "", worklist=worklist, order=list(worklist["case"]),
                  classes={value: name for name, value in values.items()})


def detect(folder: Path) -> str:
    """Which segqc output ``folder`` holds: ``benchmark``, ``qc``, ``evaluate``, ``check``, ``quality``
    (``segqc labels quality``) or ``rank``."""
    if (folder / "pairs.csv").exists() and (folder / "qc" / "qc.csv").exists():
        return "benchmark"
    if (folder / "qc.csv").exists():
        return "qc"
    if (folder / "metrics.csv").exists():
        return "evaluate"
    if (folder / "flags.csv").exists():
        return "check"
    if (folder / "quality.csv").exists() and (folder / "organs.csv").exists():
        return "quality"
    if (folder / "ranking.csv").exists():
        return "rank"
    raise InputError("holds none of the outputs a report is made of (qc.csv of `segqc qc predict`, pairs.csv of "
                     "`segqc qc benchmark`, metrics.csv of `segqc evaluate`, flags.csv of `segqc labels check`, "
                     "quality.csv of `segqc labels quality`, ranking.csv of `segqc qc rank`)", folder)


def label_order(labels: list[str]) -> list[str]:
    def key(label: str) -> tuple[int, float, str]:
        if label == "all":
            return (0, 0.0, label)
        try:
            return (1, float(label), label)
        except ValueError:
            return (2, 0.0, label)
    return sorted(set(labels), key=key)


def primary_metric(long: pd.DataFrame) -> str:
    metrics = list(dict.fromkeys(long["metric"]))
    return "dice" if "dice" in metrics or not metrics else metrics[0]


def worse_is_lower(metric: str) -> bool:
    """Whether low values of ``metric`` are the bad ones (Dice: yes; a distance such as HD95: no),
    as the metric registry declares (``higher_is_better``); True for a name it does not know."""
    from segqc.metrics.registry import metric_info

    try:
        return metric_info(metric).higher_is_better
    except ValueError:
        return True


def worst_first_key(value: float | None, metric: str) -> float:
    """A sort key that puts the worst ``value`` of ``metric`` first (ascending); None sorts as 0."""
    if value is None:
        return 0.0
    return value if worse_is_lower(metric) else -value


def primary_scores(long: pd.DataFrame, metric: str) -> dict[str, float]:
    """Each case's value of ``metric`` that orders cases worst first: its estimate (else its
    value) for label ``all`` when the case has that label, else the value of its worst label (the
    lowest Dice, the largest distance: one failed class puts the case first, where a mean over
    its classes would hide it); cases without a finite one are left out."""
    column = next((c for c in ("estimate", "value") if c in long.columns), None)
    if column is None or not len(long):
        return {}
    rows = long[long["metric"] == metric]
    numbers = pd.to_numeric(rows[column], errors="coerce").where(lambda v: np.isfinite(v))
    with_all = set(long.loc[long["label"] == "all", "case"])
    overall = rows["label"] == "all"
    per_label = ~rows["case"].isin(with_all)
    scores = pd.concat([numbers[overall].groupby(rows.loc[overall, "case"]).first(),
                        numbers[per_label].groupby(rows.loc[per_label, "case"])
                        .agg("min" if worse_is_lower(metric) else "max")])
    return {str(case): float(value) for case, value in scores.items() if np.isfinite(value)}


def case_order(cohort: Cohort) -> list[str]:
    """The cases of ``cohort`` in the order a person should look at them: the output's own order
    where it has one (a check's flags; cases it lacks after it, by id), else worst first by
    :func:`primary_scores` of the primary metric, cases without one first. The report's pages and
    the review app's worklist both follow it."""
    if cohort.order is not None:
        listed = [c for c in dict.fromkeys(cohort.order) if c in cohort.inputs]
        seen = set(listed)
        return listed + [c for c in sorted(cohort.inputs) if c not in seen]
    metric = primary_metric(cohort.long)
    scores = primary_scores(cohort.long, metric)
    return sorted(cohort.inputs, key=lambda c: (c in scores, worst_first_key(scores.get(c), metric), c))


def label_names(long: pd.DataFrame) -> dict[str, str]:
    """The display name of every label of ``long`` (its first ``label_name``; "all classes" for
    ``all``; the label itself where the name is missing). One pass over the unique labels."""
    first = long[["label", "label_name"]].drop_duplicates("label")
    return {label: "all classes" if label == "all" else (name if isinstance(name, str) else label)
            for label, name in zip(first["label"], first["label_name"])}


def use_files(cohort: Cohort, *, images: str | Path | None = None, segs: str | Path | None = None) -> None:
    """Replace the image / segmentation files recorded in the output by those of the folders
    ``images`` / ``segs`` (first image channel). A case is found by its id, by the case its
    segmentation segments (``manifest.csv`` of ``segqc degrade``), by the case of its recorded
    reference file (an evaluation of degraded segmentations), or by its id without a trailing
    ``_NN`` variant suffix. Raises :class:`InputError` naming the folder that lacks a case."""
    images = Path(images) if images is not None else None
    segs = Path(segs) if segs is not None else None
    from segqc.io.datasets import case_id as case_id_of
    from segqc.io.datasets import list_image_files, segmentation_files

    image_files = list_image_files(images) if images is not None else {}
    seg_files = segmentation_files(segs).files if segs is not None else {}
    for case_id, inputs in cohort.inputs.items():
        if segs is not None:
            if case_id not in seg_files:
                raise InputError(f"holds no segmentation of case '{case_id}'", segs)
            inputs.seg = seg_files[case_id][1]
            inputs.uncertainty = uncertainty_file(segs, case_id, inputs.seg)
        if images is not None:
            source = seg_files[case_id][0] if case_id in seg_files else case_id
            found = image_files.get(source) or image_files.get(case_id)
            if not found and inputs.ref is not None:  # e.g. a degraded case: the case its reference is of
                found = image_files.get(case_id_of(inputs.ref))
            if not found and "_" in case_id:
                found = image_files.get(case_id.rsplit("_", 1)[0])
            if not found:
                raise InputError(f"holds no image of case '{case_id}'", images)
            inputs.image = found[0]


def uncertainty_file(folder: Path, case: str, seg: Path) -> Path | None:
    """The uncertainty map of a case: ``folder/uncertainty/CASE.nii.gz``, else the file of the
    segmentation's name in ``uncertainty/`` beside the segmentation (what ``segqc seg predict``
    writes); None when neither exists."""
    for candidate in (folder / "uncertainty" / f"{case}.nii.gz", seg.parent / "uncertainty" / seg.name):
        if candidate.is_file():
            return candidate
    return None


def load_cohort(folder: Path, kind: str | None = None) -> Cohort:
    """The :class:`Cohort` of a ``qc``, ``benchmark`` or ``evaluate`` folder (``kind`` as
    :func:`detect` names it; detected when None). Raises :class:`InputError` for a ``rank``
    folder, a folder of none of these kinds, or one whose recorded input files are missing."""
    kind = kind or detect(folder)
    loaders = {"qc": _load_qc, "benchmark": _load_benchmark, "evaluate": _load_evaluate, "check": _load_check}
    if kind == "quality":
        raise InputError("is a `segqc labels quality` folder: it has tables per dataset and organ, no cases to open",
                         folder)
    if kind not in loaders:
        raise InputError("is a `segqc qc rank` folder; open one model's QC folder inside it", folder)
    cohort = loaders[kind](folder)
    for case, inputs in cohort.inputs.items():
        inputs.uncertainty = uncertainty_file(folder, case, inputs.seg)
    return cohort
