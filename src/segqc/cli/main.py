"""The ``segqc`` command line: one Typer app, one module per command group."""

from __future__ import annotations

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

