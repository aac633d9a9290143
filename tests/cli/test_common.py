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
