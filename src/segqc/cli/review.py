"""``segqc review``: the local review app, and the export of its decisions."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from segqc.cli._common import console, prepare_output_file, print_warning, user_errors


class _OpenByDefault(TyperGroup):
    """``segqc review OUT_DIR ...`` means ``segqc review open OUT_DIR ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["open", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_OpenByDefault, no_args_is_help=True,
                  help="Review cases in a local web app (3D viewer, keyboard decisions), and export the decisions. "
                       "`segqc review OUT_DIR` is short for `segqc review open OUT_DIR`.")


def _default_rater() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "reviewer")


@app.command("open")
def open_command(
    out_dir: Path = typer.Argument(..., help="Output folder of `segqc qc predict`, `qc benchmark` or `evaluate`."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the images (default: the image files "
                                                              "recorded in OUT_DIR)."),
    segs: Path | None = typer.Option(None, "--segs", help="Folder of the reviewed segmentations (default: the files "
                                                          "recorded in OUT_DIR)."),
    db: Path | None = typer.Option(None, "--db", help="Review database (SQLite; default OUT_DIR/review.sqlite). "
                                                      "Several raters may share one."),
    rater: str = typer.Option(None, "--rater", help="Your name in the decisions (default: the login name)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but 127.0.0.1/localhost "
                                                         "opens the app to the network."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port (0: a free one)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the browser page."),
) -> None:
    """Open the review app: worklist worst first, viewer with image, segmentation, pGT/GT, error and
    uncertainty layers, decisions by keyboard (A R F U, arrows, N next flagged, T overlay, ? help).

    Example: segqc review qc_out/ --images imagesTs/ --segs predictions/ --rater anna
    """
    from segqc.review.app import LOCAL_HOSTS, ReviewSession
    from segqc.review.server import check_address, serve
    from segqc.review.store import DecisionStore
    from segqc.review.worklist import load_worklist

    with user_errors(interrupted="interrupted before the review started"):
        worklist = load_worklist(out_dir, images=images, segs=segs)
        port = check_address(host, port)  # before the database is made: one line when nothing can listen there
        name = (rater or _default_rater()).strip()
        if not name:  # before the database is made
            raise ValueError("--rater must not be empty")
        store = DecisionStore(db if db is not None else Path(out_dir) / "review.sqlite")
        flagged = sum(case.flagged for case in worklist.cases)
        console.print(f"{len(worklist.cases)} case(s), {flagged} flagged; decisions of {name} go to {store.path}")
        if host not in LOCAL_HOSTS:
            print_warning(f"listening on {host}: other machines can reach the app (and its images)")

        def started(url: str) -> None:
            console.print(f"review at {url}  (Ctrl-C stops)", highlight=False)

        try:
            serve(ReviewSession(worklist, store, name), host=host, port=port, open_browser=not no_browser,
                  on_start=started)
        except KeyboardInterrupt:  # Ctrl-C is how a review ends: not an error
            pass
        # the server also returns on its own when it handled the Ctrl-C itself (uvicorn's signal handler)
        console.print(f"review stopped; decisions are saved in {store.path}", highlight=False, soft_wrap=True)


@app.command("export")
def export_command(
    db: Path = typer.Argument(..., help="Review database (review.sqlite)."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write: .csv (CSV) or .json (JSON records)."),
    history: bool = typer.Option(False, "--history", help="Every decision ever taken, not only the latest per "
                                                          "case, class and rater."),
) -> None:
    """Write the decisions to CSV or JSON (columns case, label, rater, decision, comment,
    decided_at, estimate), to join with other segqc tables on `case`.

    Example: segqc review export qc_out/review.sqlite -o decisions.csv
    """
    from segqc.review.store import DecisionStore, export_decisions, rater_agreement

    with user_errors(interrupted="interrupted; nothing was written"):
        prepare_output_file(output, suffixes=(".csv", ".json"), inputs=[db])
        table = export_decisions(DecisionStore(db, readonly=True), output, history=history)
        console.print(f"wrote {len(table)} decision(s) of {table['rater'].nunique()} rater(s) to {output}")
        if history:
            return
        for pair in rater_agreement(table):
            if pair["kappa"] is not None:
                names = " vs ".join(str(r) for r in pair["raters"])  # type: ignore[attr-defined]
                console.print(f"Cohen's kappa {names}: {pair['kappa']:.3f} over {pair['n']} case(s)")
