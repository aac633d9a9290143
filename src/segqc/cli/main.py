"""The ``segqc`` command line: one Typer app, one module per command group."""

from __future__ import annotations

import inspect

import typer

from segqc.cli import degrade, demo, evaluate, fingerprint, labels, qc, report, review, seg, zoo

app = typer.Typer(
    name="segqc",
    help="Evaluate medical image segmentations with a ground truth, and check them without one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("evaluate")(evaluate.evaluate_command)
app.command("evaluate-raters")(evaluate.evaluate_raters_command)
app.command("demo")(demo.demo_command)
app.command("fingerprint")(fingerprint.fingerprint_command)
app.command("degrade")(degrade.degrade_command)
app.command("report")(report.report_command)
app.add_typer(zoo.app, name="zoo")
app.add_typer(qc.app, name="qc")
app.add_typer(seg.app, name="seg")
app.add_typer(review.app, name="review")
app.add_typer(labels.app, name="labels")


def _one_line_summaries(typer_app: typer.Typer) -> None:
    """Command lists show each command's first docstring paragraph, but keep its line breaks and
    then wrap it again, into ragged lines; give every command that paragraph as one line."""
    for info in typer_app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback is not None else None)
        if info.short_help is None and text:
            info.short_help = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _one_line_summaries(group.typer_instance)


_one_line_summaries(app)
