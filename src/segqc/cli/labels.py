"""``segqc labels``: label schemes, mapping between schemes, merging several sources into one map,
anatomical rules, checks, label quality of pseudo-label datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segqc.cli._common import (
    console,
    prepare_output_dir,
    prepare_output_file,
    print_run_footer,
    print_warning,
    user_errors,
)
from segqc.cli.labels_check import check_command
from segqc.cli.labels_quality import quality_command

app = typer.Typer(help="Label tooling: schemes, mapping, merging sources, anatomical rules, checks, label quality.",
                  no_args_is_help=True)
scheme_app = typer.Typer(help="Label schemes: list the shipped ones, show one, compare two, export.",
                         no_args_is_help=True)
app.add_typer(scheme_app, name="scheme")
app.command("quality")(quality_command)
app.command("check")(check_command)

_SCHEME_HELP = "A shipped scheme (total, total_v1, total_mr), a scheme file (YAML/JSON) or a dataset.json."


@scheme_app.command("list")
def scheme_list_command() -> None:
    """The label schemes that ship with segqc.

    Example: segqc labels scheme list
    """
    from segqc.anatomy.scheme import SHIPPED_SCHEMES, shipped_scheme

    table = Table()
    for column in ("scheme", "classes", "groups", "description"):
        table.add_column(column)
    for name in SHIPPED_SCHEMES:
        scheme = shipped_scheme(name)
        n_values = len(scheme.values)
        table.add_row(name, str(n_values), str(len(scheme.classes) - n_values), scheme.description)
    console.print(table)


def _scheme_files(*schemes: str) -> list[Path]:
    """The arguments among ``schemes`` that are files (the others name shipped schemes)."""
    return [Path(scheme) for scheme in schemes if Path(scheme).is_file()]


@scheme_app.command("show")
def scheme_show_command(
    scheme: str = typer.Argument(..., help=_SCHEME_HELP),
    out: Path | None = typer.Option(None, "-o", "--out", help="Also write the class table as CSV."),
) -> None:
    """Show a scheme's classes: value, name, parent group, depth, colour.

    Example: segqc labels scheme show total
    """
    from segqc.anatomy.scheme import load_scheme

    with user_errors(interrupted="interrupted; nothing was written"):
        if out is not None:
            prepare_output_file(out, suffixes=(".csv",), inputs=_scheme_files(scheme))
        loaded = load_scheme(scheme)
        table = loaded.table()
        if out is not None:
            table.to_csv(out, index=False)
    rich_table = Table(title=f"{loaded.name}: {len(loaded.values)} classes")
    for column in ("value", "name", "parent", "depth", "colour"):
        rich_table.add_column(column)
    for row in table.itertuples():
        value = "" if row.value is None or str(row.value) == "<NA>" else str(row.value)
        rich_table.add_row(value, str(row.name), str(row.parent), str(row.depth), f"[{row.colour}]{row.colour}[/]")
    console.print(rich_table)


@scheme_app.command("diff")
def scheme_diff_command(
    old: str = typer.Argument(..., help=_SCHEME_HELP),
    new: str = typer.Argument(..., help=_SCHEME_HELP),
    out: Path | None = typer.Option(None, "-o", "--out", help="Also write the whole comparison as CSV."),
    all_rows: bool = typer.Option(False, "--all", help="Also list the names whose value did not change."),
) -> None:
    """Which class names moved to another value, vanished or are new between two schemes (e.g.
    TotalSegmentator v1 -> v2), and what an old value means in the new scheme.

    Example: segqc labels scheme diff total_v1 total -o v1_to_v2.csv
    """
    from segqc.anatomy.scheme import load_scheme, scheme_diff

    with user_errors(interrupted="interrupted; nothing was written"):
        if out is not None:
            prepare_output_file(out, suffixes=(".csv",), inputs=_scheme_files(old, new))
        a, b = load_scheme(old), load_scheme(new)
        diff = scheme_diff(a, b)
        if out is not None:
            diff.to_csv(out, index=False)
    counts = diff["status"].value_counts().to_dict()
    table = Table(title=f"{a.name} -> {b.name}: " + ", ".join(f"{counts.get(s, 0)} {s}"
                                                            for s in ("same", "moved", "vanished", "new")))
    for column in ("name", a.name, b.name, "status", f"{a.name} value now means"):
        table.add_column(column)
    for row in diff.itertuples():
        if row.status == "same" and not all_rows:
            continue
        cells = ["" if str(v) == "<NA>" else str(v) for v in (row.old_value, row.new_value)]
        table.add_row(str(row.name), *cells, str(row.status), str(row.new_name_at_old_value))
    console.print(table)


@scheme_app.command("export")
def scheme_export_command(
    scheme: str = typer.Argument(..., help=_SCHEME_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="File to write: .yaml/.yml (YAML) or .json."),
) -> None:
    """Write a scheme as a file to edit (add colours, codes, groups) and pass back to other commands.

    Example: segqc labels scheme export total -o my_scheme.yaml
    """
    from segqc.anatomy.scheme import load_scheme

    with user_errors(interrupted="interrupted; nothing was written"):
        prepare_output_file(out, suffixes=(".yaml", ".yml", ".json"), inputs=_scheme_files(scheme))
        load_scheme(scheme).save(out)
    console.print(f"wrote {out}")


@app.command("map")
def map_command(
    in_path: Path = typer.Argument(..., metavar="IN", help="A folder of label maps (CASE.nii.gz) or one file."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: CASE.nii.gz, regions/, classes.csv, "
                                                          "mapping.csv, scheme.yaml, summary.json. A rerun removes "
                                                          "the maps of an earlier run that it does not write."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping file (YAML/JSON: source, target, map, "
                                                               "unmapped, regions)."),
    source: str | None = typer.Option(None, "--source", help="Without --mapping: the maps' scheme; classes go to "
                                                             "the class of the same name (or parent group) in --to."),
    to: str | None = typer.Option(None, "--to", help="Without --mapping: the target scheme."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Map label maps from one scheme to another with a lookup table (many-to-one = union, drop,
    nnU-Net-style regions).

    Example: segqc labels map v1_labels/ --source total_v1 --to total -o v2_labels/
    """
    from segqc.anatomy.folders import map_folder
    from segqc.anatomy.mapping import load_mapping, mapping_by_name
    from segqc.anatomy.scheme import load_scheme

    with user_errors():
        if (mapping is None) == (source is None or to is None):
            raise ValueError("give either --mapping FILE or both --source and --to")
        if mapping is not None:
            loaded = load_mapping(Path(mapping))
        else:
            assert source is not None and to is not None
            loaded = mapping_by_name(load_scheme(source), load_scheme(to))
        prepare_output_dir(out_dir)
        _, report = map_folder(in_path, loaded, out_dir, jobs=jobs, scheduler=scheduler, progress=not quiet)
    code = print_run_footer(report, out_dir=out_dir)
    lost = loaded.table()
    lost = lost[lost["target_value"] == 0]
    if len(lost):
        print_warning(f"{len(lost)} source class(es) map to background: "
                      + ", ".join(f"{r.source} ({r.how})" for r in lost.head(8).itertuples())
                      + (" ..." if len(lost) > 8 else "") + f"; see {out_dir / 'mapping.csv'}")
    if code:
        raise typer.Exit(code)


@app.command("merge")
def merge_command(
    sources: list[str] = typer.Argument(..., metavar="SOURCE[=MAPPING]...",
                                        help="Label-map folders (or single files), each optionally =SPEC: a mapping "
                                             "file or the source's scheme (mapped by name into --scheme)."),
    scheme: str = typer.Option(..., "--scheme", help="Target scheme. " + _SCHEME_HELP),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: merged/, provenance/, classes.csv, "
                                                          "conflicts.csv, scheme.yaml, summary.json. A rerun removes "
                                                          "the maps of an earlier run that it does not write."),
    strategy: str = typer.Option("hierarchy", "--strategy",
                                 help="Overlaps: hierarchy (finer class wins, DAP coarse-to-fine), priority (first "
                                      "source in --priority wins) or vote (most sources; ties by priority)."),
    priority: str | None = typer.Option(None, "--priority", help="Source numbers (1-based) most trusted first, "
                                                                 "e.g. 2,1 (default: the order given)."),
    names: str | None = typer.Option(None, "--names", help="Comma-separated source names (default: file or folder "
                                                           "names)."),
    reference: Path | None = typer.Option(None, "--reference",
                                          help="Grid of the merged map: an image/label file or a folder with one per "
                                               "case (default: the first source's map)."),
    case: str | None = typer.Option(None, "--case", help="Case id when the sources are single files."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
) -> None:
    """Merge partial label maps of several sources into one scheme: duplicate classes as their union,
    overlaps by hierarchy, priority or vote; a provenance map and a conflict report.

    Example: segqc labels merge model_a/ model_b/=total_v1 --scheme total --priority 2,1 -o merged/
    """
    from segqc.anatomy.folders import LabelSource, merge_folders
    from segqc.anatomy.mapping import mapping_into
    from segqc.anatomy.scheme import load_scheme

    with user_errors():
        target = load_scheme(scheme)
        parsed = []
        given_names = [n.strip() for n in names.split(",")] if names else None
        if given_names is not None and len(given_names) != len(sources):
            raise ValueError(f"--names gives {len(given_names)} names for {len(sources)} sources")
        for i, item in enumerate(sources):
            path_text, _, spec = item.partition("=")
            path = Path(path_text)
            name = given_names[i] if given_names else path.name.split(".")[0]
            parsed.append(LabelSource(path=path, name=name, mapping=mapping_into(spec, target) if spec else None))
        order = None
        if priority:
            try:
                order = [int(v) - 1 for v in priority.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"--priority expects source numbers like 2,1, got {priority!r}") from None
        prepare_output_dir(out_dir)
        classes, conflicts, report = merge_folders(parsed, target, out_dir, strategy=strategy, priority=order,
                                                   reference=reference, case=case, jobs=jobs, scheduler=scheduler,
                                                   progress=not quiet)
    code = print_run_footer(report, out_dir=out_dir)
    if not quiet and len(classes):
        merged = classes[classes["source"] == "merged"]
        console.print(f"{len(report.done)} case(s), {merged['class'].nunique()} classes in the merged maps; "
                      f"{int(conflicts['voxels'].sum()) if len(conflicts) else 0} conflicting voxels")
        if len(conflicts):
            table = Table(title="largest conflicts (source_a class vs source_b class)")
            for column in ("case", "source_a", "class_a", "source_b", "class_b", "voxels"):
                table.add_column(column)
            for row in conflicts.head(10).itertuples():
                table.add_row(str(row.case), str(row.source_a), str(row.class_a), str(row.source_b),
                              str(row.class_b), str(row.voxels))
            console.print(table)
    console.print(f"wrote {out_dir / 'merged'}, {out_dir / 'provenance'}, {out_dir / 'classes.csv'}, "
                  f"{out_dir / 'conflicts.csv'}")
    if code:
        raise typer.Exit(code)


@app.command("rules")
def rules_command(
    in_path: Path = typer.Argument(..., metavar="IN", help="A folder of label maps (CASE.nii.gz) or one file."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder: CASE.nii.gz (fixed), changes.csv, "
                                                          "rules.yaml, summary.json. A rerun removes the maps of "
                                                          "an earlier run that it does not write."),
    rules: str = typer.Option("dap_total", "--rules", help="Rules: the preset dap_total (DAP Atlas Algorithm 3 for "
                                                           "the TotalSegmentator 'total' scheme) or a rules YAML."),
    scheme: str | None = typer.Option(None, "--scheme", help="Scheme of the maps (default: the rules' own)."),
    metadata: Path | None = typer.Option(None, "--metadata", help="CSV with a 'case' column and e.g. 'sex' (M/F) "
                                                                  "for the sex rule."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parallel worker processes (0 = one per core)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
) -> None:
    """Fix systematic label errors of 3D label maps with declared anatomical rules (left/right by the
    midsagittal plane, rib and vertebra order, largest component, body regions, sex); every change is
    logged.

    Example: segqc labels rules totalseg_out/ --rules dap_total --metadata sex.csv -o fixed/
    """
    from segqc.anatomy.folders import read_metadata, rules_folder
    from segqc.anatomy.rules import load_rules
    from segqc.anatomy.scheme import load_scheme

    with user_errors():
        loaded = load_rules(rules, scheme=load_scheme(scheme) if scheme else None)
        rows = read_metadata(metadata) if metadata is not None else None
        prepare_output_dir(out_dir)
        changes, report = rules_folder(in_path, loaded, out_dir, metadata=rows, jobs=jobs, scheduler=scheduler,
                                       progress=not quiet)
    code = print_run_footer(report, out_dir=out_dir)
    if not quiet and len(changes):
        changed = changes[changes["voxels"] > 0]
        table = Table(title=f"changes: {changed['case'].nunique()} of {len(report.done)} case(s)")
        for column in ("rule", "changes", "voxels", "ml"):
            table.add_column(column)
        for rule, group in changed.groupby("rule", sort=False):
            table.add_row(str(rule), str(len(group)), str(int(group["voxels"].sum())), f"{group['ml'].sum():.1f}")
        console.print(table)
    console.print(f"wrote {out_dir / 'changes.csv'} and the fixed maps in {out_dir}")
    if code:
        raise typer.Exit(code)
