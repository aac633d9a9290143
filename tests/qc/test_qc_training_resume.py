"""A QC method's training stopped after a checkpoint and run again ends at exactly the model of an
uninterrupted run: QCResUNet (balanced epochs re-drawn per epoch, spatial dropout, the read-out
fitted after training) and the autoencoder baseline. (nnQC: tests/qc/test_nnqc_training.py.) A
draw the rerun does not restore — torch's global generator, an epoch order kept only in memory —
makes the two differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from model_files import assert_same_weights
from qc_toy_data import make_qc_dataset

from segqc.qc.training_api import train_method

RUNS: dict[str, tuple[dict[str, Any], str, str]] = {
    # overrides, a log line after the first checkpoint, the resume line
    "qcresunet": ({"epochs": 6, "samples_per_epoch": 8, "batch_size": 2, "checkpoint_every": 10, "dropout": 0.3,
                   "readout_per_case": 2}, "member0 step 14/", "resuming at step 10/24"),
    # two members, stopped in the second: the first is reused and its read-out fitted again
    "qcresunet_members": ({"epochs": 6, "samples_per_epoch": 8, "batch_size": 2, "checkpoint_every": 10,
                           "dropout": 0.3, "readout_per_case": 2, "members": 2}, "member1 step 14/",
                          "resuming at step 10/24"),
    "cae": ({"epochs": 12}, "train epoch 7/", "resuming at epoch 5/12"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_qc_dataset(tmp_path_factory.mktemp("qc_resume") / "data", n_cases=4, shape=(32, 32, 6))


class Stop(Exception):
    pass


@pytest.mark.parametrize("name", sorted(RUNS))
def test_an_interrupted_training_resumes_to_the_model_of_an_uninterrupted_one(name, dataset, tmp_path):
    overrides, stop_at, resume_line = RUNS[name]
    name = name.removesuffix("_members")
    whole = train_method(name, dataset, tmp_path / "whole", config="tiny", overrides=overrides, log=lambda _: None)

    def interrupt(line: str) -> None:
        if line.startswith(stop_at):
            raise Stop

    with pytest.raises(Stop):
        train_method(name, dataset, tmp_path / "stopped", config="tiny", overrides=overrides, log=interrupt)
    lines: list[str] = []
    resumed = train_method(name, dataset, tmp_path / "stopped", config="tiny", overrides=overrides,
                           log=lines.append)
    assert any(resume_line in line for line in lines), lines
    assert_same_weights(whole, resumed)
