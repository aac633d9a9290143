"""``segqc fingerprint``: dataset properties of an nnU-Net-style folder, written as JSON."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from segqc.cli._common import console, prepare_output_file, print_warning, user_errors


def _fmt(values: tuple[float, ...] | list[float], digits: int = 6) -> str:
    return "(" + ", ".join(f"{v:.{digits}g}" for v in values) + ")"


def print_fingerprint_summary(fp) -> None:  # fp: DatasetFingerprint
    """Rich summary of a :class:`~segqc.fingerprint.DatasetFingerprint`."""
    overview = Table(title=f"fingerprint of {fp.name or fp.dataset_dir} ({fp.n_cases} cases)",
                     show_header=False)
    overview.add_column("property")
    overview.add_column("value")
    overview.add_row("median spacing (mm, R-L, A-P, S-I)", _fmt(fp.median_spacing))
    overview.add_row("median shape (voxels, RAS)", _fmt(fp.median_shape))
    overview.add_row("median shape cropped to non-zero (RAS)", _fmt(fp.median_cropped_shape))
    overview.add_row("median foreground bounding box (RAS)",
                     _fmt(fp.median_foreground_bbox_shape))
    overview.add_row("median foreground size",
                     f"{fp.median_foreground_voxels:g} voxels, "
                     f"{fp.median_foreground_volume_ml:.4g} ml")
    spacings = sorted({c.spacing for c in fp.cases})
    overview.add_row("spacings seen", ", ".join(_fmt(s) for s in spacings[:4])
                     + (f" and {len(spacings) - 4} more" if len(spacings) > 4 else ""))
    shapes = np.array([c.to_ras_order(c.shape) for c in fp.cases])
    overview.add_row("shape range (RAS)",
                     f"{_fmt(tuple(shapes.min(axis=0)))} .. {_fmt(tuple(shapes.max(axis=0)))}")
    overview.add_row("orientation", f"{fp.orientation} "
                     + "(" + ", ".join(f"{k}: {v}" for k, v in fp.orientations.items()) + ")")
    overview.add_row("labels", ", ".join(f"{k} {v}" for k, v in fp.labels.items()))
    overview.add_row("label values present", ", ".join(map(str, fp.label_values_present)))
    overview.add_row("modality", ", ".join(f"{c.name}: {c.modality}" for c in fp.channels))
    console.print(overview)

    table = Table(title=f"foreground intensities per channel "
                        f"(sampled: up to {fp.samples_per_case} voxels per case, seed {fp.seed})")
    for column in ("channel", "name", "modality", "normalisation", "mean", "std", "min",
                   "p0.5", "p99.5", "max", "samples"):
        table.add_column(column, justify="left" if column in ("name", "modality",
                                                              "normalisation") else "right")
    for c in fp.channels:
        s = c.intensity
        table.add_row(str(c.index), c.name, c.modality, c.normalization, f"{s.mean:.4g}",
                      f"{s.std:.4g}", f"{s.min:.4g}", f"{s.percentile_00_5:.4g}",
                      f"{s.percentile_99_5:.4g}", f"{s.max:.4g}", str(s.n_samples))
    console.print(table)


def fingerprint_command(
    dataset_dir: Path = typer.Argument(..., help="nnU-Net-style folder: imagesTr/, labelsTr/, dataset.json."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSON file (written atomically)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    samples_per_case: int = typer.Option(10_000, "--samples",
                                         help="Foreground voxels sampled per case for intensity statistics."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the (deterministic) intensity sampling."),
    max_cases: int | None = typer.Option(None, "--max-cases", help="Only the first N cases (sorted by id)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Fingerprint a dataset: spacing, shapes, foreground size, intensities, labels, orientation.

    Example: segqc fingerprint Dataset027_ACDC/ -o fingerprint.json --jobs 2
    """
    from segqc.fingerprint import compute_fingerprint

    with user_errors(interrupted="interrupted; nothing was written (a fingerprint is computed in one go)"):
        prepare_output_file(out, suffixes=(".json",), inputs=[dataset_dir / "dataset.json", dataset_dir / "imagesTr",
                                                           dataset_dir / "labelsTr"])
        start = time.perf_counter()
        fp = compute_fingerprint(dataset_dir, jobs=jobs, scheduler=scheduler, samples_per_case=samples_per_case,
                                 seed=seed, max_cases=max_cases, progress=not quiet)
        fp.save(out)
        elapsed = time.perf_counter() - start
    if fp.channels and all(channel.intensity.n_samples == 0 for channel in fp.channels):
        print_warning("no label map of the dataset holds a foreground voxel: the foreground intensity statistics "
                      "(used to normalise the images) are undefined (NaN)")
    if not quiet:
        print_fingerprint_summary(fp)
    console.print(f"wrote {out} ({fp.n_cases} cases, {elapsed:.1f} s)")
