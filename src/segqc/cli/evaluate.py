"""``segqc evaluate``: every metric of a folder of predictions against a folder of ground truths."""

from __future__ import annotations

import glob
from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import (
    EXIT_BAD_INPUT,
    console,
    prepare_output_dir,
    print_error,
    print_run_footer,
    print_warning,
    user_errors,
)
from segqc.execution.run import check_output_outside
from segqc.metrics.registry import DEFAULT_METRICS, METRICS, EmptyPolicy, EmptyRule, parse_metric_names


def _parse_int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option} is empty")
    return values


def _unread_files(folder: Path, case: str) -> str:
    """``" (CASE.npy: not an image format segqc reads: .nii.gz, ...)"`` naming the files
    ``CASE.*`` of ``folder`` (there, yet not read as the case's file), else ``""``."""
    from segqc.io.images import IMAGE_EXTENSIONS

    names = sorted(p.name for p in folder.glob(f"{glob.escape(case)}.*") if p.is_file())
    if not names:
        return ""
    return f" ({', '.join(names[:3])}: not an image format segqc reads: {', '.join(IMAGE_EXTENSIONS)})"


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


def parse_class_tolerances(specs: list[str]) -> dict[str, float]:
    """``["1=2.0", "LV=1.5"]`` -> ``{"1": 2.0, "LV": 1.5}`` (NSD tolerance in mm per class or region)."""
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--class-tolerance expects LABEL=MM, e.g. 1=2.0 or LV=1.5; got {spec!r}") from None
    return out


def lesion_settings(preset: str, dilation: int | None, min_volume: float | None):
    """The lesion-wise settings of a preset (``brats-gli`` ... ``brats-met``, ``mist``) with the
    dilation and minimum volume overridden where given."""
    from segqc.metrics.lesion import LesionSettings

    key = preset.strip().lower()
    overrides: dict = {}
    if dilation is not None:
        overrides["dilation_iterations"] = dilation
    if min_volume is not None:
        overrides["lesion_volume_threshold"] = min_volume
    if key == "mist":
        return LesionSettings.mist(**overrides)
    if key.startswith("brats"):
        return LesionSettings.brats(key.removeprefix("brats").lstrip("-_") or "GLI", **overrides)
    raise ValueError(f"--lesion-preset must be brats-gli, brats-ssa, brats-ped, brats-men, brats-met or mist; "
                     f"got {preset!r}")


def _parse_thresholds(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--froc expects comma-separated probabilities, e.g. 0.1,0.5,0.9; got {text!r}") from None


def _parse_spacing(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--spacing expects comma-separated millimetres, e.g. 0.5,0.5; got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"--spacing expects positive millimetres, got {text!r}")
    return values


def _check_spacing_applies(spacing: str | None, gt_dir: Path, pred_dir: Path) -> None:
    """``--spacing`` is for files that carry no spacing (PNG/TIFF); refuse it before any case runs
    when every ground truth and every prediction stores its own."""
    from segqc.errors import InputError
    from segqc.io.images import IMAGE_EXTENSIONS, carries_spacing

    if spacing is None or not gt_dir.is_dir():
        return
    folders = [gt_dir] + ([pred_dir] if pred_dir.is_dir() else [])
    files = [p for folder in folders for p in folder.iterdir()
             if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    if files and all(carries_spacing(p) for p in files):
        raise InputError("--spacing applies only to PNG/TIFF files, which carry no spacing; the ground truths and "
                         "predictions here store their own", gt_dir)


def _folders(pred_pos: Path | None, gt_pos: Path | None, pred: Path | None, gt: Path | None) -> tuple[Path, Path]:
    """PRED GT positionally, or --pred/--gt (not both ways at once)."""
    if (pred is not None or gt is not None) and (pred_pos is not None or gt_pos is not None):
        raise ValueError("give the folders either positionally (PRED_DIR GT_DIR) or as --pred/--gt, not both")
    pred_dir, gt_dir = (pred, gt) if (pred is not None or gt is not None) else (pred_pos, gt_pos)
    if pred_dir is None or gt_dir is None:
        raise ValueError("need a prediction folder and a ground-truth folder: PRED_DIR GT_DIR, or --pred and --gt")
    return pred_dir, gt_dir


def swapped_folders_warning(pred_dir: Path, gt_dir: Path) -> str | None:
    """nnU-Net's own evaluation takes GT first; a dataset.json beside the "prediction" folder
    only is the usual sign of swapped arguments (precision and recall would be exchanged)."""
    from segqc.io.datasets import find_dataset_json

    if find_dataset_json(pred_dir) is not None and find_dataset_json(gt_dir) is None:
        return (f"dataset.json sits beside the prediction folder {pred_dir} but not beside the ground truths "
                f"{gt_dir}: are the folders swapped? The order is PRED_DIR GT_DIR (or use --pred/--gt)")
    return None


def evaluate_command(
    pred_pos: Path | None = typer.Argument(None, metavar="PRED_DIR",
                                           help="Folder of predicted label maps (CASE.nii.gz, ...)."),
    gt_pos: Path | None = typer.Argument(None, metavar="GT_DIR",
                                         help="Folder of ground-truth label maps (nnU-Net labelsTr layout)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: metrics.csv, summary.json, cases/."),
    pred: Path | None = typer.Option(None, "--pred", help="Prediction folder (instead of the first argument)."),
    gt: Path | None = typer.Option(None, "--gt", help="Ground-truth folder (instead of the second argument)."),
    metrics: str | None = typer.Option(
        None, "--metrics", help=f"Comma-separated metrics (default: {','.join(DEFAULT_METRICS)}). "
                                f"Known: {', '.join(METRICS)}; cc_<metric> adds per-component metrics."
    ),
    tolerance: float = typer.Option(1.0, "--tolerance", help="NSD tolerance in mm."),
    class_tolerance: list[str] = typer.Option(
        [], "--class-tolerance", help="NSD tolerance of one class or region, LABEL=MM (value or name, e.g. 1=2.0 or "
                                      "LV=1.5), as MONAI's class_thresholds; repeatable."),
    percentile: float = typer.Option(95.0, "--percentile",
                                     help="Percentile (0-100) of hd95, hd95_pooled and the directed hd95_* metrics."),
    surface: str = typer.Option("surfel", "--surface",
                                help="Surface definition: 'surfel' (DeepMind surface-distance) or 'voxel' (MONAI, "
                                     "medpy, MetricsReloaded)."),
    distance: str = typer.Option("euclidean", "--distance",
                                 help="Surface distance: euclidean (mm), or MONAI's chessboard / taxicab (voxel "
                                      "surfaces, grid steps)."),
    beta: float = typer.Option(1.0, "--beta", help="Beta of the fbeta metric."),
    boundary_width: float = typer.Option(1.0, "--boundary-width", help="Band width (mm) of boundary_iou."),
    boundary_definition: str = typer.Option("distance", "--boundary-definition",
                                            help="boundary_iou band: 'distance' (within the width of the "
                                                 "background, mm) or 'metricsreloaded' (its erosion border)."),
    match_threshold: float = typer.Option(0.5, "--match-threshold",
                                          help="Instances (pq, sq, rq) match when IoU (or Dice) exceeds this."),
    match_inclusive: bool = typer.Option(False, "--match-inclusive",
                                         help="Match at IoU >= threshold instead of > (panoptica's rule)."),
    match_criterion: str = typer.Option("iou", "--match-criterion", help="Instance matching by 'iou' or 'dice'."),
    match_method: str = typer.Option("hungarian", "--match-method",
                                     help="hungarian (best total among pairs above the threshold), unique (IoU > 0.5 "
                                          "only) or monai (MONAI's: assign over all pairs, then threshold)."),
    instances: bool = typer.Option(False, "--instances",
                                   help="PRED and GT are instance maps (every value one object; touching objects stay "
                                        "apart): pq, sq, rq and the other metrics on label 'instances'."),
    lesion_preset: str = typer.Option("brats-gli", "--lesion-preset",
                                      help="Parameters of the lesion-wise metrics: brats-gli, brats-ssa, brats-ped, "
                                           "brats-men, brats-met (BraTS 2023) or mist."),
    lesion_dilation: int | None = typer.Option(None, "--lesion-dilation",
                                               help="Dilations (voxels) of each GT lesion when matching (preset's)."),
    lesion_min_volume: float | None = typer.Option(None, "--lesion-min-volume",
                                                   help="GT lesions up to this volume (mm^3) are ignored (preset's)."),
    froc: str | None = typer.Option(None, "--froc",
                                    help="With --soft: lesion detection (FROC points: sensitivity vs false positives "
                                         "per case) at these probability thresholds, e.g. 0.1,0.3,0.5,0.7,0.9."),
    class_mean: bool = typer.Option(False, "--class-mean",
                                    help="Add label 'mean': per case and metric, the mean over the classes."),
    per_component: bool = typer.Option(False, "--per-component",
                                       help="Add CC-metrics (cc_*) and component detection counts."),
    connectivity: int = typer.Option(26, "--connectivity",
                                     help="Connectivity of components: 6, 18 or 26 (2D: 4 or 8)."),
    voronoi_units: str = typer.Option("mm", "--voronoi-units",
                                      help="Distances of the Voronoi partition: 'mm' or 'voxel' (as ccmetrics/MONAI)."),
    labels: str | None = typer.Option(None, "--labels",
                                      help="Only these classes, e.g. 1 or 1,2,3 (nnU-Net's -l); other values are then "
                                           "allowed. Default: dataset.json or all present."),
    region: list[str] = typer.Option([], "--region",
                                     help="A region NAME=L1,L2 evaluated as the union of labels; repeatable."),
    spacing: str | None = typer.Option(None, "--spacing",
                                       help="Pixel spacing in mm (e.g. 0.5,0.5) of PNG/TIFF files, which carry none; "
                                            "without it distances are in pixels."),
    empty_both: EmptyRule = typer.Option(EmptyRule.NAN, "--empty-both",
                                   help="Result when GT and prediction are both empty: nan, best, worst or inf."),
    empty_gt: EmptyRule = typer.Option(EmptyRule.WORST, "--empty-gt",
                                 help="Result when only the GT is empty: nan, best, worst or inf (inf: distances are "
                                      "+inf as MONAI's, bounded metrics their worst)."),
    empty_pred: EmptyRule = typer.Option(EmptyRule.WORST, "--empty-pred",
                                   help="Result when only the prediction is empty: nan, best, worst or inf."),
    worst_distance: float = typer.Option(50.0, "--worst-distance",
                                         help="Worst value (mm) of unbounded distance metrics."),
    resample: bool = typer.Option(False, "--resample",
                                  help="Resample predictions on another grid onto the GT grid "
                                       "(nearest neighbour, physical space)."),
    soft: bool = typer.Option(False, "--soft",
                              help="PRED and GT hold maps in [0, 1] (probabilities, fractions of raters), not label "
                                   "maps: soft_dice over the thresholds 0.1..0.9 (QUBIQ)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Evaluate predictions against ground truths, per case and per class, in millimetres.

    Example: segqc evaluate nnunet_out/ labelsTs/ -o eval/ --per-component --jobs 2
    (or: segqc evaluate --gt labelsTs/ --pred nnunet_out/ -o eval/)
    """
    from segqc.evaluation.config import EvaluationConfig
    from segqc.evaluation.evaluate import FolderEvaluation, evaluate_folder
    from segqc.metrics.binary import MetricSettings

    with user_errors():
        pred_dir, gt_dir = _folders(pred_pos, gt_pos, pred, gt)
        names = parse_metric_names(metrics) if not (soft and metrics is None) else ("soft_dice",)
        policy = EmptyPolicy(both_empty=empty_both, gt_empty=empty_gt, pred_empty=empty_pred,
                             worst_distance_mm=worst_distance)
        _check_spacing_applies(spacing, gt_dir, pred_dir)
        prepare_output_dir(out_dir)
        swapped = swapped_folders_warning(pred_dir, gt_dir)
        if swapped:
            print_warning(swapped)
        config = EvaluationConfig(
            metrics=names,
            settings=MetricSettings(
                tolerance_mm=tolerance, percentile=percentile, surface=surface, distance=distance,  # type: ignore[arg-type]
                beta=beta, boundary_width_mm=boundary_width, boundary_definition=boundary_definition,
                match_threshold=match_threshold,
                match_inclusive=match_inclusive, match_criterion=match_criterion, match_method=match_method,
                empty=policy),
            per_component=per_component,
            connectivity=connectivity,
            voronoi_units=voronoi_units,
            resample=resample,
            spacing=_parse_spacing(spacing),
            soft=soft,
            class_tolerances=tuple(parse_class_tolerances(class_tolerance).items()),
            class_mean=class_mean,
            instances=instances,
            lesion=lesion_settings(lesion_preset, lesion_dilation, lesion_min_volume),
            froc_thresholds=_parse_thresholds(froc) if froc else (),
        )
        result = evaluate_folder(
            pred_dir,
            gt_dir,
            out_dir,
            config=config,
            labels=_parse_int_list(labels, "--labels") if labels is not None else None,
            regions=parse_regions(region) if region else None,
            jobs=jobs,
            scheduler=scheduler,
            progress=not quiet,
            return_details=True,
        )
    assert isinstance(result, FolderEvaluation)
    for case in result.missing_pred:
        print_warning(f"{case}: no prediction in {pred_dir}{_unread_files(pred_dir, case)}; evaluated as an empty "
                      "prediction")
    for case in result.extra_pred:
        print_warning(f"{case}: prediction has no ground truth in {gt_dir}; skipped")
    if any("pixel" in unit for unit in result.summary["units"]):
        print_warning("the files carry no physical spacing (PNG/TIFF): distances and areas are in pixels; pass "
                      "--spacing to get millimetres")
    code = print_run_footer(result.report, warnings=result.notes, out_dir=out_dir, resample_hint=True)
    if not quiet:
        print_summary(result.summary, names)
    console.print(f"wrote {out_dir / 'metrics.csv'} and {out_dir / 'summary.json'}")
    if code:
        raise typer.Exit(code)


def evaluate_raters_command(
    pred_dir: Path = typer.Argument(..., metavar="PRED_DIR",
                                    help="Predictions: CASE.nii.gz, samples/CASE_NN.nii.gz, "
                                         "probabilities/CASE_1.nii.gz (what 'segqc seg predict --save "
                                         "probabilities,samples' writes)."),
    raters_dir: Path = typer.Argument(..., metavar="RATERS_DIR",
                                      help="One folder per case: CASE/image.nii.gz, CASE/rater_1.nii.gz ... rater_R."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: metrics.csv, summary.json, cases/."),
    labels: str | None = typer.Option(None, "--labels",
                                      help="Foreground label value(s) of raters and samples, e.g. 1 (default: any "
                                           "non-zero value)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Evaluate predicted samples and soft maps against several raters per case: GED, Hungarian-matched
    IoU, diversity, soft Dice, calibration (ECE / MCE), volume CRPS.

    Example: segqc evaluate-raters lidc_pred/ ../shared/data/lidc/cases -o lidc_eval/
    """
    from segqc.evaluation.raters import evaluate_raters

    with user_errors():
        foreground = _parse_int_list(labels, "--labels") if labels is not None else None
        check_output_outside(out_dir, [raters_dir, pred_dir])  # before the folder is made
        prepare_output_dir(out_dir)
        _, summary, report = evaluate_raters(pred_dir, raters_dir, out_dir, foreground=foreground, jobs=jobs,
                                             progress=not quiet)
    code = print_run_footer(report, out_dir=out_dir)
    if foreground is not None and report.done and len(summary["empty_cases"]) == len(report.done):
        print_error(f"--labels {labels}: no rater mask and no prediction of any case holds these values; check the "
                    "label values of the masks")
        code = EXIT_BAD_INPUT
    if not quiet and summary["metrics"]:
        table = Table(title=f"mean over {summary['n_cases']} case(s)")
        table.add_column("metric")
        table.add_column("mean", justify="right")
        table.add_column("std", justify="right")
        table.add_column("n", justify="right")
        for metric, entry in summary["metrics"].items():
            cells = ["—" if entry[k] is None else f"{entry[k]:.4f}" for k in ("mean", "std")]
            table.add_row(metric, *cells, str(entry["n"]))
        console.print(table)
    console.print(f"wrote {out_dir / 'metrics.csv'} and {out_dir / 'summary.json'}")
    if code:
        raise typer.Exit(code)
