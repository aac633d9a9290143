"""``segqc zoo``: train a small 2D UNet at several epochs and collect its imperfect predictions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import (
    INTERRUPTED_TRAINING,
    check_device,
    console,
    error_console,
    prepare_output_dir,
    print_run_footer,
    require_nn,
    user_errors,
)

app = typer.Typer(
    name="zoo",
    help="A zoo of real, imperfect segmentation models: train snapshots, predict held-out cases with true metrics.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("train")
def train_command(
    dataset_dir: Path = typer.Argument(..., help="nnU-Net-style dataset folder (imagesTr/, labelsTr/, dataset.json)."),
    out_dir: Path = typer.Option(..., "-o", "--out",
                                 help="Zoo folder: zoo.json, split.json, plan.json, models/unet_eNNN/."),
    config: str = typer.Option("small", "--config", "-c",
                               help="Preset ('small': 2 CPU cores, minutes; 'paper': a GPU) or a JSON file."),
    seed: int | None = typer.Option(
        None, "--seed", min=0, help="Seed of the split, weights, batches and augmentation (default: the config's, 0)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Epochs to train (default: the config's); raise it to continue a finished zoo."
    ),
    holdout: float | None = typer.Option(None, "--holdout",
                                         help="Share of patients held out (default: the config's, 0.25)."),
    device: str = typer.Option("auto", "--device", help="'auto' (CUDA if available), 'cpu' or 'cuda:N'."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch CPU threads."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0,
                             help="Processes for fingerprinting and preprocessing (0 = one per core)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
) -> None:
    """Train the zoo's 2D UNet on the training patients; save a model at every snapshot epoch.

    Rerunning the same command after an interruption continues after the last finished epoch.

    Example: segqc zoo train Dataset027_ACDC/ -o acdc_zoo/ --config small --seed 0
    """
    with user_errors(interrupted=INTERRUPTED_TRAINING):
        require_nn("zoo train")
        check_device(device)
        prepare_output_dir(out_dir)
        from segqc.zoo.config import ZooConfig
        from segqc.zoo.train import train_zoo

        chosen = ZooConfig.preset(config, seed=seed, epochs=epochs, holdout_fraction=holdout)
        began = time.perf_counter()
        models = train_zoo(dataset_dir, out_dir, chosen, device=device, threads=threads, jobs=jobs,
                           progress=not quiet,
                           log=None if quiet else (lambda line: error_console.print(line, highlight=False)))
    names = sorted(p.name for p in models.iterdir() if (p / "config.json").is_file()) if models.is_dir() else []
    split = json.loads((out_dir / "split.json").read_text())
    console.print(f"trained on {split['n_patients']['train']} patient(s) ({len(split['train'])} cases), "
                  f"held out {split['n_patients']['holdout']} ({len(split['holdout'])} cases) in "
                  f"{time.perf_counter() - began:.0f} s")
    console.print(f"wrote {len(names)} model(s) to {models}: {', '.join(names)}")


def print_source_table(rows: list[dict]) -> None:
    """Per source: n, multi-class Dice mean / min / max."""
    table = Table(title="multi-class Dice per source")
    for column in ("source", "input", "n", "mean", "min", "max"):
        table.add_column(column, justify="left" if column in ("source", "input") else "right")
    for row in rows:
        table.add_row(row["source"], row["variant"], str(row["n"]), f"{row['mean']:.3f}", f"{row['min']:.3f}",
                      f"{row['max']:.3f}")
    console.print(table)


@app.command("predict")
def predict_command(
    zoo_dir: Path = typer.Argument(..., help="Zoo folder written by `segqc zoo train`."),
    dataset_dir: Path | None = typer.Argument(None,
                                              help="nnU-Net dataset folder (imagesTr/, labelsTr/); "
                                                   "optional with --images and --labels."),
    out_dir: Path = typer.Option(..., "-o", "--out",
                                 help="Output folder: <source>/CASE.nii.gz, manifest.csv, summary.json."),
    variants: str = typer.Option("clean,noise,lowres", "--variants",
                                 help="Input variants: clean, noise, lowres, or with a strength: "
                                      "noise(sigma=0.2), lowres(factor=3)."),
    noise_sigma: float = typer.Option(0.1, "--noise-sigma",
                                      help="Standard deviation of 'noise', in normalised intensity units."),
    lowres_factor: float = typer.Option(2.0, "--lowres-factor", help="In-plane downsampling factor of 'lowres'."),
    models: str | None = typer.Option(None, "--models",
                                      help="Comma-separated snapshot names (default: all), e.g. unet_e001,unet_e016."),
    cases: str = typer.Option("holdout", "--cases",
                              help="'holdout' (the zoo's held-out patients), 'train' (its training patients, e.g. for "
                                   "`segqc qc train nnqc --extra-segs`), 'all', or comma-separated case ids."),
    images: Path | None = typer.Option(None, "--images", help="Image folder (default: DATASET_DIR/imagesTr)."),
    labels: Path | None = typer.Option(None, "--labels", help="Ground-truth folder (default: DATASET_DIR/labelsTr)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise."),
    tolerance: float = typer.Option(1.0, "--tolerance", help="NSD tolerance in mm for the manifest."),
    device: str = typer.Option("cpu", "--device", help="'cpu', 'auto' or 'cuda:N'."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Predict held-out cases with every snapshot and input variant; write the files and a manifest of their true quality.

    Rerunning continues where it stopped; new snapshots or variants only compute what is new.

    Example: segqc zoo predict acdc_zoo/ Dataset027_ACDC/ -o zoo_predictions/ --variants clean,noise,lowres --jobs 2
    """  # noqa: E501 - the first line is this command's summary in `segqc zoo --help`, which would keep a line break
    from segqc.zoo.predict import predict_zoo

    with user_errors():
        require_nn("zoo predict")
        check_device(device)
        prepare_output_dir(out_dir)
        result = predict_zoo(
            zoo_dir, dataset_dir, out_dir, images_dir=images, labels_dir=labels, cases=cases,
            models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
            variants=variants, noise_sigma=noise_sigma, lowres_factor=lowres_factor, seed=seed,
            tolerance_mm=tolerance, device=device, jobs=jobs, scheduler=scheduler, progress=not quiet,
        )
    code = print_run_footer(result.report, out_dir=out_dir)
    if not quiet:
        print_source_table(result.summary["sources"])
    console.print(f"wrote {len(result.manifest)} predictions from {len(result.sources)} source(s), "
                  f"{out_dir / 'manifest.csv'} and {out_dir / 'summary.json'}")
    if code:
        raise typer.Exit(code)
