"""``segqc report``: one self-contained HTML page of a segqc output folder."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from segqc.cli._common import console, prepare_output_file, user_errors


def report_command(
    out_dir: Path = typer.Argument(..., help="Output folder of `segqc qc predict`, `qc benchmark`, `qc rank`, "
                                             "`evaluate`, `labels check` or `labels quality`."),
    output: Path | None = typer.Option(None, "-o", "--output", help="HTML file (default OUT_DIR/report.html)."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the images, drawn behind the contours "
                                                              "(an `evaluate` folder records none)."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Processes drawing the case pictures (0 = one per core, "
                                                     "at most 8)."),
    pictures: int = typer.Option(100, "--pictures", min=0,
                                 help="Cases drawn with pictures and details, worst first (0 = all); the table lists "
                                      "every case."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
) -> None:
    """Write one static HTML report (pictures embedded, no server, opens from disk).

    Example: segqc report qc_out/ -o qc_report.html
    """
    from segqc.report.html import build_report

    start = time.perf_counter()
    with user_errors(interrupted="interrupted; no report was written"):
        if output is not None:
            prepare_output_file(output, suffixes=(".html", ".htm"))
        path = build_report(out_dir, output, progress=not quiet, jobs=jobs, images=images,
                            pictures=pictures)
    console.print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
