"""Seconds for ``segqc report`` on a QC output folder (the whole command, a fresh process per run).

    python benchmarks/bench_report.py QC_OUT [--runs 3]

Prints the number of cases, each run's wall time and the median, and the result as JSON on the
last line. The report is written to a temporary file (QC_OUT is not changed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qc_out", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = pd.read_csv(args.qc_out / "qc.csv", dtype={"case": str})["case"].nunique()
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "segqc", "report", str(args.qc_out), "-o", f"{tmp}/report.html",
                            "-q"], check=True, stdout=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - start)
        size_mb = Path(f"{tmp}/report.html").stat().st_size / 1e6
    result = {"cases": int(cases), "seconds": [round(s, 2) for s in seconds],
              "median_s": round(statistics.median(seconds), 2), "html_mb": round(size_mb, 1)}
    print(f"{cases} cases: {', '.join(f'{s:.1f} s' for s in seconds)} (median {result['median_s']} s); "
          f"one HTML file of {result['html_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
