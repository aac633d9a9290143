"""Speed and memory benchmark of segqc's distance and CC metrics against public reference tools.

Run from the repository root::

    python benchmarks/bench_metrics.py [--quick] [--skip-slow-peers] [--out benchmarks/results/metrics.json]

What it does, in one run (see ``benchmarks/README.md``):

1. builds deterministic synthetic cases (spheres / mm-round ellipsoids and a perturbed prediction);
2. times segqc and the peers (DeepMind ``surface-distance``, MONAI, medpy, ``ccmetrics``) on the same
   inputs, each (case, tool, task) in a fresh subprocess (forkserver or spawn) that also records the peak
   extra resident memory of the call (and, for segqc, the ``tracemalloc`` peak);
3. checks that segqc and the peers agree (relative / absolute differences);
4. times segqc against the number of components at a fixed total foreground volume;
5. prints a table and writes every number to a JSON file.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import re
import tempfile
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from segqc.metrics.surface import SurfaceMode

DISTANCE_METRICS = ("hd", "hd95", "assd", "masd", "nsd")
TOLERANCE_MM = 1.0
CC_WORST_HD95 = 50.0
TORCH_THREADS = 2

# --------------------------------------------------------------------------------------------
# Synthetic cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSpec:
    """Recipe of one synthetic case; ``radius_range`` is in voxels along the first axis."""

    name: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    n_spheres: int
    seed: int
    radius_range: tuple[float, float] = (2.0, 20.0)
    fp_fraction: float = 0.1


@dataclass
class Case:
    """A (prediction, ground truth) pair of boolean masks with its spacing in mm."""

    name: str
    pred: np.ndarray
    gt: np.ndarray
    spacing: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        return int(self.gt.size)


PERTURBATIONS = ("keep", "drop", "erode", "dilate", "shift")
PERTURBATION_P = (0.3, 0.1, 0.2, 0.2, 0.2)


def paint_ellipsoid(volume: np.ndarray, center: np.ndarray, radii: np.ndarray) -> None:
    """Set the voxels of an axis-aligned ellipsoid to True, touching only its bounding box."""
    lo = np.maximum(np.floor(center - radii).astype(int), 0)
    hi = np.minimum(np.ceil(center + radii).astype(int) + 1, volume.shape)
    if np.any(hi <= lo):
        return
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0
    volume[tuple(slice(a, b) for a, b in zip(lo, hi))] |= inside


def mm_round_radii(radius_vox: float, spacing: Sequence[float]) -> np.ndarray:
    """Per-axis radii (voxels) of a ball of ``radius_vox`` first-axis voxels, round in mm."""
    spacing_arr = np.asarray(spacing, dtype=float)
    return radius_vox * spacing_arr[0] / spacing_arr


def random_center(rng: np.random.Generator, shape: Sequence[int], radii: np.ndarray) -> np.ndarray:
    """A centre that keeps the ellipsoid inside the volume where the volume is large enough."""
    shape_arr = np.asarray(shape, dtype=float)
    lo = np.minimum(radii, shape_arr / 2)
    hi = np.maximum(shape_arr - 1 - radii, lo)
    return rng.uniform(lo, hi)


def perturb(
    rng: np.random.Generator, center: np.ndarray, radius_vox: float
) -> tuple[str, np.ndarray | None, float]:
    """Prediction of one ground-truth sphere: (kind, centre or None if dropped, radius)."""
    kind = str(rng.choice(PERTURBATIONS, p=PERTURBATION_P))
    if kind == "drop":
        return kind, None, radius_vox
    if kind == "erode":
        return kind, center, max(radius_vox - int(rng.integers(1, 3)), 1.0)
    if kind == "dilate":
        return kind, center, radius_vox + int(rng.integers(1, 3))
    if kind == "shift":
        direction = rng.normal(size=center.size)
        direction /= np.linalg.norm(direction)
        return kind, center + direction * int(rng.integers(1, 4)), radius_vox
    return kind, center, radius_vox


def build_case(spec: CaseSpec, centers: Sequence[np.ndarray] | None = None,
               radii: Sequence[float] | None = None) -> Case:
    """Ground truth of ``spec.n_spheres`` balls (round in mm) and a perturbed prediction.

    Each ground-truth ball is kept, dropped, eroded or dilated by 1-2 voxels (radius change) or
    shifted by 1-3 voxels in the prediction; ``fp_fraction`` extra false-positive balls are added.
    ``centers``/``radii`` (voxels) may be given to place the balls instead of drawing them.
    """
    rng = np.random.default_rng(spec.seed)
    gt = np.zeros(spec.shape, dtype=bool)
    pred = np.zeros(spec.shape, dtype=bool)
    kinds = {k: 0 for k in PERTURBATIONS}
    for i in range(spec.n_spheres):
        radius = float(radii[i]) if radii is not None else float(rng.uniform(*spec.radius_range))
        axis_radii = mm_round_radii(radius, spec.spacing)
        center = np.asarray(centers[i], float) if centers is not None else random_center(rng, spec.shape, axis_radii)
        paint_ellipsoid(gt, center, axis_radii)
        kind, p_center, p_radius = perturb(rng, center, radius)
        kinds[kind] += 1
        if p_center is not None:
            paint_ellipsoid(pred, p_center, mm_round_radii(p_radius, spec.spacing))
    n_fp = max(1, round(spec.fp_fraction * spec.n_spheres))
    for _ in range(n_fp):
        radius = float(rng.uniform(spec.radius_range[0], max(spec.radius_range[1] / 2, spec.radius_range[0])))
        axis_radii = mm_round_radii(radius, spec.spacing)
        paint_ellipsoid(pred, random_center(rng, spec.shape, axis_radii), axis_radii)
    info = {
        "shape": list(spec.shape), "spacing": list(spec.spacing), "n_spheres": spec.n_spheres,
        "n_false_positive_spheres": n_fp, "perturbations": kinds, "seed": spec.seed,
        "gt_voxels": int(np.count_nonzero(gt)), "pred_voxels": int(np.count_nonzero(pred)),
    }
    return Case(spec.name, pred, gt, tuple(spec.spacing), info)


def non_overlapping_centers(rng: np.random.Generator, shape: Sequence[int], n: int, radius: float,
                            gap: float = 3.0, max_tries: int = 200_000) -> list[np.ndarray]:
    """``n`` centres of balls of ``radius`` that neither touch each other nor the border."""
    centers: list[np.ndarray] = []
    min_dist = 2 * radius + gap
    for _ in range(max_tries):
        candidate = rng.uniform(radius + 1, np.asarray(shape) - radius - 2)
        if all(np.linalg.norm(candidate - c) > min_dist for c in centers):
            centers.append(candidate)
            if len(centers) == n:
                return centers
    raise RuntimeError(f"could not place {n} balls of radius {radius} in {tuple(shape)}")


def build_count_case(shape: tuple[int, ...], n_components: int, total_voxels: float, seed: int) -> Case:
    """Equal, separated balls whose total volume is ``total_voxels``, split into ``n_components``."""
    radius = (3 * total_voxels / (4 * math.pi * n_components)) ** (1 / 3)
    rng = np.random.default_rng(seed)
    centers = non_overlapping_centers(rng, shape, n_components, radius + 2)  # +2: room for dilation
    spec = CaseSpec(f"count{n_components}", shape, (1.0,) * len(shape), n_components, seed + 1)
    case = build_case(spec, centers=centers, radii=[radius] * n_components)
    case.info["radius_vox"] = radius
    return case


def case_specs(quick: bool) -> list[CaseSpec]:
    """The two benchmark cases (smaller with ``quick``)."""
    if quick:
        return [CaseSpec("A", (128, 128, 128), (1.0, 1.0, 1.0), 15, seed=1),
                CaseSpec("B", (256, 256, 150), (0.8, 0.8, 2.5), 30, seed=2)]
    return [CaseSpec("A", (256, 256, 256), (1.0, 1.0, 1.0), 40, seed=1),
            CaseSpec("B", (512, 512, 300), (0.8, 0.8, 2.5), 100, seed=2)]


def save_case(case: Case, directory: Path) -> None:
    """Write the masks of a case as .npy files for the measurement subprocesses."""
    np.save(directory / f"{case.name}_pred.npy", case.pred)
    np.save(directory / f"{case.name}_gt.npy", case.gt)


def load_case(directory: Path, name: str, spacing: Sequence[float]) -> Case:
    """Read back a case written by :func:`save_case`."""
    return Case(name, np.load(directory / f"{name}_pred.npy"), np.load(directory / f"{name}_gt.npy"),
                tuple(spacing))


def tiny_case(spacing: Sequence[float]) -> Case:
    """A 24^3 case used to warm up a tool (lazy imports, caches) before it is timed."""
    spec = CaseSpec("warmup", (24, 24, 24), tuple(spacing), 2, seed=0, radius_range=(2.0, 4.0))
    return build_case(spec)


# --------------------------------------------------------------------------------------------
# Tools under test: prepare(case) builds the tool's inputs (not timed); call(inputs) is timed
# and returns the metric values.
# --------------------------------------------------------------------------------------------


def configure_torch() -> int:
    """Limit torch to ``TORCH_THREADS`` CPU threads; returns the resulting thread count."""
    import torch

    torch.set_num_threads(TORCH_THREADS)
    return torch.get_num_threads()


def prepare_identity(case: Case) -> Case:
    """segqc and surface-distance take the boolean masks as they are."""
    return case


def segqc_distance(case: Case, surface: SurfaceMode) -> dict[str, float]:
    """segqc: all five distance metrics from one surface-distance pass."""
    from segqc.metrics.binary import MetricSettings, compare_masks

    settings = MetricSettings(tolerance_mm=TOLERANCE_MM, surface=surface)
    results = compare_masks(case.pred, case.gt, case.spacing, metrics=DISTANCE_METRICS, settings=settings)
    return {r.metric: r.value for r in results}


def call_segqc_surfel(case: Case) -> dict[str, float]:
    """segqc distance metrics, DeepMind (surfel) surface definition."""
    return segqc_distance(case, "surfel")


def call_segqc_voxel(case: Case) -> dict[str, float]:
    """segqc distance metrics, MONAI (voxel) surface definition."""
    return segqc_distance(case, "voxel")


def call_deepmind(case: Case) -> dict[str, float]:
    """DeepMind surface-distance: hd, hd95, mean of the directed averages (masd), surface Dice."""
    import surface_distance

    sd = surface_distance.compute_surface_distances(case.gt, case.pred, case.spacing)
    hd = surface_distance.compute_robust_hausdorff(sd, 100)
    hd95 = surface_distance.compute_robust_hausdorff(sd, 95)
    gt_to_pred, pred_to_gt = surface_distance.compute_average_surface_distance(sd)
    nsd = surface_distance.compute_surface_dice_at_tolerance(sd, TOLERANCE_MM)
    return {"hd": float(hd), "hd95": float(hd95), "masd": float((gt_to_pred + pred_to_gt) / 2), "nsd": float(nsd)}


MEDPY_METRICS = ("hd", "hd95_pooled", "asd", "assd")


def call_segqc_medpy(case: Case) -> dict[str, float]:
    """segqc with medpy's definitions: voxel surfaces, pooled hd95, directed asd, pooled assd."""
    from segqc.metrics.binary import MetricSettings, compare_masks

    results = compare_masks(case.pred, case.gt, case.spacing, metrics=MEDPY_METRICS,
                            settings=MetricSettings(surface="voxel"))
    return {r.metric: r.value for r in results}


def call_medpy(case: Case) -> dict[str, float]:
    """medpy.metric.binary hd, hd95 (pooled), asd (prediction to GT) and assd, with the spacing."""
    from medpy.metric import binary

    spacing = case.spacing
    return {"hd": float(binary.hd(case.pred, case.gt, voxelspacing=spacing)),
            "hd95_pooled": float(binary.hd95(case.pred, case.gt, voxelspacing=spacing)),
            "asd": float(binary.asd(case.pred, case.gt, voxelspacing=spacing)),
            "assd": float(binary.assd(case.pred, case.gt, voxelspacing=spacing))}


def one_hot(mask: np.ndarray) -> np.ndarray:
    """(1, 2, *shape) float32 one-hot encoding (background, foreground) of a boolean mask."""
    out = np.empty((1, 2, *mask.shape), dtype=np.float32)
    out[0, 0] = ~mask
    out[0, 1] = mask
    return out


def prepare_monai(case: Case) -> dict[str, Any]:
    """One-hot torch tensors for MONAI."""
    import torch

    configure_torch()
    return {"pred": torch.from_numpy(one_hot(case.pred)), "gt": torch.from_numpy(one_hot(case.gt)),
            "spacing": list(case.spacing)}


def call_monai(inputs: dict[str, Any]) -> dict[str, float]:
    """MONAI voxel-mode hd, hd95, symmetric average surface distance (assd) and surface Dice."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, gt, spacing = inputs["pred"], inputs["gt"], inputs["spacing"]
    hd = compute_hausdorff_distance(pred, gt, include_background=False, spacing=spacing)
    hd95 = compute_hausdorff_distance(pred, gt, include_background=False, percentile=95, spacing=spacing)
    assd = compute_average_surface_distance(pred, gt, include_background=False, symmetric=True, spacing=spacing)
    nsd = compute_surface_dice(pred, gt, class_thresholds=[TOLERANCE_MM], include_background=False,
                               spacing=spacing)
    return {"hd": float(hd.item()), "hd95": float(hd95.item()), "assd": float(assd.item()),
            "nsd": float(nsd.item())}


def segqc_cc(case: Case, metric: str) -> dict[str, float]:
    """segqc CC-metric mean over ground-truth components (default settings, Voronoi in mm)."""
    from segqc.metrics.components import compare_components

    evaluation = compare_components(case.pred, case.gt, case.spacing, metrics=(metric,))
    return {r.metric: r.value for r in evaluation.means}


def call_segqc_cc_dice(case: Case) -> dict[str, float]:
    """segqc cc_dice."""
    return segqc_cc(case, "dice")


def call_segqc_cc_hd95(case: Case) -> dict[str, float]:
    """segqc cc_hd95."""
    return segqc_cc(case, "hd95")


def prepare_ccmetrics(case: Case) -> dict[str, np.ndarray]:
    """One-hot float32 numpy arrays for ccmetrics."""
    configure_torch()
    return {"pred": one_hot(case.pred), "gt": one_hot(case.gt)}


def call_ccmetrics(inputs: dict[str, np.ndarray], metric: str) -> dict[str, float]:
    """ccmetrics CC-metric (patient mean over components), one call plus ``cc_aggregate``."""
    import CCMetrics

    if metric == "dice":
        scorer = CCMetrics.CCDiceMetric()
    else:
        scorer = CCMetrics.CCHausdorffDistance95Metric(metric_worst_score=CC_WORST_HD95)
    scorer(y_pred=inputs["pred"], y=inputs["gt"])
    return {f"cc_{metric}": float(scorer.cc_aggregate().reshape(-1)[0].item())}


def call_ccmetrics_dice(inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """ccmetrics CCDiceMetric."""
    return call_ccmetrics(inputs, "dice")


def call_ccmetrics_hd95(inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """ccmetrics CCHausdorffDistance95Metric (worst score 50)."""
    return call_ccmetrics(inputs, "hd95")


@dataclass(frozen=True)
class Task:
    """One timed (task, tool) pair. ``baseline`` names the segqc task a peer is compared with."""

    key: str
    task: str
    tool: str
    prepare: Callable[[Case], Any]
    call: Callable[[Any], dict[str, float]]
    is_segqc: bool
    baseline: str = ""
    slow: bool = False


TASKS: dict[str, Task] = {t.key: t for t in [
    Task("segqc_surfel", "distance, surfel (DeepMind def.)", "segqc", prepare_identity, call_segqc_surfel, True),
    Task("deepmind", "distance, surfel (DeepMind def.)", "surface-distance", prepare_identity, call_deepmind,
         False, baseline="segqc_surfel"),
    Task("segqc_voxel", "distance, voxel (MONAI def.)", "segqc", prepare_identity, call_segqc_voxel, True),
    Task("monai", "distance, voxel (MONAI def.)", "MONAI", prepare_monai, call_monai, False,
         baseline="segqc_voxel"),
    Task("segqc_medpy", "distance, voxel (medpy def.)", "segqc", prepare_identity, call_segqc_medpy, True),
    Task("medpy", "distance, voxel (medpy def.)", "medpy", prepare_identity, call_medpy, False,
         baseline="segqc_medpy"),
    Task("segqc_cc_dice", "CC dice", "segqc", prepare_identity, call_segqc_cc_dice, True),
    Task("ccmetrics_cc_dice", "CC dice", "ccmetrics", prepare_ccmetrics, call_ccmetrics_dice, False,
         baseline="segqc_cc_dice", slow=True),
    Task("segqc_cc_hd95", "CC hd95", "segqc", prepare_identity, call_segqc_cc_hd95, True),
    Task("ccmetrics_cc_hd95", "CC hd95", "ccmetrics", prepare_ccmetrics, call_ccmetrics_hd95, False,
         baseline="segqc_cc_hd95", slow=True),
]}


# --------------------------------------------------------------------------------------------
# Measurement (runs in a fresh subprocess per task)
# --------------------------------------------------------------------------------------------


class PeakRss:
    """Peak resident set size during a block, in bytes.

    Uses the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``), which
    sees every allocation (numpy, C++, torch); where that is not available it falls back to a
    psutil sampling thread (every 1 ms), which may miss short peaks.
    """

    def __init__(self) -> None:
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _vm_hwm() -> int | None:
        try:
            match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
            return int(match.group(1)) * 1024 if match else None
        except OSError:
            return None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(0.001)

    def __enter__(self) -> PeakRss:
        if self._reset_hwm() and self._vm_hwm() is not None:
            self.method = "VmHWM"
        else:
            self.method = "psutil-1ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = self._vm_hwm() or 0


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    return psutil.Process().memory_info().rss


def measure_task(task_key: str, case_dir: str, case_name: str, spacing: Sequence[float], repeats: int,
                 trace: bool) -> dict[str, Any]:
    """Time ``repeats`` calls of a task on a saved case and record its peak extra memory.

    Meant to run in a fresh process. Peak extra RSS = peak RSS during the timed calls minus the
    RSS once the inputs are loaded and prepared. With ``trace``, one more call runs under
    ``tracemalloc`` (numpy reports its buffers to it) to give the peak of traced allocations.
    """
    warnings.simplefilter("ignore")  # peers' deprecation / empty-prediction warnings
    task = TASKS[task_key]
    warm_inputs = task.prepare(tiny_case(spacing))
    task.call(warm_inputs)
    del warm_inputs
    inputs = task.prepare(load_case(Path(case_dir), case_name, spacing))
    gc.collect()
    baseline = current_rss()
    times: list[float] = []
    with PeakRss() as peak:
        for _ in range(repeats):
            start = time.perf_counter()
            values = task.call(inputs)
            times.append(time.perf_counter() - start)
    traced_peak = None
    if trace:
        gc.collect()
        tracemalloc.start()
        task.call(inputs)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"times_s": times, "values": values, "peak_extra_rss_bytes": max(peak.peak - baseline, 0),
            "rss_method": peak.method, "tracemalloc_peak_bytes": traced_peak}


PRELOAD_MODULES = ["numpy", "scipy.ndimage", "scipy.spatial", "cc3d", "psutil", "segqc.metrics.binary",
                   "segqc.metrics.components", "surface_distance", "torch", "monai.metrics", "CCMetrics"]


def process_context(start_method: str) -> multiprocessing.context.BaseContext:
    """Multiprocessing context for the measurements.

    ``forkserver``: every measurement runs in a fresh process forked from a server that has
    imported the tools once (no per-measurement import cost, no state of the parent);
    ``spawn``: a fresh interpreter per measurement (slower: torch and MONAI are imported each time).
    """
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(PRELOAD_MODULES)
    return context


def run_isolated(context: multiprocessing.context.BaseContext, fn: Callable[..., dict[str, Any]],
                 *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh subprocess; an exception becomes ``{"error": ...}``."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(fn, *args).result()
    except Exception as exc:  # noqa: BLE001 - any failure of a peer is recorded, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


# --------------------------------------------------------------------------------------------
# Agreement between segqc and the peers
# --------------------------------------------------------------------------------------------


def relative_difference(a: float, b: float) -> float:
    """|a - b| / max(|b|, tiny)."""
    return abs(a - b) / max(abs(b), 1e-12)


def matched_cc_reference(case: Case, metric: str) -> float:
    """segqc CC value with the settings ccmetrics uses (Voronoi in voxel units, MONAI surfaces,
    distances in voxels since ccmetrics takes no spacing), for the agreement check only."""
    from segqc.metrics.binary import MetricSettings
    from segqc.metrics.components import compare_components

    spacing = (1.0,) * case.gt.ndim if metric != "dice" else case.spacing
    evaluation = compare_components(case.pred, case.gt, spacing, metrics=(metric,), voronoi_units="voxel",
                                    settings=MetricSettings(surface="voxel"))
    return evaluation.means[0].value


def agreement(case: Case, task: Task, peer_values: dict[str, float], segqc_values: dict[str, float]) -> dict:
    """How closely a peer's values match segqc's on the same case."""
    if task.key in ("deepmind", "monai", "medpy"):
        names = MEDPY_METRICS if task.key == "medpy" else DISTANCE_METRICS
        shared = [m for m in names if m in peer_values and m in segqc_values]
        diffs = {m: relative_difference(segqc_values[m], peer_values[m]) for m in shared}
        head = "hd95_pooled" if task.key == "medpy" else "hd95"
        return {"kind": "relative", "metric": head, "value": diffs[head], "all": diffs,
                "text": f"{head} rel {diffs[head]:.1e} (max {max(diffs.values()):.1e})"}
    metric = "dice" if task.key == "ccmetrics_cc_dice" else "hd95"
    reference = matched_cc_reference(case, metric)
    diff = abs(reference - peer_values[f"cc_{metric}"])
    return {"kind": "absolute", "metric": f"cc_{metric}", "value": diff, "segqc_matched": reference,
            "peer": peer_values[f"cc_{metric}"], "text": f"cc_{metric} abs {diff:.1e}"}


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------


def benchmark_case(case: Case, case_dir: Path, repeats: int, peer_repeats: int, skip_slow_peers: bool,
                   context: multiprocessing.context.BaseContext, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every task on one case; each row holds times, memory, values, ratio and agreement."""
    rows: dict[str, dict[str, Any]] = {}
    for task in TASKS.values():
        row: dict[str, Any] = {"case": case.name, "task": task.task, "tool": task.tool, "key": task.key}
        if task.slow and skip_slow_peers and case.name == "B":
            row["error"] = "skipped (--skip-slow-peers)"
        else:
            n = repeats if task.is_segqc else peer_repeats
            log(f"case {case.name}: {task.tool} / {task.task} ({n} run{'s' * (n > 1)}) ...")
            row.update(run_isolated(context, measure_task, task.key, str(case_dir), case.name, case.spacing, n,
                                    task.is_segqc))
        if "times_s" in row:
            row["best_s"] = min(row["times_s"])
            row["peak_extra_rss_bytes_per_voxel"] = row["peak_extra_rss_bytes"] / case.n_voxels
            if row.get("tracemalloc_peak_bytes") is not None:
                row["tracemalloc_peak_bytes_per_voxel"] = row["tracemalloc_peak_bytes"] / case.n_voxels
            log(f"    best {row['best_s']:.3f} s, peak +{row['peak_extra_rss_bytes'] / 2**20:.0f} MB")
        else:
            log(f"    {row['error']}")
        base = rows.get(task.baseline)
        if base is not None and "best_s" in row and "best_s" in base:
            row["ratio"] = row["best_s"] / base["best_s"]
            row["agreement"] = agreement(case, task, row["values"], base["values"])
        rows[task.key] = row
    return list(rows.values())


def best_time(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def benchmark_component_count(shape: tuple[int, ...], counts: Sequence[int], total_voxels: float,
                              repeats: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """segqc time for the same total foreground volume split into more and more components."""
    from segqc.metrics.binary import MetricSettings, compare_masks
    from segqc.metrics.components import compare_components, label_components

    rows = []
    settings = MetricSettings(tolerance_mm=TOLERANCE_MM)
    for n in counts:
        case = build_count_case(shape, n, total_voxels, seed=100 + n)
        n_gt = label_components(case.gt)[1]
        cc_times = best_time(partial(compare_components, case.pred, case.gt, case.spacing, metrics=("dice", "hd95")),
                             repeats)
        dist_times = best_time(partial(compare_masks, case.pred, case.gt, case.spacing, metrics=DISTANCE_METRICS,
                                       settings=settings), repeats)
        rows.append({"n_spheres": n, "gt_components": n_gt, "gt_voxels": case.info["gt_voxels"],
                     "pred_voxels": case.info["pred_voxels"], "radius_vox": case.info["radius_vox"],
                     "cc_dice_hd95_times_s": cc_times, "cc_dice_hd95_best_s": min(cc_times),
                     "distance_times_s": dist_times, "distance_best_s": min(dist_times)})
        log(f"components {n}: CC {min(cc_times):.3f} s, distance {min(dist_times):.3f} s")
    return rows


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """CPU, thread and package versions of this run."""
    import torch

    threads_before = torch.get_num_threads()
    versions: dict[str, str | None] = {}
    for package in ("segqc", "numpy", "scipy", "connected-components-3d", "torch", "monai",
                    "surface-distance", "ccmetrics", "medpy", "psutil"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu_count": os.cpu_count(), "torch_threads_default": threads_before,
            "torch_threads_used": configure_torch(), "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor(), "versions": versions}


def format_seconds(row: dict[str, Any]) -> str:
    """Best time, or why there is none (skipped, or the error in red)."""
    if "best_s" in row:
        return f"{row['best_s']:.3f}"
    return row["error"] if row["error"].startswith("skipped") else f"[red]{row['error']}[/red]"


def print_case_table(rows: list[dict[str, Any]], console: Any) -> None:
    """The main table: one row per (case, task, tool)."""
    from rich.table import Table

    table = Table(title="segqc vs peers (wall clock, best of runs; peak = extra RSS during the call)")
    columns: list[tuple[str, JustifyMethod]] = [
        ("case", "left"), ("task", "left"), ("tool", "left"), ("seconds", "right"), ("all runs (s)", "right"),
        ("peak MB", "right"), ("B/voxel rss", "right"), ("B/voxel tracemalloc", "right"),
        ("ratio peer/segqc", "right"), ("agreement", "left")]
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for row in rows:
        measured = "times_s" in row
        table.add_row(
            row["case"], row["task"], row["tool"], format_seconds(row),
            ", ".join(f"{t:.3f}" for t in row["times_s"]) if measured else "",
            f"{row['peak_extra_rss_bytes'] / 2**20:.0f}" if measured else "",
            f"{row['peak_extra_rss_bytes_per_voxel']:.2f}" if measured else "",
            f"{row['tracemalloc_peak_bytes_per_voxel']:.2f}" if "tracemalloc_peak_bytes_per_voxel" in row else "",
            f"{row['ratio']:.1f}x" if "ratio" in row else "",
            row["agreement"]["text"] if "agreement" in row else "",
        )
    console.print(table)


def print_count_table(rows: list[dict[str, Any]], shape: Sequence[int], console: Any) -> None:
    """Seconds against the number of components at a fixed total foreground volume."""
    from rich.table import Table

    table = Table(title=f"segqc time vs number of components ({'x'.join(map(str, shape))}, same total volume)")
    for name in ("spheres", "GT components", "GT voxels", "radius (vox)",
                 "compare_components dice+hd95 (s)", "compare_masks distances (s)"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(str(row["n_spheres"]), str(row["gt_components"]), str(row["gt_voxels"]),
                      f"{row['radius_vox']:.1f}", f"{row['cc_dice_hd95_best_s']:.3f}",
                      f"{row['distance_best_s']:.3f}")
    console.print(table)


def print_cases(cases: list[Case], console: Any) -> None:
    """One line per synthetic case."""
    for case in cases:
        info = case.info
        console.print(f"case {case.name}: shape {tuple(info['shape'])}, spacing {tuple(info['spacing'])} mm, "
                      f"{info['n_spheres']} spheres + {info['n_false_positive_spheres']} FP, "
                      f"GT {info['gt_voxels']} vox, pred {info['pred_voxels']} vox, {info['perturbations']}, "
                      f"built in {info['build_s']:.2f} s")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volumes, for a smoke run (< 1 min)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/metrics.json"),
                        help="JSON file for all numbers (directories are created)")
    parser.add_argument("--skip-slow-peers", action="store_true", help="skip ccmetrics on case B")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each segqc call (best is reported)")
    parser.add_argument("--start-method", choices=("forkserver", "spawn"), default="forkserver",
                        help="how the fresh process of each measurement is started")
    parser.add_argument("--peer-repeats", type=int, default=1, help="timed runs of each peer call")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every benchmark, print the tables and write the JSON file."""
    from rich.console import Console

    args = parse_args(argv)
    console = Console(width=220)
    log = lambda message: console.print(f"[dim]{message}[/dim]")  # noqa: E731
    started = time.perf_counter()
    env = environment()
    console.print(f"CPU count: {env['cpu_count']}; torch.get_num_threads(): {env['torch_threads_default']} "
                  f"(set to {env['torch_threads_used']} for MONAI / ccmetrics)")

    cases = []
    for spec in case_specs(args.quick):
        start = time.perf_counter()
        case = build_case(spec)
        case.info["build_s"] = time.perf_counter() - start
        cases.append(case)
    print_cases(cases, console)

    rows: list[dict[str, Any]] = []
    context = process_context(args.start_method)
    with tempfile.TemporaryDirectory(prefix="segqc-bench-") as tmp:
        for case in cases:
            save_case(case, Path(tmp))
        for case in cases:
            rows.extend(benchmark_case(case, Path(tmp), args.repeats, args.peer_repeats, args.skip_slow_peers,
                                       context, log))

    count_shape = (128, 128, 128) if args.quick else (192, 192, 192)
    total_voxels = 320 * 4 / 3 * math.pi * (5.0 * count_shape[0] / 192) ** 3  # radius 5 vox at 320 spheres (192^3)
    count_rows = benchmark_component_count(count_shape, (5, 20, 80, 320), total_voxels, args.repeats, log)

    print_case_table(rows, console)
    print_count_table(count_rows, count_shape, console)
    elapsed = time.perf_counter() - started
    console.print(f"total benchmark time: {elapsed:.0f} s")

    report = {"command": "python benchmarks/bench_metrics.py" + (" --quick" if args.quick else "")
              + (" --skip-slow-peers" if args.skip_slow_peers else ""),
              "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "environment": env, "tolerance_mm": TOLERANCE_MM,
              "cases": {c.name: c.info for c in cases}, "results": rows,
              "component_count": {"shape": list(count_shape), "total_voxels_target": total_voxels,
                                  "rows": count_rows},
              "total_seconds": elapsed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
