"""Several GT-free QC runs of the same segmentations, combined into one: the mean of their estimates.

Two QC methods that err differently (nnQC's pseudo ground truth, QCResUNet's regression) estimate
real models' segmentations better together than either alone (docs/evidence.md, "The NSD of both
methods"). :func:`combine_estimates` takes the ``qc.csv`` tables of such runs and returns one
table: per case, label and metric present in every run, ``estimate`` = the mean of the runs'
estimates and ``spread`` = their standard deviation (ddof 0; for two runs half their difference)
— how much the methods disagree, the combined run's own uncertainty. A run that estimates a value
as NaN (nothing to compare, e.g. an empty segmentation's HD95) makes the combined value NaN too:
one method's "cannot say" is not outvoted. ``empty`` is kept where every run agrees on it.

:func:`combine_qc_folders` does that for ``segqc qc predict`` output folders and writes a folder of
the same kind (``qc.csv``, ``worklist.csv``, ``report.json`` with the first run's input files,
and the ``pgt/`` and ``errors/`` maps of the runs that made them), so ``segqc report`` and
``segqc review`` read it like any QC run. Runs whose ``report.json`` records another
segmentation file of the same case (another path holding other content) are refused, and so is
one folder given twice: neither mean would be an estimate of one segmentation by several methods.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.execution.cache import file_digest
from segqc.io.atomic import atomic_path, write_csv_atomic, write_json_atomic
from segqc.io.json_files import read_json_object
from segqc.qc.inference import MAP_KINDS

KEYS = ["case", "label", "metric"]
_REQUIRED = ["case", "label", "label_name", "metric", "estimate"]


def combine_estimates(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean (``estimate``) and standard deviation (``spread``) of two or more QC tables'
    estimates, per (case, label, metric) present in all of them; rows in the order of the first
    table. A NaN estimate in any table gives NaN. Raises ``ValueError`` for fewer than two tables."""
    if len(tables) < 2:
        raise ValueError("combining needs two or more QC tables")
    first = tables[0]
    merged = first[KEYS + ["label_name"]].copy()
    estimates, empties = [], []
    for index, table in enumerate(tables):
        part = table[KEYS + ["estimate"] + (["empty"] if "empty" in table.columns else [])]
        part = part.rename(columns={"estimate": f"estimate{index}", "empty": f"empty{index}"})
        merged = merged.merge(part, on=KEYS, how="inner")
        estimates.append(f"estimate{index}")
        if f"empty{index}" in merged.columns:
            empties.append(f"empty{index}")
    values = merged[estimates].to_numpy(dtype=float)
    out = merged[KEYS + ["label_name"]].copy()
    out["estimate"] = values.mean(axis=1)  # NaN wherever any run gave NaN
    out["spread"] = values.std(axis=1)
    if empties:
        flags = merged[empties].astype("object")
        agreed = flags.nunique(axis=1, dropna=False) == 1
        out["empty"] = np.where(agreed, flags.iloc[:, 0], None)
    columns = ["case", "label", "label_name", "metric", "estimate", "spread"] + (["empty"] if empties else [])
    return out[columns].reset_index(drop=True)


def _read_run(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    from segqc.report.cohort import read_table, require_columns

    path = folder / "qc.csv"
    if not path.is_file():
        raise InputError("no qc.csv here; give folders written by `segqc qc predict`", folder)
    table = read_table(path)
    require_columns(table, _REQUIRED, path)
    table["estimate"] = _numbers(table, "estimate", path)
    if table.duplicated(KEYS).any():
        raise InputError("holds a case, label and metric more than once", path)
    report_path = folder / "report.json"
    report = read_json_object(report_path, what="QC report") if report_path.is_file() else {}
    return table, report


def _numbers(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """``column`` as floats (empty cells: NaN); a value that is not a number is an
    :class:`InputError` naming the file, the column and the line."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise InputError(f"column '{column}' holds {table[column].iloc[row]!r} on line {row + 2} (case "
                         f"{table['case'].iloc[row]}), not a number", path)
    return values.astype(float)


def _check_distinct(sources: Sequence[Path]) -> None:
    """Refuse a QC folder given twice: a run combined with itself agrees with itself perfectly
    (spread 0), which would read as two methods agreeing."""
    seen: set[Path] = set()
    for source in sources:
        key = source.resolve()
        if key in seen:
            raise InputError("is given twice; combine the runs of different QC models, each once", source)
        seen.add(key)


def _recorded_segmentation(report: dict[str, Any], case: str) -> Path | None:
    """The segmentation file a run's ``report.json`` records for ``case`` (None: not recorded)."""
    inputs = report.get("inputs")
    files = inputs.get(case) if isinstance(inputs, dict) else None
    segs = files.get("seg") if isinstance(files, dict) else None
    return Path(segs[0]) if isinstance(segs, list) and segs and isinstance(segs[0], str) else None


def _same_file(first: Path, second: Path) -> bool | None:
    """Whether two recorded segmentation files are the same segmentation: the same path, or two
    files of the same content; None when that cannot be told (a file is gone or unreadable)."""
    if first == second or first.resolve() == second.resolve():
        return True
    try:
        return file_digest(first) == file_digest(second)
    except OSError:
        return None


def _check_same_segmentations(sources: Sequence[Path], reports: Sequence[dict[str, Any]],
                              cases: Sequence[str]) -> list[str]:
    """Refuse runs that checked different segmentations under one case id (their mean would
    average the quality of two segmentations); returns a warning naming the cases whose files
    could not be compared (moved or deleted since)."""
    unknown = []
    for case in cases:
        first = next(((s, f) for s, r in zip(sources, reports) if (f := _recorded_segmentation(r, case))), None)
        if first is None:
            continue
        for source, report in zip(sources, reports):
            other = _recorded_segmentation(report, case)
            if other is None:
                continue
            same = _same_file(first[1], other)
            if same is False:
                raise InputError(f"checked another segmentation of case {case} ({other}) than {first[0]} did "
                                 f"({first[1]}); combine runs of the same segmentations", source)
            if same is None:
                unknown.append(case)
                break
    if not unknown:
        return []
    return [f"{len(unknown)} case(s) ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}): the "
            "segmentation files the runs recorded differ and are no longer all readable, so whether the runs "
            "checked the same segmentations was not verified"]


def _copy_maps(sources: Sequence[Path], cases: Sequence[str], out_dir: Path) -> list[str]:
    """Copy each kind of map (pseudo ground truths, error maps) of ``cases`` from the first run that
    has it, and remove every other file from the output's map folders (maps of an earlier
    combination of other runs or cases); returns the kinds copied."""
    copied = []
    for kind in MAP_KINDS:
        source = next((s for s in sources if (s / kind).is_dir()), None)
        written: set[str] = set()
        for case in cases:
            origin = source / kind / f"{case}.nii.gz" if source is not None else None
            if origin is not None and origin.is_file():
                with atomic_path(out_dir / kind / origin.name) as tmp:
                    shutil.copyfile(origin, tmp)
                written.add(origin.name)
        folder = out_dir / kind
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.name not in written and (path.is_file() or path.is_symlink()):
                    path.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
        if written:
            copied.append(kind)
    return copied


def combine_qc_folders(qc_dirs: Sequence[str | Path], out_dir: str | Path, *,
                       flag_dice: float = 0.75) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Combine ``segqc qc predict`` folders (two or more, e.g. nnQC's and QCResUNet's of the same
    segmentations) into ``out_dir``; returns (qc table, worklist, report dict). Only the cases,
    labels and metrics every run estimated are kept; the rest is named in the report's warnings.
    Raises :class:`InputError` for a folder without a readable ``qc.csv``, fewer than two folders,
    a folder given twice, runs that share no case, or runs whose ``report.json`` records
    different segmentation files for one case (other paths of other content: a copy of the same
    file is the same segmentation)."""
    from segqc.qc.inference import QcSettings, worklist

    sources = [Path(d) for d in qc_dirs]
    if len(sources) < 2:
        raise InputError("combining needs at least two QC folders")
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == s.resolve() for s in sources):
        raise InputError("the output folder is one of the QC folders to combine", out_dir)
    _check_distinct(sources)
    runs = [_read_run(s) for s in sources]
    tables = [table for table, _ in runs]
    combined = combine_estimates(tables)
    if combined.empty:
        raise InputError("the QC folders share no case, label and metric: were they run on the same segmentations?",
                         sources[1])
    warnings = _check_same_segmentations(sources, [report for _, report in runs], sorted(set(combined["case"])))
    for source, table in zip(sources, tables):
        dropped = table[KEYS].merge(combined[KEYS], on=KEYS, how="left", indicator=True)
        dropped = dropped[dropped["_merge"] == "left_only"]
        if len(dropped):
            warnings.append(f"{source}: {len(dropped)} estimates not in every run left out "
                            f"(metrics {', '.join(sorted(set(dropped['metric'])))}; "
                            f"{dropped['case'].nunique()} case(s))")
    settings = QcSettings(flag_dice=flag_dice)
    work = worklist(combined, settings)
    cases = sorted(set(combined["case"]))
    write_csv_atomic(out_dir / "qc.csv", combined)
    write_csv_atomic(out_dir / "worklist.csv", work)
    maps = _copy_maps(sources, cases, out_dir)
    reports = [report for _, report in runs]
    inputs = next((r["inputs"] for r in reports if isinstance(r.get("inputs"), dict)), None)
    result: dict[str, Any] = {
        "method": "combined", "combined": [{"folder": str(s), "method": r.get("method"), "model": r.get("model")}
                                           for s, r in zip(sources, reports)],
        "estimate": "mean of the runs' estimates; spread: their standard deviation",
        "cases": len(cases), "warnings": warnings, "maps": maps,
        "settings": {"flag_dice": flag_dice},
    }
    if inputs is not None:
        result["inputs"] = {case: inputs[case] for case in cases if case in inputs}
    classes = next((r["classes"] for r in reports if r.get("classes")), None)
    if classes is not None:
        result["classes"] = classes
    write_json_atomic(out_dir / "report.json", result)
    return combined, work, result
