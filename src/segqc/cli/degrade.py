"""``segqc degrade``: degraded label maps at requested Dice bins, with a manifest of their quality."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import console, prepare_output_dir, print_run_footer, print_warning, user_errors

_DEFAULT_BINS = "0.05,0.10,0.25,0.50,0.75,0.95"


def print_bin_table(rows: list[dict]) -> None:
    """Per requested bin: n, achieved Dice min/median/max, share inside the bin."""
    table = Table(title="achieved Dice per requested bin")
    for column in ("bin", "n", "min", "median", "max", "in bin"):
        table.add_column(column, justify="left" if column == "bin" else "right")
    for row in rows:
        if not row["n"]:
            table.add_row(row["bin"], "0", "—", "—", "—", "—")
            continue
        table.add_row(row["bin"], str(row["n"]), f"{row['min']:.3f}", f"{row['median']:.3f}", f"{row['max']:.3f}",
                      f"{row['in_bin']}/{row['n']} ({100 * row['fraction_in_bin']:.1f} %)")
    console.print(table)


def degrade_command(
    gt_dir: Path = typer.Argument(..., help="Folder of ground-truth label maps (nnU-Net labelsTr layout)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: labels/, manifest.csv, summary.json."),
    per_case: int = typer.Option(5, "--per-case", "-n",
                                 help="Degraded maps per case (per slice with --slices), spread evenly over the bins."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed; the same seed gives the same files, whatever --jobs."),
    bins: str = typer.Option(_DEFAULT_BINS, "--bins",
                             help="Dice bin edges e0,e1,...,en: bins from each edge to the next, the last bin closed "
                                  "(default: the nnQC bins)."),
    balanced: bool = typer.Option(False, "--balanced",
                                  help="Use QCResUNet's 10 equal Dice bins [0,0.1) ... [0.9,1.0] (overrides --bins)."),
    slices: bool = typer.Option(False, "--slices",
                                help="Write 2D slices (those whose ground truth has foreground) instead of volumes."),
    target_label: int | None = typer.Option(None, "--target-label",
                                            help="Bin on the Dice of this class instead of the multi-class Dice."),
    tolerance: float = typer.Option(1.0, "--tolerance", help="NSD tolerance in mm for the manifest."),
    max_attempts: int = typer.Option(8, "--max-attempts",
                                     help="Recipes tried per map before giving up on its bin (noted in the manifest)."),
    images: Path | None = typer.Option(None, "--images",
                                       help="Image folder whose geometry must match the labels "
                                            "(default: imagesTr next to labelsTr, if present)."),
    no_image_check: bool = typer.Option(False, "--no-image-check", help="Do not compare image and label geometry."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Make degraded segmentations whose Dice falls into requested bins (nnQC degradations, QCResUNet SegGen).

    Example: segqc degrade labelsTr/ -o degraded/ --per-case 5 --seed 0 --jobs 2
    """
    from segqc.degrade.folder import degrade_folder
    from segqc.degrade.targeting import BALANCED_BINS, parse_bins

    with user_errors():
        if per_case < 1:
            raise ValueError(f"--per-case must be at least 1, got {per_case}")
        chosen = BALANCED_BINS if balanced else parse_bins(bins)
        prepare_output_dir(out_dir)
        result = degrade_folder(
            gt_dir,
            out_dir,
            per_case=per_case,
            seed=seed,
            bins=chosen,
            slices=slices,
            target_label=target_label,
            tolerance_mm=tolerance,
            max_attempts=max_attempts,
            images_dir=None if no_image_check else (images if images is not None else "auto"),
            jobs=jobs,
            scheduler=scheduler,
            progress=not quiet,
        )
    code = print_run_footer(result.report, out_dir=out_dir)
    missed = int((~result.manifest["in_bin"].astype(bool)).sum()) if len(result.manifest) else 0
    if missed:
        print_warning(f"{missed} of {len(result.manifest)} maps missed their bin "
                      "(in_bin False; see the note column)")
    if not quiet:
        print_bin_table(result.summary["bins"])
    console.print(f"wrote {len(result.manifest)} maps, {out_dir / 'manifest.csv'} and {out_dir / 'summary.json'}")
    if code:
        raise typer.Exit(code)
