"""``segqc evaluate``: every metric of a folder of predictions against a folder of ground truths."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from segqc.cli._common import EXIT_CASE_FAILURES, console, error_console, user_errors
from segqc.metrics.registry import METRICS, EmptyPolicy, parse_metric_names


def _parse_int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option} is empty")
    return values


def parse_regions(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """``["WT=1,2,3", "TC=1,3"]`` -> ``{"WT": (1, 2, 3), "TC": (1, 3)}``."""
    regions = {}
    for spec in specs:
        name, sep, members = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--region expects NAME=LABEL[,LABEL...], got {spec!r}")
        regions[name.strip()] = _parse_int_list(members, "--region")
    return regions


def print_summary(summary: dict, metrics: tuple[str, ...]) -> None:
    """A compact table: one row per label, mean over cases of the headline metrics present."""
    labels = summary.get("labels", {})
    present = {m for per_metric in labels.values() for m in per_metric}
    headline = [m for m in ("dice", "hd95", "nsd", "assd", "cc_dice", "cc_hd95", "cc_nsd", "pq", "lesion_dice")
                if m in present]
    table = Table(title="mean over cases", show_lines=False)
    for column in ("label", "name", "n"):
        table.add_column(column, justify="right" if column == "n" else "left")
    for m in headline:
        unit = METRICS[m.removeprefix("cc_")].unit
        table.add_column(m if unit == "1" else f"{m} [{unit}]", justify="right")
    for label, per_metric in labels.items():
        first = next(iter(per_metric.values()))
        n = max(v["n"] + v["n_nan"] for v in per_metric.values())
        cells = []
        for m in headline:
            entry = per_metric.get(m)
            cells.append("—" if entry is None or entry["mean"] is None else f"{entry['mean']:.3f}")
        table.add_row(str(label), first["label_name"], str(n), *cells)
    console.print(table)


def evaluate_command(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted label maps (CASE.nii.gz, ...)."),
    gt_dir: Path = typer.Argument(..., help="Folder of ground-truth label maps (nnU-Net labelsTr layout)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: metrics.csv, summary.json, cases/."),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", help=f"Comma-separated metrics (default: all overlap and distance metrics). Known: {', '.join(METRICS)}."
    ),
    tolerance: float = typer.Option(1.0, "--tolerance", help="NSD tolerance in mm."),
    percentile: float = typer.Option(95.0, "--percentile", help="Percentile of the robust Hausdorff distance (hd95)."),
    surface: str = typer.Option("surfel", "--surface", help="Surface definition: 'surfel' (DeepMind surface-distance) or 'voxel' (MONAI)."),
    per_component: bool = typer.Option(False, "--per-component", help="Add CC-metrics (cc_*) and component detection counts."),
    connectivity: int = typer.Option(26, "--connectivity", help="Connectivity of components: 6, 18 or 26 (2D: 4 or 8)."),
    voronoi_units: str = typer.Option("mm", "--voronoi-units", help="Distances of the Voronoi partition: 'mm' or 'voxel' (as ccmetrics/MONAI)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Labels to evaluate, e.g. 1,2,3 (default: dataset.json or all present)."),
    region: list[str] = typer.Option([], "--region", help="A region NAME=L1,L2 evaluated as the union of labels; repeatable."),
    empty_both: str = typer.Option("nan", "--empty-both", help="Result when GT and prediction are both empty: nan, best or worst."),
    empty_gt: str = typer.Option("worst", "--empty-gt", help="Result when only the GT is empty: nan, best or worst."),
    empty_pred: str = typer.Option("worst", "--empty-pred", help="Result when only the prediction is empty: nan, best or worst."),
    worst_distance: float = typer.Option(50.0, "--worst-distance", help="Worst value (mm) of unbounded distance metrics."),
    resample: bool = typer.Option(False, "--resample", help="Resample predictions on another grid onto the GT grid (nearest neighbour)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Parallel worker processes (0 = one per core)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Evaluate predictions against ground truths, per case and per class, in millimetres.

    Example: segqc evaluate nnunet_out/ labelsTs/ -o eval/ --per-component --jobs 2
    """
    from segqc.evaluation.evaluate import evaluate_folder

    with user_errors():
        names = parse_metric_names(metrics)
        policy = EmptyPolicy(both_empty=empty_both, gt_empty=empty_gt, pred_empty=empty_pred,  # type: ignore[arg-type]
                             worst_distance_mm=worst_distance)
        result = evaluate_folder(
            pred_dir,
            gt_dir,
            out_dir,
            metrics=names,
            tolerance_mm=tolerance,
            percentile=percentile,
            surface=surface,
            empty=policy,
            per_component=per_component,
            connectivity=connectivity,
            voronoi_units=voronoi_units,
            labels=_parse_int_list(labels, "--labels") if labels else None,
            regions=parse_regions(region) if region else None,
            resample=resample,
            jobs=jobs,
            scheduler=scheduler,
            progress=not quiet,
            return_details=True,
        )
    for case in result.missing_pred:
        error_console.print(f"[yellow]warning:[/] {case}: no prediction in {pred_dir}; evaluated as an empty prediction")
    for case in result.extra_pred:
        error_console.print(f"[yellow]warning:[/] {case}: prediction has no ground truth in {gt_dir}; skipped")
    for case, message in result.failed.items():
        error_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if result.reused:
        error_console.print(f"reused {len(result.reused)} finished case(s) from a previous run in {out_dir}")
    if not quiet:
        print_summary(result.summary, names)
    console.print(f"wrote {out_dir / 'metrics.csv'} and {out_dir / 'summary.json'}")
    if result.failed:
        raise typer.Exit(EXIT_CASE_FAILURES)
