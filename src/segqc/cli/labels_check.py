"""``segqc labels check``: anatomical plausibility flags of label maps (a table case x class x flag), with a
worklist of the cases to look at first."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import console, prepare_output_dir, print_run_footer, user_errors


def check_command(
    labels_dir: Path = typer.Argument(..., metavar="LABELS_DIR",
                                      help="Label maps (CASE.nii.gz, ...) or per-class binary masks "
                                           "(CASE/<class>.nii.gz, TotalSegmentator without --ml)."),
    images_dir: Path | None = typer.Argument(None, metavar="IMAGES_DIR",
                                             help="CT images (CASE_0000.nii.gz or CASE.nii.gz) for outside_body and "
                                                  "in_air; without them those flags are skipped."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: flags.csv, worklist.csv, volumes.csv, "
                                                          "summary.json."),
    scheme: str = typer.Option("total", "--scheme", help="The maps' label scheme: a shipped one (total, total_v1, "
                                                         "total_mr), a scheme file (YAML/JSON) or a dataset.json."),
    reference: Path | None = typer.Option(None, "--reference",
                                          help="Reference volumes for volume_z: a CSV of class, mean_ml, sd_ml, or of "
                                               "case, class, volume_ml (e.g. the volumes.csv of an earlier run)."),
    flags: str | None = typer.Option(None, "--flags", help="Comma-separated flags to run (default all): geometry, "
                                                           "outside_body, in_air, fov_border, region, left_right, "
                                                           "merged_vertebrae, components, overlap, volume_z."),
    rules: str | None = typer.Option(None, "--rules", help="Rule preset naming body regions, single-component "
                                                           "classes and the vertebra order (default dap_total)."),
    set_fields: list[str] = typer.Option([], "--set", help="Override a threshold, KEY=VALUE, repeatable (e.g. "
                                                           "body_hu=-300, region_max_outside=0.1, "
                                                           "vertebra_height_factor=1.8); see segqc.anatomy.flags."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
) -> None:
    """Flag anatomically implausible labels: voxels outside the body or in air, classes cut by the
    field of view, organs outside their body region or on the wrong side, merged vertebrae, extra
    components, overlapping masks, a label map on another grid than its image, volumes far from a
    reference. Writes a flag table and a worklist (worst cases first); flags do not change the exit
    code.

    Example: segqc labels check preds/ imagesTr/ --scheme total -o check/ --jobs 4
    """
    from segqc.anatomy.check import CheckConfig, check_folder, load_reference
    from segqc.anatomy.scheme import load_scheme
    from segqc.config import parse_overrides

    with user_errors():
        loaded = load_scheme(scheme)
        overrides = parse_overrides(set_fields)
        if flags is not None:
            overrides["flags"] = tuple(f.strip() for f in flags.split(",") if f.strip())
        if rules is not None:
            overrides["rules"] = rules
        config = CheckConfig.preset("default", **overrides)
        table = load_reference(reference, scheme=loaded) if reference is not None else None
        if images_dir is not None and not images_dir.is_dir():
            raise ValueError(f"{images_dir}: no such folder of images")
        prepare_output_dir(out_dir)
        result = check_folder(labels_dir, out_dir, scheme=loaded, images_dir=images_dir, reference=table,
                              config=config, jobs=jobs, scheduler=scheduler, progress=not quiet)
    code = print_run_footer(result.report, warnings=result.warnings, out_dir=out_dir)
    if not quiet:
        counts = {k: v["flags"] for k, v in result.summary["flags"].items() if v["flags"]}
        console.print(f"{result.summary['cases_flagged']} of {len(result.report.done)} case(s) flagged"
                      + (": " + ", ".join(f"{k} {n}" for k, n in counts.items()) if counts else ""))
        flagged = result.worklist[result.worklist["flag"]]
        if len(flagged):
            table_view = Table(title="cases to look at first")
            for column in ("case", "worst", "errors", "warnings", "flags"):
                table_view.add_column(column)
            for row in flagged.head(10).itertuples():
                table_view.add_row(str(row.case), str(row.worst_severity), str(row.n_errors), str(row.n_warnings),
                                   str(row.reason))
            console.print(table_view)
    console.print(f"wrote {out_dir / 'flags.csv'}, {out_dir / 'worklist.csv'}, {out_dir / 'volumes.csv'}, "
                  f"{out_dir / 'summary.json'}")
    if code:
        raise typer.Exit(code)
