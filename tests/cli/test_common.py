"""The shared CLI helpers: device checks and the run footer."""

from __future__ import annotations

import pandas as pd
import pytest

from segqc.cli._common import check_device, print_run_footer
from segqc.errors import InputError
from segqc.execution import RunReport


@pytest.mark.parametrize("device", ["mps", "mps:0"])
def test_mps_on_a_machine_without_it_is_one_line_not_a_torch_traceback(device):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")  # the CI and development machines have none
    with pytest.raises(InputError, match="MPS is not available on this machine"):
        check_device(device)


@pytest.mark.parametrize("device", ["mps:1", "gpu", "cpu:0"])
def test_unknown_devices_are_refused(device):
    with pytest.raises(InputError, match="expected"):
        check_device(device)


@pytest.mark.parametrize("hint", [False, True])
def test_the_resample_hint_appears_only_for_commands_that_have_the_option(capsys, hint):
    """`labels merge` once suggested --resample, which it does not have."""
    report = RunReport(table=pd.DataFrame(), failed={"c1": "c1.nii.gz: spacing differs"},
                       failure_kinds={"c1": "GeometryMismatchError"})
    assert print_run_footer(report, resample_hint=hint) == 1
    assert ("--resample" in capsys.readouterr().err) is hint


def test_ctrl_c_while_the_commands_load_is_one_line_and_exit_130_not_a_traceback():
    """The console script imported every command module before any guard: Ctrl-C in the first
    second printed a 30-60 line KeyboardInterrupt traceback from inside scipy or pandas. Here the
    interruption is made to arrive exactly during that import."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import builtins
        real_import = builtins.__import__
        def interrupted_import(name, *args, **kwargs):
            if name == "segqc.cli.main":
                raise KeyboardInterrupt
            return real_import(name, *args, **kwargs)
        builtins.__import__ = interrupted_import
        from segqc.cli.entry import main
        main()
    """)
    result = subprocess.run([sys.executable, "-c", script, "evaluate", "--help"], capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr == "error: interrupted\n" and result.stdout == ""


_COMMANDS_INTERRUPTED = """
import sys
from segqc.cli.entry import main
from segqc.cli.main import app
from segqc.cli._common import user_errors

@app.command("unguarded")
def unguarded():  # as a command that imports its work functions, or prints its summary
    raise KeyboardInterrupt

@app.command("guarded")
def guarded():
    with user_errors():
        raise KeyboardInterrupt

main()
"""


@pytest.mark.parametrize(("command", "line"), [
    ("unguarded", "error: interrupted"),
    ("guarded", "error: interrupted; finished cases are kept — rerun the same command to continue")])
def test_ctrl_c_anywhere_in_a_command_is_one_line_and_exit_130(command, line):
    """Typer turns a Ctrl-C outside a command's guard into a silent exit 130: it ended a run with
    no word on why. Inside the guard the command's own line is printed, and only that one."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _COMMANDS_INTERRUPTED, command], capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr == line + "\n", result.stderr


def test_the_console_script_and_python_m_segqc_go_through_the_guarded_entry():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["segqc"] == "segqc.cli.entry:main"
    assert "from segqc.cli.entry import main" in (root / "src" / "segqc" / "__main__.py").read_text()


@pytest.mark.parametrize(("group", "command", "ending"), [
    ([], "evaluate-raters", "volume CRPS."), (["labels"], "rules", "is logged."), (["labels"], "check", "exit code.")])
def test_command_lists_show_each_summary_as_one_flowing_paragraph(group, command, ending):
    """Once: the command lists kept the docstrings' line breaks and wrapped them again, so a
    summary broke after a few words; on a wide terminal each summary is now one line."""
    from typer.testing import CliRunner

    from segqc.cli.main import app

    result = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(f"│ {command} "))
    assert ending in line, result.output
