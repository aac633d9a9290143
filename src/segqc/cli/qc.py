"""``segqc qc``: train GT-free QC models, QC segmentations, benchmark QC methods, rank models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import GROUP_BY_OPTION, HOLDOUT_OPTION, SPLIT_OPTION, console, print_warning, user_errors

app = typer.Typer(help="GT-free quality control: train, predict, benchmark, rank.", no_args_is_help=True)



def _settings(metrics: str, samples: int | None, steps: int | None, tolerance: float | None, flag_dice: float,
              seed: int):
    from segqc.metrics.registry import parse_metric_names
    from segqc.qc.inference import QcSettings

    return QcSettings(metrics=parse_metric_names(metrics), samples=samples, steps=steps, tolerance_mm=tolerance,
                      flag_dice=flag_dice, seed=seed)


@app.command("train")
def train_command(
    method: str = typer.Argument(
        ..., help="QC method: nnqc (diffusion pseudo ground truths), qcresunet (Dice/NSD regression with error "
                  "maps) or cae (autoencoder baseline)."
    ),
    dataset_dir: Path = typer.Argument(..., help="nnU-Net-style dataset (imagesTr, labelsTr, dataset.json)."),
    out: Path = typer.Option(..., "-o", "--out", help="Model directory to write (rerun to resume)."),
    config: str = typer.Option("small", "--config",
                               help="Preset (tiny: tests, small: CPU, paper: GPU; any case) or a JSON config file."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of everything random."),
    split: Path | None = SPLIT_OPTION,
    holdout_fraction: float = HOLDOUT_OPTION,
    group_by: str | None = GROUP_BY_OPTION,
    conditioning: str | None = typer.Option(None, "--conditioning",
                                               help="nnQC Team of Experts: full, position or image (ablations)."),
    set_fields: list[str] = typer.Option([], "--set", help="Override a config field, KEY=VALUE (repeatable)."),
    extra_segs: list[Path] = typer.Option([], "--extra-segs",
                                          help="nnQC, QCResUNet: folder of real imperfect segmentations of training "
                                               "cases (CASE.nii.gz, e.g. `segqc zoo predict` output) to learn from too "
                                               "(repeatable; other cases' files are ignored)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0,
                             help="Processes for preprocessing and degrading the training data."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (log lines only)."),
) -> None:
    """Train a QC model on a dataset's ground truths (and images, for nnQC).

    Example: segqc qc train nnqc ../shared/data/acdc -o models/acdc-nnqc-small --config small
    """
    from segqc.cli._common import INTERRUPTED_TRAINING, prepare_output_dir, require_nn

    with user_errors(interrupted=INTERRUPTED_TRAINING):
        require_nn("qc train")
        from segqc.qc.training_api import parse_overrides, train_method

        prepare_output_dir(out)
        overrides = parse_overrides(set_fields)
        if conditioning is not None:
            overrides["conditioning"] = conditioning
        directory = train_method(method, dataset_dir, out, config=config, seed=seed, split=split,
                                 holdout_fraction=holdout_fraction, group_by=group_by, overrides=overrides,
                                 extra_seg_dirs=extra_segs, jobs=jobs,
                                 log=console.print, progress=not quiet)
    console.print(f"model written to {directory}")


def _print_worklist(work, limit: int = 10) -> None:
    table = Table(title="worklist (worst first)")
    for column in ("case", "estimated Dice", "flag", "reason"):
        table.add_column(column)
    for row in work.head(limit).itertuples():
        table.add_row(str(row.case), f"{row.dice_estimate:.3f}", "yes" if row.flag else "", row.reason)
    console.print(table)


_MODEL_HELP = "A trained QC model directory (e.g. models/acdc-nnqc-small) or a training run folder."
_IMAGES_HELP = "Images: CASE_0000.nii.gz (one file per channel)."
_SAMPLES_HELP = ("pGT samples per slice, fused by per-voxel majority (nnQC; default: the model's, ACDC model 4), "
                 "or mirrored passes per volume, averaged (QCResUNet: 1, 2 or 4; default the model's); "
                 ">1 adds a spread column.")
_STEPS_HELP = "Sampler steps (nnQC: DDIM steps; default: the model's, ACDC model 5)."
_JOBS_HELP = "Parallel worker processes on the CPU (0 = one per core)."
_SCHEDULER_HELP = "Dask distributed scheduler address, e.g. tcp://host:8786 (CPU models)."
_DEVICE_HELP = "Where the model samples: cpu, cuda, cuda:1 or auto."
_SEED_HELP = "Seed of the sampler (same seed, same estimates)."
_TOLERANCE_HELP = ("NSD tolerance in mm (default 1; QCResUNet: its training tolerance, the only one it "
                   "estimates NSD at).")


def _start(command: str, out: Path, device: str) -> None:
    """Checks every qc command makes before loading anything: dependencies, device, output."""
    from segqc.cli._common import check_device, prepare_output_dir, require_nn

    require_nn(f"qc {command}")
    check_device(device)
    prepare_output_dir(out)


@app.command("predict")
def predict_command(
    model_dir: Path = typer.Argument(..., help=_MODEL_HELP),
    images_dir: Path = typer.Argument(..., help=_IMAGES_HELP),
    segs_dir: Path = typer.Argument(..., help="Segmentations to check: CASE.nii.gz (or segqc degrade output)."),
    out: Path = typer.Option(..., "-o", "--out",
                             help="Output folder: qc.csv, qc_slices.csv, worklist.csv, pgt/ (QCResUNet: errors/)."),
    metrics: str = typer.Option("dice,hd95,nsd", "--metrics",
                                help="Metrics to estimate (any segqc metric, cc_* included)."),
    samples: int | None = typer.Option(None, "--samples", help=_SAMPLES_HELP),
    steps: int | None = typer.Option(None, "--steps", help=_STEPS_HELP),
    tolerance: float | None = typer.Option(None, "--tolerance", help=_TOLERANCE_HELP),
    flag_dice: float = typer.Option(0.75, "--flag-dice", help="Flag cases whose estimated Dice is below this."),
    seed: int = typer.Option(0, "--seed", min=0, help=_SEED_HELP),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help=_JOBS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    device: str = typer.Option("cpu", "--device", help=_DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or worklist table."),
) -> None:
    """Estimate the quality of segmentations without ground truth.

    Example: segqc qc predict models/acdc-nnqc-small images/ nnunet_out/ -o qc/ --samples 3
    """
    from segqc.cli._common import print_run_footer
    from segqc.qc.inference import qc_folder

    with user_errors():
        _start("predict", out, device)
        settings = _settings(metrics, samples, steps, tolerance, flag_dice, seed)
        _, work, report = qc_folder(model_dir, images_dir, segs_dir, out, settings=settings, jobs=jobs,
                                    scheduler=scheduler, progress=not quiet, device=device)
    for case in report["missing_image"]:
        print_warning(f"{case}: segmentation without an image in {images_dir}; skipped")
    code = print_run_footer(report["run"], warnings=report["notes"], out_dir=out)
    if not quiet:
        _print_worklist(work)
    maps = [f"{out / name}/" for name in report["maps"]]  # folders holding this run's maps
    console.print(f"wrote {out / 'qc.csv'}, {out / 'worklist.csv'}" + "".join(f" and {m}" for m in maps))
    if code:
        raise typer.Exit(code)


@app.command("benchmark")
def benchmark_command(
    model_dir: Path = typer.Argument(..., help=_MODEL_HELP),
    images_dir: Path = typer.Argument(..., help=_IMAGES_HELP),
    segs_dir: Path = typer.Argument(
        ..., help="Segmentations to check (CASE.nii.gz, or segqc degrade output with its manifest)."
    ),
    gt_dir: Path = typer.Argument(..., help="Ground truths of the segmentations, to measure the QC error."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: benchmark.csv/json, pairs.csv, plots/, qc/."),
    metrics: str = typer.Option("dice,hd95,nsd", "--metrics", help="Metrics to estimate and compare."),
    samples: int | None = typer.Option(None, "--samples", help=_SAMPLES_HELP),
    steps: int | None = typer.Option(None, "--steps", help=_STEPS_HELP),
    tolerance: float | None = typer.Option(None, "--tolerance", help=_TOLERANCE_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help=_SEED_HELP),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help=_JOBS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    device: str = typer.Option("cpu", "--device", help=_DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pearson r and MAE between estimated and true metrics, per label and metric, with scatter plots.

    Example: segqc qc benchmark models/acdc-nnqc-small imagesTr/ degraded/ labelsTr/ -o bench/
    """
    from segqc.cli._common import print_run_footer
    from segqc.qc.assessment import benchmark_qc_run

    with user_errors():
        _start("benchmark", out, device)
        summary, report = benchmark_qc_run(model_dir, images_dir, segs_dir, gt_dir, out,
                                           settings=_settings(metrics, samples, steps, tolerance, 0.75, seed),
                                           jobs=jobs, scheduler=scheduler, progress=not quiet, device=device)
    code = print_run_footer(report["run"], warnings=report["notes"], out_dir=out / "qc")
    table = Table(title="estimated vs true")
    for column in ("label", "metric", "Pearson r", "MAE", "n"):
        table.add_column(column)
    for row in summary.itertuples():
        table.add_row(str(row.label), row.metric, f"{row.pearson_r:.3f}", f"{row.mae:.4g}", str(row.n))
    console.print(table)
    console.print(f"wrote {out / 'benchmark.csv'}, {out / 'benchmark.json'} and plots in {out / 'plots'}/")
    if code:
        raise typer.Exit(code)


@app.command("rank")
def rank_command(
    model_dir: Path = typer.Argument(..., help=_MODEL_HELP),
    images_dir: Path = typer.Argument(..., help=_IMAGES_HELP),
    seg_dirs: list[Path] = typer.Argument(..., help="One folder of segmentations per model (two or more)."),
    out: Path = typer.Option(Path("qc_rank"), "-o", "--out",
                             help="Output folder: ranking.csv/json, one QC folder per model."),
    gt: Path | None = typer.Option(None, "--gt", help="Ground truths: adds the true ranking and Kendall's tau."),
    samples: int | None = typer.Option(None, "--samples", help=_SAMPLES_HELP),
    steps: int | None = typer.Option(None, "--steps", help=_STEPS_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help=_SEED_HELP),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help=_JOBS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    device: str = typer.Option("cpu", "--device", help=_DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Rank segmentation models by mean estimated Dice, without ground truth.

    Example: segqc qc rank models/acdc-nnqc-small images/ modelA/ modelB/ modelC/ --gt labelsTs/
    """
    from segqc.cli._common import print_run_footer
    from segqc.qc.assessment import rank_models

    with user_errors():
        if len(seg_dirs) < 2:
            raise ValueError("rank needs at least two segmentation folders")
        _start("rank", out, device)
        ranking, report = rank_models(model_dir, images_dir, seg_dirs, out, gt_dir=gt,
                                      settings=_settings("dice", samples, steps, None, 0.75, seed), jobs=jobs,
                                      scheduler=scheduler, progress=not quiet, device=device)
    code = print_run_footer(report["run"], warnings=report["notes"], out_dir=out)
    table = Table(title=f"models by estimated Dice over the {len(report['cases'])} case(s) every folder has")
    columns = ["rank", "model", "estimated_dice"] + [c for c in ("true_dice", "true_rank") if c in ranking]
    for column in columns:
        table.add_column(column)
    for row in ranking.to_dict(orient="records"):
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns])
    console.print(table)
    if "kendall_tau" in report:
        console.print(f"Kendall's tau vs the true ranking: {report['kendall_tau']:.3f}")
    console.print(f"wrote {out / 'ranking.csv'} and {out / 'ranking.json'}")
    if code:
        raise typer.Exit(code)


@app.command("combine")
def combine_command(
    qc_dirs: list[Path] = typer.Argument(..., help="Output folders of `segqc qc predict` on the same segmentations "
                                                  "(two or more, e.g. nnQC's and QCResUNet's)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: qc.csv, worklist.csv, report.json, the maps."),
    flag_dice: float = typer.Option(0.75, "--flag-dice", help="Flag cases whose estimated Dice is below this."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No worklist table."),
) -> None:
    """Combine QC runs of the same segmentations: the mean of their estimates, their disagreement as spread.

    Example: segqc qc combine qc_nnqc/ qc_qcresunet/ -o qc_both/
    """
    from segqc.cli._common import prepare_output_dir
    from segqc.qc.combine import combine_qc_folders

    with user_errors():
        prepare_output_dir(out)
        _, work, report = combine_qc_folders(qc_dirs, out, flag_dice=flag_dice)
    for warning in report["warnings"]:
        print_warning(warning)
    if not quiet:
        _print_worklist(work)
    console.print(f"combined {len(qc_dirs)} runs of {report['cases']} cases: wrote {out / 'qc.csv'}, "
                  f"{out / 'worklist.csv'}")
