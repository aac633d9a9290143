"""A reviewer's pass through the flagged cases of a QC output, by keyboard only, in headless
Chromium: how long from a key press until the next case is on screen, and whether every decision
reaches the export.

    python benchmarks/bench_review.py QC_OUT [--cases 20] [--screens DIR]

Starts ``segqc review QC_OUT --no-browser`` on a new database, then repeats: ``N`` until a
flagged, undecided case shows, ``A`` (every fifth ``F``); then runs ``segqc review export`` and
checks that it holds one decision per visited case. Prints the median and maximum seconds per
case (key press to layers drawn) and writes the numbers as JSON to stdout's last line.
Needs Debian's chromium at /usr/bin/chromium and the test extra (playwright).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qc_out", type=Path)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--screens", type=Path, default=None, help="save a screenshot of the first 3 cases here")
    args = parser.parse_args()
    work = pd.read_csv(args.qc_out / "worklist.csv", dtype={"case": str})
    flagged = set(work[work["flag"]]["case"])
    tmp = Path(tempfile.mkdtemp(prefix="segqc-review-bench-"))
    db, port = tmp / "review.sqlite", _port()
    server = subprocess.Popen([sys.executable, "-m", "segqc", "review", str(args.qc_out), "--db", str(db),
                               "--rater", "bench", "--port", str(port), "--no-browser"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "review at" in line:
                break
        decided: list[str] = []
        seconds: list[float] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.body.dataset.loaded === '1'", timeout=60_000)
            began = time.perf_counter()
            while len(decided) < args.cases:
                case = page.evaluate("document.body.dataset.case")
                if case in flagged and case not in decided:
                    if args.screens is not None and len(decided) < 3:
                        args.screens.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(args.screens / f"review_{len(decided)}.png"))
                    start = time.perf_counter()
                    page.keyboard.press("f" if len(decided) % 5 == 0 else "a")
                    decided.append(case)
                    page.wait_for_function(
                        f"Number(document.body.dataset.saved || 0) >= {len(decided)} && "
                        "document.body.dataset.busy === '0' && document.body.dataset.loaded === '1'", timeout=60_000)
                    seconds.append(time.perf_counter() - start)
                else:
                    start = time.perf_counter()
                    page.keyboard.press("n")
                    page.wait_for_function(
                        "prev => document.body.dataset.case !== prev && document.body.dataset.loaded === '1'",
                        arg=case, timeout=60_000)
                    seconds.append(time.perf_counter() - start)
            total = time.perf_counter() - began
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    out = tmp / "decisions.csv"
    subprocess.run([sys.executable, "-m", "segqc", "review", "export", str(db), "-o", str(out)], check=True)
    exported = pd.read_csv(out, dtype={"case": str})
    result = {"cases": len(decided), "exported": len(exported), "all_flagged": bool(set(exported["case"]) <= flagged),
              "key_presses": len(seconds), "median_s": round(statistics.median(seconds), 3),
              "max_s": round(max(seconds), 3), "total_s": round(total, 1)}
    print(f"{len(decided)} flagged cases decided with {len(seconds)} key presses in {total:.1f} s; "
          f"per key: median {result['median_s']} s, max {result['max_s']} s; export holds {len(exported)} rows")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
