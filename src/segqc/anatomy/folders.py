"""Folder drivers of ``segqc labels map``, ``merge`` and ``rules``: cases through the case engine
(content-keyed, resumable, ``jobs`` / Dask), label maps read and written with their geometry.

Sources: a folder of label maps (cases by file name, ``CASE.nii.gz``) or one file (then the run
has one case, named by ``case`` or the first file). Each source comes with the mapping from its
own scheme to the target scheme (``None``: it is in the target scheme already).

``merge`` writes ``OUT/merged/CASE.nii.gz`` (target scheme), ``OUT/provenance/CASE.nii.gz``
(1-based source index that won each voxel, 0 = no source), ``OUT/classes.csv`` (per case, class
and source: voxels claimed and won, and the merged volume in ml as source ``merged``),
``OUT/conflicts.csv`` (per case and source pair: voxels where both labelled different classes, by
class pair), ``OUT/scheme.yaml`` (the target scheme), ``OUT/mapping_<source>.csv`` (how each
source's classes were mapped) and ``OUT/summary.json``. Sources on another grid than the
reference (``reference``: a file, or the first source's map of the case) are resampled onto it
(nearest neighbour, physical space) with a warning per case; a case missing from some sources is
merged from the others with a warning naming them.

A folder without label maps stops the run (:class:`InputError`). A rerun into the same output
folder removes the output maps of the cases that the previous run of the same command reported
done and this run did not write (an input removed since, a case that fails now, a region no
longer asked for), with a warning listing them; other files are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from segqc.anatomy.mapping import LabelMapping
from segqc.anatomy.merge import STRATEGIES, merge_label_maps
from segqc.anatomy.rules import CHANGE_COLUMNS, RuleSet, apply_rules
from segqc.anatomy.scheme import LabelScheme
from segqc.errors import InputError
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.io.atomic import atomic_path, write_csv_atomic, write_json_atomic
from segqc.io.datasets import case_id, list_label_files
from segqc.io.geometry import Geometry, check_same_geometry
from segqc.io.images import read_image, read_label_map, resample_nearest, write_image
from segqc.metrics.counts import value_counts

__all__ = ["LabelSource", "label_files", "map_folder", "merge_folders", "read_metadata", "rules_folder", "source_cases"]

_MAP_SUMMARY = "segqc-labels-map-summary"
_MERGE_SUMMARY = "segqc-labels-merge-summary"
_RULES_SUMMARY = "segqc-labels-rules-summary"


@dataclass(frozen=True)
class LabelSource:
    """A folder or file of label maps, its display name and its mapping to the target scheme."""

    path: Path
    name: str
    mapping: LabelMapping | None = None


def source_cases(sources: Sequence[LabelSource], *, case: str | None = None) -> dict[str, list[Path | None]]:
    """Case id -> one file per source (None where a source lacks the case). All sources files:
    one case; all folders: the union of their case ids; a mixture is an :class:`InputError`."""
    kinds = {s.path.is_dir() for s in sources}
    for source in sources:
        if not source.path.exists():
            raise InputError("no such file or folder", source.path)
    if kinds == {False}:
        return {case or case_id(sources[0].path): [s.path for s in sources]}
    if kinds != {True}:
        raise InputError("sources must be all folders (cases by file name) or all single files", sources[0].path)
    listed = [label_files(s.path) for s in sources]
    ids = sorted(set().union(*listed))
    return {c: [files.get(c) for files in listed] for c in ids}


def label_files(path: Path) -> dict[str, Path]:
    """Case id -> label map of a folder (``CASE.nii.gz``, ...), or of one file. A missing path or a
    folder without label maps raises :class:`InputError` naming it."""
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_file():
        return {case_id(path): path}
    files = list_label_files(path)
    if not files:
        raise InputError("holds no label maps (CASE.nii.gz)", path)
    return files


def _read_on_grid(path: Path, reference: Geometry | None) -> tuple[np.ndarray, Geometry, bool]:
    image = read_label_map(path)
    if reference is None:
        return image.array, image.geometry, False
    try:
        check_same_geometry(image.geometry, reference, pred_path=path)
        return image.array, reference, False
    except InputError:
        return resample_nearest(image, reference).array, reference, True


def merge_case(task: CaseTask, *, scheme: LabelScheme, sources: Sequence[LabelSource], strategy: str,
               priority: Sequence[int] | None, out_dir: Path) -> CaseResult:
    """Merge the sources of one case (module docstring)."""
    files: list[Path | None] = task.payload
    reference = task.path("reference")
    geometry = read_image(reference, dtype=None).geometry if reference is not None else None
    arrays: list[np.ndarray] = []
    warnings = []
    missing = [s.name for s, f in zip(sources, files, strict=True) if f is None]
    if missing:
        warnings.append(f"{task.case}: not in source(s) {', '.join(missing)}; merged from the others")
    resampled = []
    present = [(s, f) for s, f in zip(sources, files, strict=True) if f is not None]
    for source, path in present:
        array, geometry_here, moved = _read_on_grid(path, geometry)
        if geometry is None:
            geometry = geometry_here
        if moved:
            resampled.append(source.name)
        mapping = source.mapping
        if mapping is None:
            scheme.check_values(array, path, hint="give this source a mapping")
        arrays.append(mapping.apply(array, path) if mapping is not None else array)
    if resampled:
        warnings.append(f"{task.case}: {', '.join(resampled)} resampled onto the reference grid (nearest neighbour)")
    assert geometry is not None
    names = [s.name for s, _ in present]
    order = None
    if priority is not None:
        index = {s.name: i for i, (s, _) in enumerate(present)}
        order = [index[sources[i].name] for i in priority if sources[i].name in index]
    result = merge_label_maps(arrays, scheme, strategy=strategy, priority=order, names=names)
    # the provenance map holds the index among ALL sources (1-based), whatever a case lacks
    all_index = np.array([0] + [[s.name for s in sources].index(n) + 1 for n in names], dtype=np.uint16)
    provenance = all_index[result.provenance].astype(np.uint8 if len(sources) < 255 else np.uint16)
    write_image(out_dir / "merged" / f"{task.case}.nii.gz", result.merged, geometry)
    write_image(out_dir / "provenance" / f"{task.case}.nii.gz", provenance, geometry)
    ml = float(np.prod(geometry.spacing)) / 1000.0
    classes = result.classes.copy()
    merged_rows = pd.DataFrame([{"class": scheme.name_of(v), "value": v, "source": "merged", "claimed": n, "won": n}
                                for v, n in zip(*(a.tolist() for a in value_counts(result.merged)), strict=True)
                                if v])
    classes = pd.concat([classes, merged_rows], ignore_index=True) if len(merged_rows) else classes
    classes.insert(0, "case", task.case)
    classes["won_ml"] = classes["won"] * ml
    conflicts = result.conflicts.copy()
    conflicts.insert(0, "case", task.case)
    conflicts["ml"] = conflicts["voxels"] * ml
    return CaseResult(table=classes, extra={"conflicts": conflicts}, warnings=warnings,
                      files=[f"merged/{task.case}.nii.gz", f"provenance/{task.case}.nii.gz"])


def merge_folders(sources: Sequence[LabelSource], scheme: LabelScheme, out_dir: str | Path, *,
                  strategy: str = "hierarchy", priority: Sequence[int] | None = None, reference: Path | None = None,
                  case: str | None = None, jobs: int = 1, scheduler: Any = None,
                  progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, RunReport]:
    """Merge every case of ``sources`` into ``scheme`` (module docstring); ``priority``: source
    indices (0-based), most trusted first. Returns (classes table, conflicts table, run report)."""
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    seen: dict[str, Path] = {}
    for source in sources:
        if source.name in seen:
            raise InputError(f"two sources have the same name {source.name!r} ({seen[source.name]} and "
                             f"{source.path}); name them with --names")
        seen[source.name] = source.path
    if priority is not None and sorted(priority) != list(range(len(sources))):
        raise InputError(f"priority must list each of the {len(sources)} sources once")
    out = Path(out_dir)
    cases = source_cases(sources, case=case)
    tasks = []
    single = reference is not None and reference.is_file()  # one reference map for every case
    references = _reference_files(reference) if reference is not None and not single else {}
    if reference is not None and not single and not references:
        raise InputError("no reference file (CASE.nii.gz or an image CASE_0000.nii.gz) in this folder", reference)
    unmatched: dict[str, str] = {}
    for case_name, files in cases.items():
        inputs: dict[str, tuple[Path, ...]] = {f"source{i + 1}": (f,) for i, f in enumerate(files) if f is not None}
        if reference is not None:
            ref = reference if single else references.get(case_name)
            if ref is None:
                unmatched[case_name] = f"{reference}: no reference file of case {case_name}"
                continue
            inputs["reference"] = (ref,)
        tasks.append(CaseTask(case_name, inputs, payload=files))
    settings = {"format": "segqc-labels-merge", "scheme": scheme.to_dict(), "strategy": strategy,
                "priority": None if priority is None else list(priority),
                "sources": [{"name": s.name, "mapping": None if s.mapping is None else
                             {str(k): v for k, v in s.mapping.values.items()}} for s in sources]}
    function = partial(merge_case, scheme=scheme, sources=list(sources), strategy=strategy, priority=priority,
                       out_dir=out)
    report = run_cases(function, tasks, out, settings=settings, jobs=jobs, scheduler=scheduler, progress=progress,
                       description="merge")
    report.failed.update(unmatched)
    classes = report.table if len(report.table) else pd.DataFrame(
        columns=["case", "class", "value", "source", "claimed", "won", "won_ml"])
    conflicts = report.extra.get("conflicts", pd.DataFrame())
    if not len(conflicts):
        conflicts = pd.DataFrame(columns=["case", "source_a", "source_b", "class_a", "class_b", "voxels", "ml"])
    write_csv_atomic(out / "classes.csv", classes)
    write_csv_atomic(out / "conflicts.csv", conflicts)
    scheme.save(out / "scheme.yaml")
    for source in sources:
        if source.mapping is not None:
            write_csv_atomic(out / f"mapping_{source.name}.csv", source.mapping.table())
    pairs = (conflicts.groupby(["source_a", "source_b"])["voxels"].sum().reset_index()
             if len(conflicts) else pd.DataFrame(columns=["source_a", "source_b", "voxels"]))
    write_json_atomic(out / "summary.json", {
        "format": _MERGE_SUMMARY, "scheme": scheme.name, "strategy": strategy,
        "priority": [sources[i].name for i in (priority if priority is not None else range(len(sources)))],
        "provenance_values": {str(i + 1): s.name for i, s in enumerate(sources)},
        "sources": [{"name": s.name, "path": str(s.path), "scheme": s.mapping.source.name if s.mapping else scheme.name}
                    for s in sources],
        "conflict_voxels_per_pair": pairs.to_dict("records"),
        "cases": report.cases_dict()})
    return classes, conflicts, report


def _reference_files(folder: Path) -> dict[str, Path]:
    """The reference file of every case in ``folder``, listed once: ``CASE.*``, else an image
    channel ``CASE_0000.*`` (a case's own name wins over a channel name)."""
    files = list_label_files(folder)
    by_channel = {case_id(p, channel=True): p for p in files.values()}
    return {**by_channel, **files}


def map_case(task: CaseTask, *, mapping: LabelMapping, out_dir: Path) -> CaseResult:
    """Map one label map (module docstring of :mod:`segqc.anatomy.mapping`); write it and its
    regions (``OUT/regions/<region>/CASE.nii.gz``)."""
    path = task.path("labels")
    assert path is not None
    image = read_label_map(path)
    present, _ = value_counts(image.array)  # once: the mapping's check and the dropped classes
    mapped = mapping.apply(image.array, path, present=present)
    written = [f"{task.case}.nii.gz"]
    write_image(out_dir / written[0], mapped, image.geometry)
    for region, mask in mapping.region_masks(mapped).items():
        name = f"regions/{region}/{task.case}.nii.gz"
        write_image(out_dir / name, mask.astype(np.uint8), image.geometry)
        written.append(name)
    before = set(present.tolist())
    ml = float(np.prod(image.geometry.spacing)) / 1000.0
    rows = [{"case": task.case, "class": mapping.target.name_of(v), "value": v, "voxels": n, "ml": n * ml}
            for v, n in zip(*(a.tolist() for a in value_counts(mapped)), strict=True) if v]
    dropped = [int(v) for v in mapping.dropped if v in before]
    warnings = [f"{task.case}: dropped {', '.join(mapping.source.name_of(v) for v in dropped)}"] if dropped else []
    return CaseResult(table=pd.DataFrame(rows, columns=["case", "class", "value", "voxels", "ml"]),
                      warnings=warnings, files=written)


def map_folder(in_path: str | Path, mapping: LabelMapping, out_dir: str | Path, *, jobs: int = 1,
               scheduler: Any = None, progress: bool = False) -> tuple[pd.DataFrame, RunReport]:
    """Map every label map of a folder (or one file) into ``mapping.target``; writes
    ``OUT/CASE.nii.gz``, regions, ``OUT/classes.csv``, ``OUT/mapping.csv``, ``OUT/scheme.yaml``."""
    in_path, out = Path(in_path), Path(out_dir)
    files = label_files(in_path)
    tasks = [CaseTask(c, {"labels": (p,)}) for c, p in files.items()]
    settings = {"format": "segqc-labels-map", "values": {str(k): v for k, v in mapping.values.items()},
                "regions": {k: list(v) for k, v in mapping.regions.items()}}
    report = run_cases(partial(map_case, mapping=mapping, out_dir=out), tasks, out, settings=settings, jobs=jobs,
                       scheduler=scheduler, progress=progress, description="map")
    table = report.table if len(report.table) else pd.DataFrame(columns=["case", "class", "value", "voxels", "ml"])
    write_csv_atomic(out / "classes.csv", table)
    write_csv_atomic(out / "mapping.csv", mapping.table())
    mapping.target.save(out / "scheme.yaml")
    write_json_atomic(out / "summary.json", {"format": _MAP_SUMMARY, "source": mapping.source.name,
                                             "target": mapping.target.name, "invertible": mapping.invertible,
                                             "cases": report.cases_dict()})
    return table, report


def read_metadata(path: str | Path) -> dict[str, dict[str, Any]]:
    """Case metadata from a CSV with a ``case`` column (e.g. ``case,sex``): case id -> row. A
    missing ``case`` column or a repeated case raises :class:`InputError` naming the file."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the metadata table: {str(error).splitlines()[0]}", path) from None
    if "case" not in table.columns:
        raise InputError(f"the metadata table needs a 'case' column (has {', '.join(table.columns)})", path)
    repeated = table["case"][table["case"].duplicated()].tolist()
    if repeated:
        raise InputError(f"case {repeated[0]!r} appears twice", path)
    return {str(row["case"]): dict(row) for row in table.to_dict("records")}


def rules_case(task: CaseTask, *, rules: RuleSet, out_dir: Path) -> CaseResult:
    """Apply ``rules`` to one label map; write ``OUT/CASE.nii.gz``; rows = the change log."""
    path = task.path("labels")
    assert path is not None
    image = read_label_map(path)
    if image.array.ndim != 3:
        raise InputError(f"is {image.array.ndim}D; rules need 3D label maps", path)
    rules.scheme.check_values(image.array, path)
    fixed, changes = apply_rules(image.array, image.geometry, rules, metadata=task.settings or {})
    write_image(out_dir / f"{task.case}.nii.gz", fixed.astype(image.array.dtype, copy=False), image.geometry)
    changes.insert(0, "case", task.case)
    changes["ml"] = changes["voxels"] * float(np.prod(image.geometry.spacing)) / 1000.0
    return CaseResult(table=changes, files=[f"{task.case}.nii.gz"])


def rules_folder(in_path: str | Path, rules: RuleSet, out_dir: str | Path, *,
                 metadata: dict[str, dict[str, Any]] | None = None, jobs: int = 1, scheduler: Any = None,
                 progress: bool = False) -> tuple[pd.DataFrame, RunReport]:
    """Apply ``rules`` to every label map of a folder (or one file): ``OUT/CASE.nii.gz`` (fixed
    maps), ``OUT/changes.csv`` (case, step, rule, class_from, class_to, voxels, detail, ml),
    ``OUT/rules.yaml`` (the rules used) and ``OUT/summary.json``. ``metadata``: case -> row (the
    ``sex`` rule reads ``sex``); a case's row is part of its cache key."""
    in_path, out = Path(in_path), Path(out_dir)
    files = label_files(in_path)
    metadata = metadata or {}
    tasks = [CaseTask(c, {"labels": (p,)}, settings=metadata.get(c, {})) for c, p in files.items()]
    settings = {"format": "segqc-labels-rules", "rules": rules.to_dict(), "scheme": rules.scheme.to_dict()}
    report = run_cases(partial(rules_case, rules=rules, out_dir=out), tasks, out, settings=settings, jobs=jobs,
                       scheduler=scheduler, progress=progress, description="rules")
    columns = ["case", *CHANGE_COLUMNS, "ml"]
    table = report.table if len(report.table) else pd.DataFrame(columns=columns)
    write_csv_atomic(out / "changes.csv", table)
    with atomic_path(out / "rules.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(rules.to_dict(), sort_keys=False))
    changed = table[table["voxels"] > 0] if len(table) else table
    write_json_atomic(out / "summary.json", {
        "format": _RULES_SUMMARY, "rules": rules.name, "scheme": rules.scheme.name,
        "voxels_changed_per_rule": {str(k): int(v) for k, v in changed.groupby("rule")["voxels"].sum().items()},
        "cases_changed": sorted(changed["case"].unique().tolist()) if len(changed) else [],
        "cases": report.cases_dict()})
    return table, report
