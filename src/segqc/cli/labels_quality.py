"""``segqc labels quality``: label quality of pseudo-label datasets against their base labels (Table 5 of
the anatomy thesis §3.2: Dice and NSD per organ, averaged over the common labels) and the agreement of
their organ-volume distributions (Jensen–Shannon divergence)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import console, prepare_output_dir, print_run_footer, user_errors


def _parse_labels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--labels expects comma-separated label values, e.g. 1,2,3; got {text!r}") from None
    if not values:
        raise ValueError("--labels is empty")
    return values


def _parse_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",")]


def quality_command(
    base_dir: Path = typer.Argument(..., metavar="BASE_DIR",
                                    help="Base label maps (nnU-Net labelsTr layout; dataset.json in it or its parent "
                                         "names the labels)."),
    pseudo_dirs: list[Path] = typer.Argument(..., metavar="PSEUDO_DIR...",
                                             help="One folder of pseudo label maps per dataset (CASE.nii.gz, ...)."),
    out_dir: Path = typer.Option(..., "-o", "--out",
                                 help="Output folder: quality.csv/.md, organs.csv, scores.csv, volumes.csv, jsd.csv, "
                                      "plots/, cases/."),
    names: str | None = typer.Option(None, "--names",
                                     help="Comma-separated dataset names, one per PSEUDO_DIR (default: folder names)."),
    tolerance: float = typer.Option(1.0, "--tolerance", help="NSD tolerance in mm."),
    labels: str | None = typer.Option(None, "--labels",
                                      help="Only these base labels, e.g. 1,2,3 (default: dataset.json, else every "
                                           "value present in the base maps)."),
    bins: int = typer.Option(20, "--bins", help="Equal-width bins per organ of the volume histograms (JSD)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler",
                                         help="Dask distributed scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
) -> None:
    """Label quality of pseudo-label datasets: Dice and NSD of every pseudo label map against its base label
    map, per organ (mean ± population SD over cases) and per dataset (mean over the labels every dataset can
    predict ± root-mean-square of the organ SDs), plus organ-volume distributions and their Jensen–Shannon
    divergences.

    Example: segqc labels quality data/labelsTr preds/nnunet preds/totalseg -o quality/ --jobs 2
    """
    from segqc.anatomy.quality import label_quality_folder

    with user_errors():
        chosen_names = _parse_names(names) if names else None
        chosen_labels = _parse_labels(labels) if labels else None
        prepare_output_dir(out_dir)
        result = label_quality_folder(base_dir, pseudo_dirs, out_dir, names=chosen_names, tolerance_mm=tolerance,
                                      labels=chosen_labels, bins=bins, jobs=jobs, scheduler=scheduler,
                                      progress=not quiet)
    code = print_run_footer(result.report, warnings=result.warnings, out_dir=out_dir)
    if not quiet and len(result.quality):
        common = ", ".join(result.names.get(v, str(v)) for v in result.common)
        table = Table(title=f"label quality, % (mean ± SD over the common labels: {common})")
        for column in ("pseudo labels", "metric", "mean ± SD", "organs", "cases"):
            table.add_column(column, justify="right" if column in ("organs", "cases") else "left")
        for row in result.quality.itertuples(index=False):
            table.add_row(str(row.dataset), "Dice" if row.metric == "dice" else "NSD", str(row.table5),
                          str(row.n_labels), str(row.n_cases))
        console.print(table)
    console.print(f"wrote {out_dir / 'quality.md'}, {out_dir / 'quality.csv'} and the tables and plots beside them")
    if code:
        raise typer.Exit(code)
