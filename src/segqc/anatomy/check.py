"""``segqc labels check``: the anatomical flags (:mod:`segqc.anatomy.flags`) of one case
(:func:`check_case`, settings in :class:`CheckConfig`) and of a folder of label maps or per-class
masks through the case engine (:func:`check_folder`: ``flags.csv``, ``volumes.csv``,
``worklist.csv``, ``summary.json``), and the reference volumes of the ``volume_z`` flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from segqc.anatomy.flags import (
    AIR_ALLOWED,
    FILL_HOLES,
    FLAG_COLUMNS,
    FLAGS,
    SEVERITY,
    body_mask,
    class_volumes,
    flag_components,
    flag_fov_border,
    flag_geometry,
    flag_in_air,
    flag_left_right,
    flag_merged_vertebrae,
    flag_outside_body,
    flag_overlap,
    flag_region,
    flag_table,
    flag_volume_z,
)
from segqc.anatomy.scheme import LabelScheme
from segqc.anatomy.tables import AnatomyTables, load_anatomy_tables
from segqc.config import ConfigBase, register_presets
from segqc.errors import InputError
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import case_id, list_image_files, list_label_files
from segqc.io.geometry import Geometry, geometry_differences
from segqc.io.images import read_image, read_label_map
from segqc.metrics.masks import label_boxes

__all__ = [
    "CheckConfig",
    "CheckResult",
    "check_case",
    "check_folder",
    "combine_masks",
    "load_reference",
    "read_mask_folder",
    "reference_volumes",
    "worklist",
]

_IMAGE_FLAGS = ("outside_body", "in_air")
_RANK = {"error": 2, "warning": 1}


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckConfig(ConfigBase):
    """Thresholds of the checks (:mod:`segqc.anatomy.flags`; mm, ml, HU). ``flags``: the checks to run;
    ``rules``: the rule preset (a shipped name or a YAML file) that names the body regions, the
    classes that occur once, the vertebra order (:func:`load_anatomy_tables`)."""

    KIND: ClassVar[str] = "labels-check"
    LABEL: ClassVar[str] = "labels check"

    flags: tuple[str, ...] = FLAGS
    rules: str = "dap_total"
    body_hu: float = -500.0
    fill_holes: str = "both"
    outside_margin_mm: float = 3.0
    outside_min_ml: float = 0.5
    air_hu: float = -500.0
    air_max_fraction: float = 0.05
    air_allowed: tuple[str, ...] = AIR_ALLOWED
    fov_max_voxels: int = 0
    region_max_outside: float = 0.25
    midline: tuple[str, ...] = ("vertebrae", "sternum")
    side_min_distance_mm: float = 5.0
    side_max_tilt_degrees: float = 30.0
    vertebra_height_factor: float = 1.6
    vertebra_window: int = 3
    vertebra_relative_height: Mapping[str, float] = field(default_factory=lambda: {"vertebrae_C2": 2.0})
    max_components: int = 1
    component_min_ml: float = 0.1
    overlap_max_voxels: int = 0
    volume_max_abs_z: float = 3.0

    def __post_init__(self) -> None:
        for name in ("flags", "air_allowed", "midline"):
            value = getattr(self, name)
            value = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "vertebra_relative_height",
                           {str(k): float(v) for k, v in dict(self.vertebra_relative_height).items()})
        unknown = [f for f in self.flags if f not in FLAGS]
        if unknown:
            raise ValueError(f"unknown flag(s) {', '.join(unknown)}; known: {', '.join(FLAGS)}")
        if self.fill_holes not in FILL_HOLES:
            raise ValueError(f"fill_holes must be one of {', '.join(FILL_HOLES)}, not {self.fill_holes!r}")
        for name in ("outside_margin_mm", "outside_min_ml", "air_max_fraction", "fov_max_voxels",
                     "region_max_outside", "side_min_distance_mm", "component_min_ml", "overlap_max_voxels"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.vertebra_height_factor > 1 or self.vertebra_window < 1 or self.max_components < 1:
            raise ValueError("vertebra_height_factor must be > 1, vertebra_window and max_components >= 1")
        if not self.volume_max_abs_z > 0:
            raise ValueError(f"volume_max_abs_z must be > 0, got {self.volume_max_abs_z}")


register_presets(CheckConfig, {"default": CheckConfig()})


def reference_volumes(table: pd.DataFrame, *, source: str | Path | None = None,
                      scheme: LabelScheme | None = None) -> pd.DataFrame:
    """A reference (class, mean_ml, sd_ml, n) from a table that is one already (columns class,
    mean_ml, sd_ml) or from per-case volumes (case, class or organ, volume_ml or ml): mean and sample
    SD per class over the cases where it is present (volume > 0), classes with at least 2 cases.
    Missing columns, a value that is not a number (an empty cell is no value), a negative sd_ml
    and, with ``scheme``, a class name the scheme does not have raise :class:`InputError` naming
    ``source``."""
    columns = {c.lower(): c for c in table.columns}
    name_column = columns.get("class") or columns.get("organ") or columns.get("label_name")
    if name_column is None:
        raise InputError("a reference needs a 'class' (or 'organ') column", source)
    names = table[name_column].astype(str)
    if scheme is not None:
        unknown = [n for n in dict.fromkeys(names) if n not in scheme.by_name]
        if unknown:
            raise InputError(f"class {unknown[0]!r} is not in the scheme {scheme.name!r}"
                             + (f" (nor {', '.join(map(repr, unknown[1:4]))})" if len(unknown) > 1 else ""), source)

    def numbers(column: str) -> pd.Series:
        raw = table[columns[column]]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{columns[column]} of {names.iloc[row]!r} (row {row + 2}) is not a number: "
                             f"{raw.iloc[row]!r}", source)
        return values

    if "mean_ml" in columns and "sd_ml" in columns:
        out = pd.DataFrame({"class": names, "mean_ml": numbers("mean_ml"), "sd_ml": numbers("sd_ml")})
        negative = np.flatnonzero((out["sd_ml"] < 0).to_numpy())
        if len(negative):
            row = int(negative[0])
            raise InputError(f"sd_ml of {names.iloc[row]!r} (row {row + 2}) is negative: {out['sd_ml'].iloc[row]}; a "
                             "standard deviation is at least 0 (0 or empty: the class is not scored)", source)
        out["n"] = numbers("n") if "n" in columns else np.nan
        return out.reset_index(drop=True)
    volume_column = "volume_ml" if "volume_ml" in columns else "ml" if "ml" in columns else None
    if volume_column is None:
        raise InputError("a reference needs columns class, mean_ml, sd_ml, or case, class, volume_ml", source)
    volumes = pd.DataFrame({"class": names, "volume_ml": numbers(volume_column)})
    volumes = volumes[volumes["volume_ml"] > 0]
    grouped = volumes.groupby("class", sort=True)["volume_ml"]
    out = pd.DataFrame({"mean_ml": grouped.mean(), "sd_ml": grouped.std(ddof=1), "n": grouped.size()})
    out = out[out["n"] >= 2].reset_index()
    return out[["class", "mean_ml", "sd_ml", "n"]]


def load_reference(path: str | Path, *, scheme: LabelScheme | None = None) -> pd.DataFrame:
    """:func:`reference_volumes` of a CSV file; an unreadable file, a value that is not a number or
    (with ``scheme``) a class the scheme does not have raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the reference volumes: {str(error).splitlines()[0]}", path) from None
    reference = reference_volumes(table, source=path, scheme=scheme)
    if not len(reference):
        raise InputError("the reference describes no class (each class needs at least 2 cases)", path)
    return reference


# -- one case ----------------------------------------------------------------------------------


def check_case(labels: np.ndarray, geometry: Geometry, scheme: LabelScheme, *, image: np.ndarray | None = None,
               image_geometry: Geometry | None = None, masks: Mapping[str, np.ndarray] | None = None,
               reference: pd.DataFrame | None = None, config: CheckConfig | None = None,
               tables: AnatomyTables | None = None, case: str = "") -> pd.DataFrame:
    """Every flag of ``config.flags`` for one 3D label map (ITK index order, ``geometry``) in
    ``scheme``: the flag table (:data:`FLAG_COLUMNS`), checks in :data:`FLAGS` order. ``image``
    (HU, on ``image_geometry``, default ``geometry``) enables ``outside_body`` and ``in_air`` (skipped
    on another grid, with a ``geometry`` flag); ``masks`` (per-class binary masks) enables
    ``overlap``; ``reference`` (:func:`reference_volumes`) enables ``volume_z``. ``tables``: default
    those of ``config.rules``."""
    config = config if config is not None else CheckConfig()
    tables = tables if tables is not None else load_anatomy_tables(config.rules)
    chosen = set(config.flags)
    parts: list[pd.DataFrame] = []
    body = None
    boxes = label_boxes(labels)  # one pass of the map, shared by the checks
    if image is not None:
        if image_geometry is None and image.shape != labels.shape:
            raise ValueError(f"image of shape {image.shape} for a label map of shape {labels.shape}: give its geometry")
        grid = image_geometry if image_geometry is not None else geometry
        mismatch = flag_geometry(geometry, grid, case=case) if "geometry" in chosen else flag_table([])
        if geometry_differences(geometry, grid):
            parts.append(mismatch)
            image = None
        elif chosen & {"outside_body", "left_right"}:
            body = body_mask(image, geometry, threshold_hu=config.body_hu, fill_holes=config.fill_holes)
    if image is not None and body is not None and "outside_body" in chosen:
        parts.append(flag_outside_body(labels, body, geometry, scheme, margin_mm=config.outside_margin_mm,
                                       min_ml=config.outside_min_ml, case=case))
    if image is not None and "in_air" in chosen:
        parts.append(flag_in_air(labels, image, scheme, air_hu=config.air_hu, max_fraction=config.air_max_fraction,
                                 allowed=config.air_allowed, case=case, boxes=boxes))
    if "fov_border" in chosen:
        parts.append(flag_fov_border(labels, geometry, scheme, max_voxels=config.fov_max_voxels, case=case))
    if "region" in chosen:
        parts.append(flag_region(labels, geometry, scheme, tables=tables, max_outside=config.region_max_outside,
                                 case=case, boxes=boxes))
    if "left_right" in chosen:
        parts.append(flag_left_right(labels, geometry, scheme, midline=config.midline,
                                     min_distance_mm=config.side_min_distance_mm,
                                     max_tilt_degrees=config.side_max_tilt_degrees, body=body, case=case, boxes=boxes))
    if "merged_vertebrae" in chosen:
        parts.append(flag_merged_vertebrae(labels, geometry, scheme, order=tables.vertebrae,
                                           factor=config.vertebra_height_factor, window=config.vertebra_window,
                                           relative_height=config.vertebra_relative_height, case=case, boxes=boxes))
    if "components" in chosen:
        parts.append(flag_components(labels, geometry, scheme, classes=tables.single,
                                     max_components=config.max_components, min_ml=config.component_min_ml,
                                     case=case, boxes=boxes))
    if masks is not None and "overlap" in chosen:
        parts.append(flag_overlap(masks, geometry, max_voxels=config.overlap_max_voxels, case=case))
    if reference is not None and "volume_z" in chosen:
        parts.append(flag_volume_z(labels, geometry, scheme, reference, max_abs_z=config.volume_max_abs_z,
                                   case=case))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else flag_table([])


# -- per-class mask folders ---------------------------------------------------------------------


def combine_masks(masks: Mapping[str, np.ndarray], scheme: LabelScheme) -> np.ndarray:
    """One label map from per-class binary masks (class name -> array): classes in ascending value,
    a later class overwriting an earlier one where they overlap."""
    shapes = {m.shape for m in masks.values()}
    if len(shapes) > 1:
        raise ValueError(f"masks of different shapes {sorted(shapes)}")
    dtype = np.uint8 if scheme.max_value < 256 else np.uint16 if scheme.max_value < 65536 else np.uint32
    labels = np.zeros(next(iter(shapes)) if shapes else (0, 0, 0), dtype=dtype)
    for name in sorted(masks, key=scheme.value_of):
        labels[masks[name].astype(bool)] = scheme.value_of(name)
    return labels


def read_mask_folder(files: Sequence[Path], scheme: LabelScheme) -> tuple[dict[str, np.ndarray], Geometry,
                                                                        list[str]]:
    """Per-class binary masks (``<class>.nii.gz``, one file per class) of one case: (class -> mask in
    scheme order, their common grid, names of files that are no class of the scheme, ignored).
    A mask with values other than 0 and 1, or on another grid than the first, raises
    :class:`InputError` naming the file; so does a case without any class file."""
    masks: dict[str, np.ndarray] = {}
    ignored: list[str] = []
    geometry: Geometry | None = None
    first: Path | None = None
    for path in files:
        name = case_id(path)
        if name not in scheme.by_name or scheme.by_name[name].value is None:
            ignored.append(path.name)
            continue
        image = read_label_map(path)
        if image.array.size and int(image.array.max()) > 1:
            raise InputError(f"is not a binary mask (values up to {int(image.array.max())}); per-class masks "
                             "hold 0 and 1", path)
        if geometry is None:
            geometry, first = image.geometry, path
        else:
            diffs = geometry_differences(image.geometry, geometry)
            if diffs:
                raise InputError(f"{diffs[0].what} {diffs[0].pred} differs from {first} ({diffs[0].gt})", path)
        masks[name] = image.array.astype(bool)
    if geometry is None:
        where = files[0].parent if files else None
        raise InputError(f"holds no mask named after a class of the scheme {scheme.name!r}", where)
    order = sorted(masks, key=scheme.value_of)
    return {n: masks[n] for n in order}, geometry, ignored


# -- folders ---------------------------------------------------------------------------------


def check_task(task: CaseTask, *, scheme: LabelScheme, config: CheckConfig, tables: AnatomyTables,
               reference: pd.DataFrame | None) -> CaseResult:
    """The per-case function of :func:`check_folder`: read the case's label map (or masks) and image,
    validate them, run :func:`check_case`; the volumes are the extra table ``volumes``."""
    warnings: list[str] = []
    masks = None
    if "masks" in task.inputs:
        masks, geometry, ignored = read_mask_folder(task.inputs["masks"], scheme)
        labels = combine_masks(masks, scheme)
        where = task.inputs["masks"][0]
        if ignored:
            warnings.append(f"{task.case}: ignored {len(ignored)} file(s) not named after a class: "
                            + ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""))
    else:
        path = task.path("labels")
        assert path is not None
        where = path
        read = read_label_map(where)
        labels, geometry = read.array, read.geometry
        scheme.check_values(labels, where)
    if labels.ndim != 3:
        raise InputError(f"is {labels.ndim}D; the anatomical checks need 3D label maps", where)
    image = image_geometry = None
    image_path = task.path("image")
    if image_path is not None:
        read_img = read_image(image_path, finite=True)
        image, image_geometry = read_img.array, read_img.geometry
    flags = check_case(labels, geometry, scheme, image=image, image_geometry=image_geometry, masks=masks,
                       reference=reference, config=config, tables=tables, case=task.case)
    return CaseResult(table=flags, extra={"volumes": class_volumes(labels, geometry, scheme, case=task.case)},
                      warnings=warnings)


@dataclass
class CheckResult:
    """What :func:`check_folder` wrote: ``flags`` (:data:`FLAG_COLUMNS`), ``volumes``, ``worklist``,
    ``summary`` (the content of ``summary.json``) and the engine's ``report``."""

    flags: pd.DataFrame
    volumes: pd.DataFrame
    worklist: pd.DataFrame
    summary: dict[str, Any]
    report: RunReport
    warnings: list[str] = field(default_factory=list)


def _mask_cases(folder: Path) -> dict[str, tuple[Path, ...]]:
    cases = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = tuple(list_label_files(sub).values())
        if files:
            cases[sub.name] = files
    return cases


def _image_files(images_dir: Path, cases: Iterable[str]) -> dict[str, Path]:
    found = list_image_files(images_dir)
    return {c: found[c][0] for c in cases if c in found}


def worklist(flags: pd.DataFrame, cases: Sequence[str]) -> pd.DataFrame:
    """One row per case: case, flag (any flag), reason (flags and classes), n_flags, n_errors,
    n_warnings, worst_severity (error, warning or empty), flags (kind x count). Worst first: errors
    before warnings before clean cases, then by the number of errors and of flags, then the case."""
    rows = []
    for case in cases:
        mine = flags[flags["case"] == case]
        n_errors = int((mine["severity"] == "error").sum())
        n_warnings = int((mine["severity"] == "warning").sum())
        worst = "error" if n_errors else "warning" if n_warnings else ""
        kinds = [k for k in FLAGS if k in set(mine["flag"])]
        reason_parts, count_parts = [], []
        for kind in sorted(kinds, key=lambda k: (-_RANK[SEVERITY[k]], FLAGS.index(k))):
            names = list(dict.fromkeys(mine.loc[mine["flag"] == kind, "class"]))
            shown = ", ".join(names[:4]) + (f" +{len(names) - 4} more" if len(names) > 4 else "")
            reason_parts.append(f"{kind}: {shown}")
            count_parts.append(f"{kind} x{len(names)}")
        rows.append({"case": case, "flag": bool(len(mine)), "reason": "; ".join(reason_parts),
                     "n_flags": int(len(mine)), "n_errors": n_errors, "n_warnings": n_warnings,
                     "worst_severity": worst, "flags": ", ".join(count_parts)})
    table = pd.DataFrame(rows, columns=["case", "flag", "reason", "n_flags", "n_errors", "n_warnings",
                                        "worst_severity", "flags"])
    rank = table["worst_severity"].map({"error": 0, "warning": 1, "": 2})
    order = table.assign(_rank=rank).sort_values(["_rank", "n_errors", "n_flags", "case"],
                                                 ascending=[True, False, False, True], kind="stable")
    return order.drop(columns=["_rank"]).reset_index(drop=True)


def check_folder(labels_dir: str | Path, out_dir: str | Path, *, scheme: LabelScheme,
                 images_dir: str | Path | None = None, reference: pd.DataFrame | None = None,
                 config: CheckConfig | None = None, jobs: int = 1, scheduler: Any = None,
                 progress: bool = False) -> CheckResult:
    """Check every case of ``labels_dir`` through the case engine (content-keyed, resumable).

    ``labels_dir``: label maps (``CASE.nii.gz``, ...) or, when it holds no label files but
    sub-folders of files, per-class binary masks (``CASE/<class>.nii.gz``). ``images_dir``: the
    images (``CASE_0000.nii.gz`` or ``CASE.nii.gz``; the first channel), for ``outside_body`` and
    ``in_air``; a case without an image skips them with a warning. ``reference``:
    :func:`reference_volumes` for ``volume_z``. Writes ``flags.csv``, ``volumes.csv`` (case, class,
    value, voxels, volume_ml: a reference for later runs), ``worklist.csv`` (:func:`worklist`) and
    ``summary.json`` (per flag kind: severity, whether it could run at all — ``overlap`` needs
    per-class masks, ``volume_z`` a reference, ``geometry``/``outside_body``/``in_air`` images — and
    the counts of flags and cases; per case: counts by severity and kind; settings; inputs)."""
    config = config if config is not None else CheckConfig()
    labels_path, out = Path(labels_dir), Path(out_dir)
    if not labels_path.is_dir():
        raise InputError("no such folder of label maps", labels_path)
    tables = load_anatomy_tables(config.rules)
    files = list_label_files(labels_path)
    layout = "label maps"
    tasks: list[CaseTask] = []
    inputs: dict[str, dict[str, tuple[Path, ...]]]
    if files:
        inputs = {c: {"labels": (p,)} for c, p in files.items()}
    else:
        mask_cases = _mask_cases(labels_path)
        if not mask_cases:
            raise InputError("holds no label maps (CASE.nii.gz) and no per-class mask folders (CASE/<class>.nii.gz)",
                             labels_path)
        layout = "per-class masks"
        inputs = {c: {"masks": p} for c, p in mask_cases.items()}
    images = _image_files(Path(images_dir), inputs) if images_dir is not None else {}
    for case, roles in inputs.items():
        if case in images:
            roles = {**roles, "image": (images[case],)}
        tasks.append(CaseTask(case, roles))
    warnings = []
    image_flags = [f for f in _IMAGE_FLAGS if f in config.flags]
    if images_dir is not None and len(images) < len(tasks) and image_flags:
        missing = [t.case for t in tasks if t.case not in images]
        warnings.append(f"{images_dir}: no image of {len(missing)} case(s) ({', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}); {' and '.join(image_flags)} skipped for them")
    settings = {"format": "segqc-labels-check", "config": config.to_dict(), "scheme": scheme.to_dict(),
                "tables": tables.to_dict(), "layout": layout,
                "reference": None if reference is None else reference.to_dict("records")}
    function = partial(check_task, scheme=scheme, config=config, tables=tables, reference=reference)
    report = run_cases(function, tasks, out, settings=settings, jobs=jobs, scheduler=scheduler, progress=progress,
                       description="check")
    flags = report.table if len(report.table) else flag_table([])
    flags = flags[FLAG_COLUMNS].reset_index(drop=True) if len(flags) else flag_table([])
    volumes = report.extra.get("volumes", pd.DataFrame())
    if not len(volumes):
        volumes = pd.DataFrame(columns=["case", "class", "value", "voxels", "volume_ml"])
    work = worklist(flags, report.done)
    checked = {k: True for k in config.flags}
    checked.update({k: bool(images) for k in ("geometry", *_IMAGE_FLAGS) if k in checked})
    if "overlap" in checked:
        checked["overlap"] = layout == "per-class masks"
    if "volume_z" in checked:
        checked["volume_z"] = reference is not None
    summary = _summary(flags, report, config=config, scheme=scheme, layout=layout, labels_dir=labels_path,
                       images_dir=images_dir, with_reference=reference is not None, checked=checked)
    write_csv_atomic(out / "flags.csv", flags)
    write_csv_atomic(out / "volumes.csv", volumes)
    write_csv_atomic(out / "worklist.csv", work)
    write_json_atomic(out / "summary.json", summary)
    return CheckResult(flags, volumes, work, summary, report, warnings)


def _summary(flags: pd.DataFrame, report: RunReport, *, config: CheckConfig, scheme: LabelScheme, layout: str,
             labels_dir: Path, images_dir: str | Path | None, with_reference: bool,
             checked: Mapping[str, bool]) -> dict[str, Any]:
    kinds = {}
    for kind in config.flags:
        mine = flags[flags["flag"] == kind]
        kinds[kind] = {"severity": SEVERITY[kind], "checked": checked[kind], "flags": int(len(mine)),
                       "cases": int(mine["case"].nunique())}
    per_case = {}
    for case in report.done:
        mine = flags[flags["case"] == case]
        per_case[case] = {"flags": int(len(mine)), "errors": int((mine["severity"] == "error").sum()),
                          "warnings": int((mine["severity"] == "warning").sum()),
                          "by_flag": {k: int(n) for k, n in mine["flag"].value_counts().items()}}
    return {"format": "segqc-labels-check-summary", "scheme": scheme.name, "layout": layout,
            "labels_dir": str(labels_dir), "images_dir": None if images_dir is None else str(images_dir),
            "reference": with_reference, "settings": config.to_dict(),
            "flags": kinds, "per_case": per_case,
            "cases_flagged": int(flags["case"].nunique()) if len(flags) else 0,
            "cases_with_errors": int(flags.loc[flags["severity"] == "error", "case"].nunique()) if len(flags) else 0,
            "cases": report.cases_dict()}
