"""``segqc seg``: train segmentation methods and segment images (with uncertainty)."""

from __future__ import annotations

from pathlib import Path

import typer

from segqc.cli._common import GROUP_BY_OPTION, HOLDOUT_OPTION, SPLIT_OPTION, console, user_errors

app = typer.Typer(help="Segmentation methods: train, predict (with uncertainty).", no_args_is_help=True)


@app.command("train")
def train_command(
    method: str = typer.Argument(..., help="Segmentation method: ldseg (latent diffusion, Zaman et al.), unet "
                                         "(baseline; --set dropout=0.2 for MC dropout), consensus (rater-consensus "
                                         "diffusion, Amit et al.; multi-rater folders) or probunet (Probabilistic "
                                         "U-Net, Kohl et al.; multi-rater folders)."),
    dataset_dir: Path = typer.Argument(..., help="nnU-Net-style dataset (imagesTr, labelsTr, dataset.json; ldseg, "
                                              "unet) or multi-rater folder (CASE/image.nii.gz, CASE/rater_1.nii.gz, "
                                              "CASE/rater_2.nii.gz, ...; consensus, probunet, unet)."),
    out: Path = typer.Option(..., "-o", "--out", help="Training folder to write (rerun to resume); the model is "
                                                      "OUT/model."),
    config: str = typer.Option("small", "--config",
                               help="Preset (tiny: tests, small: CPU, paper: GPU; any case) or a JSON config file."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of everything random."),
    split: Path | None = SPLIT_OPTION,
    holdout_fraction: float = HOLDOUT_OPTION,
    group_by: str | None = GROUP_BY_OPTION,
    set_fields: list[str] = typer.Option([], "--set", help="Override a config field, KEY=VALUE (repeatable)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Processes for reading and slicing the training data."),
    device: str = typer.Option("auto", "--device", help="Where to train: cpu, cuda, cuda:1 or auto."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (log lines only)."),
) -> None:
    """Train a segmentation model on a dataset's images and label maps, or on a multi-rater folder's raters.

    Example: segqc seg train ldseg ../shared/data/hc18 -o runs/hc18-ldseg --holdout-fraction 0.2
             --group-by '^(HC18_[0-9]+)'
    """
    from segqc.cli._common import INTERRUPTED_TRAINING, check_device, prepare_output_dir, print_warning, require_nn

    with user_errors(interrupted=INTERRUPTED_TRAINING):
        require_nn("seg train")
        check_device(device)
        from segqc.config import parse_overrides
        from segqc.seg.training_api import train_method

        directory = train_method(method, dataset_dir, out, config=config, seed=seed, split=split,
                                 holdout_fraction=holdout_fraction, group_by=group_by,
                                 overrides=parse_overrides(set_fields), jobs=jobs, device=device, log=console.print,
                                 warn=print_warning, prepare_output=prepare_output_dir, progress=not quiet)
    console.print(f"model written to {directory}")


@app.command("predict")
def predict_command(
    model_dir: Path = typer.Argument(..., help="A trained model directory (or its training folder)."),
    images_dir: Path = typer.Argument(..., help="Images: CASE_0000.nii.gz (one file per channel)."),
    out: Path = typer.Option(..., "-o", "--out",
                             help="Output folder: CASE.nii.gz, uncertainty/CASE.nii.gz (entropy), cases.csv."),
    samples: int | None = typer.Option(None, "--samples", help="Samples per slice (default: the model's)."),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (default: the model's; a consensus model "
                                                             "that samples ancestrally switches to DDIM with these)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the sampler (same seed, same files)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes on the CPU (0 = one per core)."),
    device: str = typer.Option("cpu", "--device", help="Where the model samples: cpu, cuda, cuda:1 or auto."),
    save: list[str] = typer.Option([], "--save", help="Also write: probabilities (mean per class), std (per class, "
                                   "over the samples), samples (every sample's label map), levels (consensus "
                                   "models: the map at each consensus level); repeatable or comma-separated."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment images, with a per-pixel uncertainty (entropy of the mean of the samples).

    Example: segqc seg predict runs/hc18-ldseg images/ -o seg_out/ --samples 8
    """
    from segqc.cli._common import check_device, prepare_output_dir, print_run_footer, require_nn

    with user_errors():
        require_nn("seg predict")
        check_device(device)
        from segqc.seg.inference import predict_folder

        if not images_dir.is_dir():
            from segqc.errors import InputError

            raise InputError("image folder not found" if not images_dir.exists() else "not a folder", images_dir)
        prepare_output_dir(out)
        outputs = [part.strip() for item in save for part in item.split(",") if part.strip()]
        report = predict_folder(model_dir, images_dir, out, samples=samples, steps=steps, seed=seed, jobs=jobs,
                                device=device, progress=not quiet, save=outputs)
    code = print_run_footer(report, out_dir=out)
    if len(report.table) > 1:  # where to look first: the case score predicts the failures
        ranked = report.table.sort_values("uncertainty", ascending=False).head(5)
        console.print("most uncertain (look at these first): "
                      + ", ".join(f"{row.case} {row.uncertainty:.3f}" for row in ranked.itertuples()))
    console.print(f"wrote {out / 'cases.csv'}, the label maps and {out / 'uncertainty'}/")
    if code:
        raise typer.Exit(code)
