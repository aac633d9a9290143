"""The README's metric table lists every registered metric with its unit and best/worst value, so
the user guide cannot fall behind the registry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from segqc.metrics.registry import METRICS

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in README.read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.replace("\\|", "/").strip("|").split("|")]
            rows.setdefault(cells[0].strip("`"), cells)  # the first table is the metric table
    return rows


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_has_a_readme_row_with_its_unit_and_range(name):
    rows = _rows()
    assert name in rows, f"README metric table lacks {name}"
    info = METRICS[name]
    cells = rows[name]
    assert cells[2] == info.unit
    if info.kind != "measure":
        assert cells[3] == ("∞" if math.isinf(info.best) else f"{info.best:g}")
        assert cells[4] == ("∞" if math.isinf(info.worst) else f"{info.worst:g}")
