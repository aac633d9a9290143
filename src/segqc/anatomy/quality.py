"""Label quality of pseudo-label datasets against their base labels (anatomy thesis §3.2.2.2, Table 5),
and the agreement of their organ-volume distributions (DAP Atlas, Fig. 10: Jensen–Shannon divergence).

Protocol. For a pseudo-label dataset g (a folder of label maps predicted for the cases of a base
dataset) and every organ k of the *common label set*, for every case i:
``d_{k,i} = Dice(base_i == k, pseudo_i == k)`` and ``s_{k,i} = NSD(base_i == k, pseudo_i == k)``
(normalized surface Dice at a tolerance in mm). Per organ (eq. 2): the mean ``d_k`` over the N cases
and the *population* SD ``σ_{d,k} = sqrt(1/N Σ_i (d_{k,i} - d_k)²)``. Per dataset (eq. 4): the score
``d`` is the mean of ``d_k`` over the common labels and its SD is the root-mean-square of the
per-organ SDs, ``sqrt(mean_k σ_{d,k}²)``. The same for NSD.

Common labels (eq. 3): the base labels (background excluded) that EVERY pseudo dataset can
predict. What a pseudo dataset can predict is read from its ``dataset.json`` ``labels`` (in the
folder or its parent, as everywhere in segqc; a ``dataset.json`` shared with the base folder says
nothing about the generator and does not count); without one, it is the union of the non-zero
values present in its label maps. ``labels`` (``--labels``) restricts the base labels further.
Labels outside the common set are still scored per case and per organ (``organs.csv``, column
``common`` False) but are left out of every dataset's score.

Empty masks (the defaults of :class:`~segqc.metrics.registry.EmptyPolicy`, tagged in the column
``empty``): an organ absent from both the base and the pseudo map of a case has no Dice and no NSD
(NaN, ``both_empty:nan``) and is left out of that organ's mean, SD and ``n`` (counted in
``n_both_empty``); an organ present in one of the two only scores Dice 0 and NSD 0
(``gt_empty:worst`` / ``pred_empty:worst``, "gt" being the base). Values of a pseudo map that are no
base label count as background.

Volume distributions: for every common organ, the volumes (ml) of the masks that are present
(volume > 0) in each dataset (the base counts as one) are binned on common bins, and the
Jensen–Shannon divergence (base 2, in [0, 1]) of each dataset's histogram to each other dataset's
is averaged per dataset ("mean JSD to the others").

:func:`label_quality_folder` runs it over folders through the case engine (one task per pseudo
dataset and case, cached on the content of both label maps) and writes ``scores.csv``,
``organs.csv``, ``quality.csv``, ``quality.md``, ``volumes.csv``, ``jsd.csv``, ``jsd_pairs.csv``,
``summary.json`` and ``plots/``. The other functions are pure (arrays and tables in, numbers out).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segqc.errors import InputError
from segqc.evaluation.config import EvaluationConfig
from segqc.evaluation.label_maps import evaluate_label_maps
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.io.atomic import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic
from segqc.io.datasets import (
    DatasetInfo,
    SegmentationFiles,
    find_dataset_json,
    ground_truth_files,
    pair_segmentations,
    segmentation_files,
)
from segqc.io.geometry import geometry_differences
from segqc.io.images import read_label_map
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings
from segqc.metrics.multiclass import present_labels

__all__ = [
    "BASE",
    "CASE_METRICS",
    "DEFAULT_BINS",
    "QUALITY_METRICS",
    "SCORE_COLUMNS",
    "LabelQuality",
    "case_label_scores",
    "common_labels",
    "dataset_scores",
    "jensen_shannon_divergence",
    "label_quality_folder",
    "mean_jsd_to_others",
    "organ_scores",
    "pairwise_jsd",
    "quality_case",
    "volume_histograms",
]

#: The name of the base labels wherever they count as a dataset (volumes, JSD).
BASE = "base"
#: The label-quality metrics (Table 5): Dice and normalized surface Dice.
QUALITY_METRICS = ("dice", "nsd")
#: What :func:`case_label_scores` computes per label: the quality metrics and both volumes (ml).
CASE_METRICS = ("dice", "nsd", "volume_gt", "volume_pred")
#: Columns of ``scores.csv``.
SCORE_COLUMNS = ["dataset", "case", "label", "name", "metric", "value", "empty"]
#: Equal-width bins per organ of the volume histograms.
DEFAULT_BINS = 20

_DISPLAY = {"dice": "Dice", "nsd": "NSD"}
_FORMAT = "segqc-labels-quality"
_VERSION = 1


# --------------------------------------------------------------------------------------------
# Pure numeric functions
# --------------------------------------------------------------------------------------------


def case_label_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    labels: Mapping[int, str] | Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    ignore: int | None = None,
) -> pd.DataFrame:
    """Dice, NSD and both volumes of every label of one case: ``pred`` the pseudo-label map, ``gt``
    the base label map (integer arrays on the same grid), ``spacing`` in mm per axis.

    ``labels``: the label values to score (a mapping also names them; default: every non-zero value
    present in either map); ``tolerance_mm``: the NSD tolerance in mm; ``ignore``: a base value whose
    voxels are removed from both maps first (nnU-Net's ignore label). Returns one row per (label,
    metric) with columns ``label`` (int), ``name``, ``metric`` (``dice``, ``nsd`` — both in [0, 1] —
    ``volume_gt``, ``volume_pred`` — in ml), ``value`` and ``empty``. Empty masks: label absent from
    both maps -> Dice and NSD NaN (``both_empty:nan``); absent from one -> 0 (``gt_empty:worst`` /
    ``pred_empty:worst``); volumes are always defined (0 ml when absent; a 2D map counts as one
    slice 1 mm thick). Computed by the metric
    kernels of :mod:`segqc.metrics` (through :func:`~segqc.evaluation.label_maps.evaluate_label_maps`,
    one bounding box per label).
    """
    if labels is None:
        label_set = LabelSet(ignore=ignore)
    else:
        names = dict(labels) if isinstance(labels, Mapping) else {int(v): str(int(v)) for v in labels}
        label_set = LabelSet(names=names, ignore=ignore, known=True, restricted=True)
    config = EvaluationConfig(metrics=CASE_METRICS, settings=MetricSettings(tolerance_mm=tolerance_mm),
                              label_set=label_set)
    table = evaluate_label_maps(pred, gt, spacing, config)
    values = table["value"].astype(float)
    if gt.ndim == 2:  # the metric kernels give a 2D map's areas in mm²: here one slice 1 mm thick, in ml
        values = values.where(~table["metric"].isin(["volume_gt", "volume_pred"]), values / 1000.0)
    out = pd.DataFrame({"label": table["label"].astype(int), "name": table["label_name"].astype(str),
                        "metric": table["metric"].astype(str), "value": values,
                        "empty": table["empty"].fillna("").astype(str)})
    return out.reset_index(drop=True)


def organ_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Eq. 2 per (dataset, label, metric): the mean over cases and the population SD
    ``sqrt(1/N Σ (x_i - mean)²)`` (``ddof=0``, not the sample SD).

    ``scores``: tidy rows with columns ``dataset``, ``label``, ``name``, ``metric``, ``value`` and
    optionally ``empty``. NaN values (organ absent from both maps of a case) are left out: ``n`` is the
    number of cases with a value, ``n_both_empty`` the number left out. Returns columns ``dataset,
    label, name, metric, mean, sd, n, n_both_empty`` in the order of first appearance; mean and SD
    are NaN when ``n`` is 0 (SD 0 when it is 1).
    """
    columns = ["dataset", "label", "name", "metric", "mean", "sd", "n", "n_both_empty"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for (dataset, label, name, metric), group in scores.groupby(["dataset", "label", "name", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=np.float64)
        defined = values[~np.isnan(values)]
        n = int(defined.size)
        mean = float(defined.mean()) if n else math.nan
        sd = float(np.sqrt(np.mean((defined - mean) ** 2))) if n else math.nan
        records.append((dataset, label, name, metric, mean, sd, n, int(values.size - n)))
    return pd.DataFrame.from_records(records, columns=columns)


def dataset_scores(organs: pd.DataFrame, labels: Iterable[int]) -> pd.DataFrame:
    """Eq. 4 per (dataset, metric): ``mean`` = the mean of the organ means over ``labels`` (the common
    labels), ``sd`` = the root-mean-square of the organ SDs, ``sqrt(mean_k sd_k²)``.

    ``organs``: the table of :func:`organ_scores`. An organ without any value in a dataset (``n`` 0:
    absent from every case of base and pseudo) has no mean and is left out of both averages;
    ``n_labels`` says how many organs were averaged. Returns columns ``dataset, metric, mean, sd,
    n_labels`` (values in [0, 1] for Dice and NSD).
    """
    wanted = {int(v) for v in labels}
    columns = ["dataset", "metric", "mean", "sd", "n_labels"]
    chosen = organs[organs["label"].astype(int).isin(wanted) & organs["mean"].notna()] if len(organs) else organs
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for (dataset, metric), group in chosen.groupby(["dataset", "metric"], sort=False):
        means = group["mean"].to_numpy(dtype=np.float64)
        sds = group["sd"].to_numpy(dtype=np.float64)
        records.append((dataset, metric, float(means.mean()), float(np.sqrt(np.mean(sds**2))), int(means.size)))
    return pd.DataFrame.from_records(records, columns=columns)


def common_labels(base_labels: Iterable[int], predictable: Mapping[str, Iterable[int]], *,
                  background: int = 0) -> list[int]:
    """Eq. 3: the base labels, ``background`` removed, that every dataset of ``predictable`` (dataset
    name -> the label values it can predict) can predict; sorted."""
    common = {int(v) for v in base_labels} - {background}
    for values in predictable.values():
        common &= {int(v) for v in values}
    return sorted(common)


def volume_histograms(volumes: Mapping[str, Sequence[float] | np.ndarray], *,
                      bins: int = DEFAULT_BINS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Histograms of each dataset's volumes (any unit, e.g. ml) on common bins: ``bins`` equal-width
    bins spanning the pooled finite values of all datasets (:func:`numpy.histogram_bin_edges`; one
    value or all equal: a bin of width 1 around it). Returns (edges, dataset -> counts); a dataset
    without values has all-zero counts. Raises ``ValueError`` when no dataset has a value."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in volumes.items()}
    arrays = {name: values[np.isfinite(values)] for name, values in arrays.items()}
    pooled = np.concatenate(list(arrays.values())) if arrays else np.empty(0)
    if pooled.size == 0:
        raise ValueError("no volumes to bin")
    edges = np.histogram_bin_edges(pooled, bins=bins)
    return edges, {name: np.histogram(values, bins=edges)[0] for name, values in arrays.items()}


def jensen_shannon_divergence(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen–Shannon divergence of two histograms (counts or probabilities on the same bins), base 2,
    so in [0, 1]: ``JSD = ½ KL(p‖m) + ½ KL(q‖m)`` with ``m = ½ (p + q)``, after normalising each to
    sum 1. 0 for identical distributions, 1 for disjoint supports; symmetric.

    Note: :func:`scipy.spatial.distance.jensenshannon` returns the Jensen–Shannon *distance*, the
    square root of the divergence; this function squares it. An all-zero histogram (an empty
    distribution) gives NaN. Raises ``ValueError`` for negative or non-finite entries or differing
    lengths.
    """
    from scipy.spatial.distance import jensenshannon

    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms of different lengths: {p.size} and {q.size}")
    for h in (p, q):
        if not np.isfinite(h).all() or (h < 0).any():
            raise ValueError("histograms must hold finite, non-negative values")
    if p.sum() == 0 or q.sum() == 0:
        return math.nan
    distance = float(jensenshannon(p, q, base=2))
    return float(min(max(distance * distance, 0.0), 1.0))


def pairwise_jsd(histograms: Mapping[str, Sequence[float] | np.ndarray]) -> pd.DataFrame:
    """The Jensen–Shannon divergence (:func:`jensen_shannon_divergence`) of every ordered pair of
    distinct datasets: columns ``dataset, other, jsd`` (NaN where either histogram is empty)."""
    names = list(histograms)
    records = [(a, b, jensen_shannon_divergence(histograms[a], histograms[b]))
               for a in names for b in names if a != b]
    return pd.DataFrame.from_records(records, columns=["dataset", "other", "jsd"])


def mean_jsd_to_others(histograms: Mapping[str, Sequence[float] | np.ndarray]) -> dict[str, float]:
    """Per dataset, the mean Jensen–Shannon divergence (base 2, in [0, 1]) of its histogram to those of
    every other dataset (DAP Atlas: the larger, the further a distribution is from its peers). Pairs
    with an empty histogram are left out; NaN when none is left (or when there is one dataset)."""
    pairs = pairwise_jsd(histograms)
    out: dict[str, float] = {}
    for name in histograms:
        values = pairs.loc[pairs["dataset"] == name, "jsd"].dropna()
        out[name] = float(values.mean()) if len(values) else math.nan
    return out


# --------------------------------------------------------------------------------------------
# One case of one pseudo dataset (through the case engine)
# --------------------------------------------------------------------------------------------


def quality_case(task: CaseTask, *, label_set: LabelSet, tolerance_mm: float) -> CaseResult:
    """Read and score one (pseudo dataset, case) task: inputs ``base`` and ``pseudo`` (one label map
    each), payload ``(dataset, case)``. Main table: the rows of :func:`case_label_scores` with
    ``dataset`` and ``case`` columns; extra table ``present``: the non-zero values of both maps
    (``role`` base / pseudo). Raises :class:`InputError` naming the file for an unreadable map, a base
    value outside the base label set, or a pseudo map on another grid than its base map."""
    dataset, case = task.payload
    base_path, pseudo_path = task.path("base"), task.path("pseudo")
    assert base_path is not None and pseudo_path is not None
    base = read_label_map(base_path)
    warnings = label_set.check(base.array, base_path)
    pseudo = read_label_map(pseudo_path)
    diffs = geometry_differences(pseudo.geometry, base.geometry)
    if diffs:
        what = "; ".join(f"{d.what} {d.pred} (base {d.gt})" for d in diffs)
        raise InputError(f"not on the grid of its base label map {base_path}: {what}", pseudo_path)
    names = dict(label_set.names) if label_set.known else None
    table = case_label_scores(pseudo.array, base.array, base.geometry.spacing, labels=names,
                              tolerance_mm=tolerance_mm, ignore=label_set.ignore)
    table.insert(0, "case", case)
    table.insert(0, "dataset", dataset)
    present = pd.DataFrame(
        [(dataset, case, "base", v) for v in present_labels(base.array)]
        + [(dataset, case, "pseudo", v) for v in present_labels(pseudo.array)],
        columns=["dataset", "case", "role", "value"]).astype({"value": "int64"})
    return CaseResult(table=table, extra={"present": present}, warnings=warnings)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


@dataclass
class LabelQuality:
    """Result of :func:`label_quality_folder`. ``scores``: tidy Dice/NSD rows (:data:`SCORE_COLUMNS`);
    ``organs``: eq. 2 per dataset, organ and metric (+ ``common``); ``quality``: eq. 4 per dataset and
    metric (Table 5); ``volumes``: ``dataset, case, label, organ, volume_ml`` (base included);
    ``jsd``: ``label, organ, dataset, mean_jsd, n_volumes``; ``common``: the common labels;
    ``predictable``: dataset -> (labels it can predict, where that came from); ``warnings``: one line
    each (missing pseudo labels, ignored files, excluded labels); ``report``: the engine's report."""

    scores: pd.DataFrame
    organs: pd.DataFrame
    quality: pd.DataFrame
    volumes: pd.DataFrame
    jsd: pd.DataFrame
    jsd_pairs: pd.DataFrame
    common: list[int]
    names: dict[int, str]
    predictable: dict[str, tuple[list[int], str]]
    report: RunReport
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _dataset_names(pseudo_dirs: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    if names is None:
        chosen = [p.resolve().name for p in pseudo_dirs]
    else:
        chosen = [str(n).strip() for n in names]
        if len(chosen) != len(pseudo_dirs):
            raise InputError(f"{len(chosen)} dataset name(s) for {len(pseudo_dirs)} pseudo-label folder(s)")
    for name, folder in zip(chosen, pseudo_dirs):
        if not _NAME_OK.match(name):
            raise InputError(f"dataset name {name!r} must be letters, digits, '.', '_', '+' or '-' (it names "
                             "output files)", folder)
        if name == BASE:
            raise InputError(f"dataset name '{BASE}' is reserved for the base labels; name the datasets", folder)
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise InputError(f"dataset name(s) {', '.join(repeated)} given to several folders; name the datasets")
    return chosen


def _base_label_set(info: DatasetInfo | None, labels: Sequence[int] | None) -> LabelSet:
    label_set = LabelSet.from_dataset_info(info)
    label_set = LabelSet(names=label_set.names, ignore=label_set.ignore, known=label_set.known)  # no regions
    if labels is not None:
        unknown = label_set.unlisted(labels)
        if unknown:  # named with the dataset.json they are missing from
            raise InputError(f"label(s) {', '.join(map(str, unknown))} are not base labels "
                             f"{sorted(label_set.names)}", info.path if info else None)
        label_set = label_set.restricted_to(labels)
    return label_set


def _pseudo_labels(pseudo_dir: Path, base_info: DatasetInfo | None) -> tuple[list[int], Path] | None:
    """The labels a pseudo dataset's own ``dataset.json`` names (background excluded), or None."""
    info = find_dataset_json(pseudo_dir)
    if info is None or info.path is None or not info.labels:
        return None
    if base_info is not None and base_info.path is not None and info.path.resolve() == base_info.path.resolve():
        return None  # the base dataset's file describes the base labels, not the generator
    return sorted(v for v in info.labels if v != 0), info.path


def _unique_cases(segs: SegmentationFiles, pseudo_dir: Path) -> None:
    seen: dict[str, Path] = {}
    for _, (case, path) in segs.files.items():
        if case in seen:
            raise InputError(f"two pseudo label maps of case '{case}' ({seen[case].name}, {path.name}); a pseudo-label "
                             "dataset holds one per case", pseudo_dir)
        seen[case] = path


def _order(frame: pd.DataFrame, datasets: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    rank = {name: i for i, name in enumerate(datasets)}
    return (frame.assign(_rank=frame["dataset"].map(rank)).sort_values(["_rank", *keys], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


def _pct(mean: float, sd: float) -> str:
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return "—"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def label_quality_folder(
    base_dir: str | Path,
    pseudo_dirs: Sequence[str | Path],
    out_dir: str | Path | None,
    *,
    names: Sequence[str] | None = None,
    tolerance_mm: float = 1.0,
    labels: Sequence[int] | None = None,
    bins: int = DEFAULT_BINS,
    plots: bool = True,
    jobs: int = 1,
    scheduler: Any = None,
    progress: bool = False,
) -> LabelQuality:
    """Label quality of every pseudo-label folder against the base folder (module docstring).

    ``base_dir``: base label maps (nnU-Net ``labelsTr`` style; ``dataset.json`` in it or its parent
    names the labels and the file ending); ``pseudo_dirs``: one folder of label maps per pseudo
    dataset, paired with the base cases like predictions with ground truths
    (:func:`~segqc.io.datasets.segmentation_files`: any ending, or a ``manifest.csv``); ``names``: the
    datasets' names (default: the folder names); ``tolerance_mm``: NSD tolerance in mm; ``labels``:
    restrict the base labels; ``bins``: bins of the volume histograms. The scored cases are the base
    cases with a pseudo label in at least one dataset; a scored case missing from a pseudo folder is
    reported (one line each) and left out of that dataset's scores; base cases without any pseudo
    label are reported in one line. Every (dataset, case) pair is one task of the case engine
    (``jobs``, ``scheduler``; cached under ``out_dir/cases/`` on the content of both maps, so a rerun
    reuses unchanged pairs); a task that fails (unreadable file, another grid than the base map) is
    one error line in ``report.failed``. With ``out_dir``, writes ``scores.csv``, ``organs.csv``,
    ``quality.csv``, ``quality.md``, ``volumes.csv``, ``jsd.csv``, ``jsd_pairs.csv``,
    ``summary.json`` and (``plots``) ``plots/volumes_<label>_<name>.png`` and
    ``plots/jsd_box.png``. Raises :class:`InputError` when the run cannot start (missing folder, no
    base label map, no pseudo label of any base case, a pseudo-label folder that is the base
    folder, bad names, unknown ``labels``).
    """
    base_dir = Path(base_dir)
    folders = [Path(p) for p in pseudo_dirs]
    if not folders:
        raise InputError("no pseudo-label folder given")
    for folder in folders:
        if folder.is_dir() and base_dir.is_dir() and folder.resolve() == base_dir.resolve():
            raise InputError("is the base folder too; give the base labels and the pseudo labels in different "
                             "folders", folder)
    datasets = _dataset_names(folders, names)
    MetricSettings(tolerance_mm=tolerance_mm)  # validates the tolerance
    if bins < 1:
        raise InputError(f"the volume histograms need at least one bin, got {bins}")
    for folder in [base_dir, *folders]:
        if not folder.is_dir():
            raise InputError("folder not found" if not folder.exists() else "not a folder", folder)
    info = find_dataset_json(base_dir)
    label_set = _base_label_set(info, labels)
    ending = info.file_ending if info else None
    base_files = ground_truth_files(base_dir, file_ending=ending)
    if not base_files.files:
        raise InputError("no base label maps found", base_dir)
    references = {case: path for case, (_, path) in base_files.files.items()}
    notes = [f"{path}: ignored ({why})" for path, why in base_files.ignored]

    pairings = {}
    for name, folder in zip(datasets, folders):
        segs = segmentation_files(folder, file_ending=ending)
        _unique_cases(segs, folder)
        pairings[name] = pair_segmentations(segs, references)
    scored = sorted({case for p in pairings.values() for _, case, _, _ in p.matched})
    if not scored:
        raise InputError(f"no pseudo label matches a base case of {base_dir} (e.g. base case "
                         f"'{next(iter(references))}')", folders[0])
    unscored = [case for case in references if case not in set(scored)]
    if unscored:
        notes.append(f"{base_dir}: {len(unscored)} of {len(references)} base case(s) have a pseudo label in no "
                     f"dataset and are not scored (e.g. {', '.join(unscored[:3])})")
    missing: dict[str, list[str]] = {}
    tasks = []
    for name, folder in zip(datasets, folders):
        pairing = pairings[name]
        have = {case: path for _, case, path, _ in pairing.matched}
        missing[name] = [case for case in scored if case not in have]
        notes += [f"{folder}: no pseudo label of case {case}; left out of {name}'s scores" for case in missing[name]]
        notes += [f"{path}: case '{sid}' has no base label map in {base_dir}; ignored" for sid, path in pairing.extra]
        notes += [f"{path}: ignored ({why})" for path, why in pairing.ignored]
        tasks += [CaseTask(f"{name}/{case}", {"base": (references[case],), "pseudo": (path,)}, payload=(name, case))
                  for case, path in have.items()]

    settings = {"format": _FORMAT, "version": _VERSION, "tolerance_mm": float(tolerance_mm),
                "surface": "surfel", "labels": label_set.to_dict()}
    report = run_cases(partial(quality_case, label_set=label_set, tolerance_mm=float(tolerance_mm)), tasks, out_dir,
                       settings=settings, jobs=jobs, scheduler=scheduler, progress=progress,
                       description="label quality")

    rows = report.table if len(report.table) else pd.DataFrame(columns=SCORE_COLUMNS)
    present = report.extra.get("present", pd.DataFrame())
    if present.empty:
        present = pd.DataFrame(columns=["dataset", "case", "role", "value"])
    named = LabelSet.from_dataset_info(info).known
    if labels is not None and not named:  # the labels asked for, checked against what the base maps hold
        held = {int(v) for v in present.loc[present["role"] == "base", "value"]}
        absent = [v for v in label_set.names if v not in held]
        if absent:
            which = f"label {absent[0]} is" if len(absent) == 1 else f"labels {', '.join(map(str, absent))} are"
            read = f" that could be read ({len(report.failed)} failed)" if report.failed else ""
            found = sorted(held - {0})
            hold = ", ".join(map(str, found[:10])) + (" ..." if len(found) > 10 else "") if found else "no label"
            raise InputError(f"{which} in no base label map{read}; the base maps hold {hold}", base_dir)
    if label_set.known:
        base_labels = list(label_set.names)
        label_names = dict(label_set.names)
    else:
        values = {int(v) for v in present.loc[present["role"] == "base", "value"]} - {0}
        values.discard(label_set.ignore if label_set.ignore is not None else -1)
        base_labels = sorted(values)
        label_names = {v: str(v) for v in base_labels}
    rows = rows[rows["label"].astype(int).isin(base_labels)] if len(rows) else rows
    rows = _complete(rows, base_labels, label_names)

    predictable: dict[str, tuple[list[int], str]] = {}
    for name, folder in zip(datasets, folders):
        own = _pseudo_labels(folder, info)
        if own is not None:
            predictable[name] = (own[0], str(own[1]))
        else:
            found = present.loc[(present["dataset"] == name) & (present["role"] == "pseudo"), "value"]
            predictable[name] = (sorted({int(v) for v in found} - {0}), "values present in its label maps")
    common = common_labels(base_labels, {name: values for name, (values, _) in predictable.items()})
    for label in base_labels:
        if label not in common:
            cannot = [f"{name} ({source})" for name, (values, source) in predictable.items() if label not in values]
            notes.append(f"label {label} ({label_names.get(label, label)}) is left out of every dataset's score: "
                         f"not predictable by {', '.join(cannot)}")
    if not common:
        notes.append("no base label is common to every pseudo dataset: no dataset score")

    scores = rows[rows["metric"].isin(QUALITY_METRICS)][SCORE_COLUMNS] if len(rows) else pd.DataFrame(
        columns=SCORE_COLUMNS)
    scores = _order(scores.astype({"label": "int64"}), datasets, ["case", "label", "metric"])
    organs = _order(organ_scores(scores), datasets, ["label", "metric"])
    organs["common"] = organs["label"].astype(int).isin(common) if len(organs) else pd.Series(dtype=bool)
    quality = dataset_scores(organs, common)
    n_cases = scores.groupby("dataset")["case"].nunique() if len(scores) else pd.Series(dtype=int)
    quality["n_cases"] = [int(n_cases.get(d, 0)) for d in quality["dataset"]]
    quality["table5"] = [_pct(m, s) for m, s in zip(quality["mean"], quality["sd"])]
    quality = _order(quality, datasets, ["metric"])

    volumes = _volumes(rows, datasets)
    jsd, jsd_pairs, histograms = _jsd(volumes, common, label_names, [BASE, *datasets], bins)

    summary = {
        "format": _FORMAT,
        "settings": {**settings, "bins": bins},
        "base": str(base_dir),
        "datasets": {name: str(folder) for name, folder in zip(datasets, folders)},
        "conventions": _CONVENTIONS,
        "labels": {"base": {str(v): label_names.get(v, str(v)) for v in base_labels},
                   "predictable": {name: {"labels": values, "from": source}
                                   for name, (values, source) in predictable.items()},
                   "common": common},
        "cases": {"scored": scored, "not_scored": unscored, "missing": missing, **report.cases_dict()},
        "warnings": notes + report.warnings,
    }
    result = LabelQuality(scores=scores, organs=organs, quality=quality, volumes=volumes, jsd=jsd,
                          jsd_pairs=jsd_pairs, common=common, names=label_names, predictable=predictable,
                          report=report, warnings=notes, summary=summary)
    if out_dir is not None:
        result.files = _write_outputs(Path(out_dir), result, histograms, base_dir=base_dir,
                                      tolerance_mm=float(tolerance_mm), plots=plots)
    return result


_CONVENTIONS = (
    "Dice and NSD per case and organ; organ mean and population SD over cases (eq. 2); dataset score = mean of the "
    "organ means over the common labels, dataset SD = root-mean-square of the organ SDs (eq. 4). Organ absent from "
    "both base and pseudo map of a case: no value (NaN, both_empty:nan), left out of that organ's mean and SD "
    "(n_both_empty); absent from one only: Dice 0, NSD 0. Volume distributions: masks present (> 0 ml) only.")


def _complete(rows: pd.DataFrame, base_labels: Sequence[int], label_names: Mapping[int, str]) -> pd.DataFrame:
    """Without a base label list the kernels score only the labels present in a case: add the
    missing (dataset, case, label) rows as absent from both maps (no Dice/NSD, 0 ml)."""
    columns = ["dataset", "case", "label", "name", "metric", "value", "empty"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows[columns].copy()
    rows["label"] = rows["label"].astype(int)
    have = set(zip(rows["dataset"], rows["case"], rows["label"]))
    extra = []
    for dataset, case in dict.fromkeys(zip(rows["dataset"], rows["case"])):
        for label in base_labels:
            if (dataset, case, label) not in have:
                name = label_names.get(label, str(label))
                extra += [(dataset, case, label, name, "dice", math.nan, "both_empty:nan"),
                          (dataset, case, label, name, "nsd", math.nan, "both_empty:nan"),
                          (dataset, case, label, name, "volume_gt", 0.0, ""),
                          (dataset, case, label, name, "volume_pred", 0.0, "")]
    if extra:
        rows = pd.concat([rows, pd.DataFrame.from_records(extra, columns=columns)], ignore_index=True)
    return rows


def _volumes(rows: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    columns = ["dataset", "case", "label", "organ", "volume_ml"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    base = rows[rows["metric"] == "volume_gt"].drop_duplicates(["case", "label"]).assign(dataset=BASE)
    pseudo = rows[rows["metric"] == "volume_pred"]
    table = pd.concat([base, pseudo], ignore_index=True).rename(columns={"name": "organ", "value": "volume_ml"})
    return _order(table[columns].astype({"label": "int64"}), [BASE, *datasets], ["case", "label"])


def _jsd(volumes: pd.DataFrame, common: Sequence[int], label_names: Mapping[int, str], datasets: Sequence[str],
         bins: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]]:
    """Per common organ: histograms of the present volumes on common bins, the JSD of every pair and
    each dataset's mean JSD to the others."""
    rows, pair_rows = [], []
    histograms: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for label in common:
        chosen = volumes[(volumes["label"] == label) & (volumes["volume_ml"] > 0)]
        per_dataset = {d: chosen.loc[chosen["dataset"] == d, "volume_ml"].to_numpy(dtype=np.float64) for d in datasets}
        if not any(v.size for v in per_dataset.values()):
            continue
        edges, counts = volume_histograms(per_dataset, bins=bins)
        histograms[label] = (edges, counts)
        means = mean_jsd_to_others(counts)
        name = label_names.get(label, str(label))
        rows += [(label, name, d, means[d], int(per_dataset[d].size)) for d in datasets]
        pairs = pairwise_jsd(counts)
        pair_rows += [(label, name, a, b, v) for a, b, v in pairs.itertuples(index=False)]
    jsd = pd.DataFrame.from_records(rows, columns=["label", "organ", "dataset", "mean_jsd", "n_volumes"])
    jsd_pairs = pd.DataFrame.from_records(pair_rows, columns=["label", "organ", "dataset", "other", "jsd"])
    return jsd, jsd_pairs, histograms


def _markdown(result: LabelQuality, *, base_dir: Path, tolerance_mm: float) -> str:
    common = ", ".join(str(v) if result.names.get(v, str(v)) == str(v) else f"{v} {result.names[v]}"
                       for v in result.common) or "none"
    lines = [
        "# Label quality of the pseudo-label datasets",
        "",
        f"Base labels: `{base_dir}`. Common labels (eq. 3): {common}. NSD tolerance {tolerance_mm:g} mm.",
        "",
        "Mean over the common labels of the per-organ means over cases ± root-mean-square of the per-organ population "
        "SDs (anatomy thesis §3.2.2.2, eq. 2–4, Table 5), in %. An organ absent from both the base and the pseudo map "
        "of a case is left out of that organ's mean; absent from one only: Dice 0, NSD 0.",
        "",
        "| pseudo labels | metric | mean ± SD (%) | organs | cases |",
        "|---|---|---|---:|---:|",
    ]
    for row in result.quality.itertuples(index=False):
        lines.append(f"| {row.dataset} | {_DISPLAY.get(row.metric, row.metric)} | {row.table5} | {row.n_labels} "
                     f"| {row.n_cases} |")
    if len(result.organs):
        organs = list(dict.fromkeys(zip(result.organs["label"], result.organs["name"])))
        lines += ["", "Per organ: mean ± population SD over cases (%); `*` = not a common label.", "",
                  "| pseudo labels | metric | " + " | ".join(
                      f"{name}{'' if label in result.common else ' *'}" for label, name in organs) + " |",
                  "|---|---|" + "---|" * len(organs)]
        for (dataset, metric), group in result.organs.groupby(["dataset", "metric"], sort=False):
            cells = {int(r.label): _pct(r.mean, r.sd) for r in group.itertuples(index=False)}
            lines.append(f"| {dataset} | {_DISPLAY.get(metric, metric)} | "
                         + " | ".join(cells.get(int(label), "—") for label, _ in organs) + " |")
    if len(result.jsd):
        lines += ["", "Mean Jensen–Shannon divergence (base 2) of each dataset's organ-volume histogram to the "
                  "other datasets' (base included).", "",
                  "| dataset | " + " | ".join(dict.fromkeys(result.jsd["organ"])) + " |",
                  "|---|" + "---|" * result.jsd["organ"].nunique()]
        wide = result.jsd.pivot_table(index="dataset", columns="organ", values="mean_jsd", sort=False, dropna=False)
        for dataset in dict.fromkeys(result.jsd["dataset"]):
            values = [f"{wide.loc[dataset, organ]:.3f}" if math.isfinite(wide.loc[dataset, organ]) else "—"
                      for organ in dict.fromkeys(result.jsd["organ"])]
            lines.append(f"| {dataset} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "label"


def _plots(out: Path, result: LabelQuality,
           histograms: Mapping[int, tuple[np.ndarray, Mapping[str, np.ndarray]]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for label, (edges, counts) in histograms.items():
        name = result.names.get(label, str(label))
        fig, ax = plt.subplots(figsize=(7, 4))
        colours = [plt.get_cmap("tab20")(i) for i in range(20)]
        for i, (dataset, hist) in enumerate(counts.items()):
            total = hist.sum()
            if total == 0:
                continue
            density = hist / (total * np.diff(edges))
            is_base = dataset == BASE
            ax.stairs(density, edges, label=f"{dataset} (n={int(total)})",
                      color="black" if is_base else colours[i % len(colours)], linewidth=2.0 if is_base else 1.0,
                      alpha=1.0 if is_base else 0.8)
        ax.set_xlabel(f"{name} volume [ml]")
        ax.set_ylabel("density [1/ml]")
        ax.set_title(f"label {label} ({name}): volume distributions on common bins")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        path = out / "plots" / f"volumes_{label}_{_safe(name)}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        paths.append(path)
    if len(result.jsd):
        order = list(dict.fromkeys(result.jsd["dataset"]))
        data = [result.jsd.loc[result.jsd["dataset"] == d, "mean_jsd"].dropna().to_numpy() for d in order]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(order) + 2), 4))
        ax.boxplot(data, showfliers=False)
        for i, values in enumerate(data, start=1):  # one point per organ
            ax.scatter(np.full(values.size, float(i)), values, s=10, color="black", zorder=3)
        ax.set_xticks(range(1, len(order) + 1), order, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("mean JSD to the others (base 2)")
        ax.set_title("volume distributions: mean JSD per organ", fontsize=10)
        fig.tight_layout()
        path = out / "plots" / "jsd_box.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _write_outputs(out: Path, result: LabelQuality, histograms, *, base_dir: Path, tolerance_mm: float,
                   plots: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    tables = {"scores.csv": result.scores, "organs.csv": result.organs,
              "quality.csv": result.quality[["dataset", "metric", "mean", "sd", "table5", "n_labels", "n_cases"]],
              "volumes.csv": result.volumes, "jsd.csv": result.jsd, "jsd_pairs.csv": result.jsd_pairs}
    files = []
    for name, table in tables.items():
        write_csv_atomic(out / name, table)
        files.append(out / name)
    files.append(write_text_atomic(out / "quality.md", _markdown(result, base_dir=base_dir,
                                                                 tolerance_mm=tolerance_mm)))
    files.append(write_json_atomic(out / "summary.json", result.summary))
    if plots:
        files += _plots(out, result, histograms)
    return files
