"""Test helpers shared by the report and review tests: one error line of a CLI result, and a copy
of an evaluate folder whose recorded input files a test may change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def one_error_line(result) -> str:
    """The one ``error:`` line of a CLI result that must end with exit code 2 and nothing else."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def copy_evaluate(evaluate_out: Path, toy: dict[str, Path], root: Path) -> Path:
    """A copy of the evaluate folder whose summary.json names copies of its files under ``root``
    (``root/pred``, ``root/gt``), so a test may change them."""
    shutil.copytree(toy["segs"], root / "pred")
    shutil.copytree(toy["gt"], root / "gt")
    folder = root / "ev"
    shutil.copytree(evaluate_out, folder)
    summary = json.loads((folder / "summary.json").read_text())
    for case, files in summary["cases"]["inputs"].items():
        files["pred"] = [str(root / "pred" / f"{case}.nii.gz")]
        files["gt"] = [str(root / "gt" / f"{case}.nii.gz")]
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder
