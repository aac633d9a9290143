"""Every segmentation method's training, stopped after a checkpoint and run again, ends at exactly
the weights of an uninterrupted run: LDSeg (diffusion noise, time steps, augmentation noise and
the noise-consistency pass drawn per step), the U-Net with MC dropout, the consensus diffusion and
the Probabilistic U-Net (posterior samples). A draw from a generator that the rerun does not
restore — torch's global one, say, which dropout and ``rsample`` use — makes the two differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from consensus_toy_data import make_rater_folder
from model_files import assert_same_weights

from segqc.methods import method

OVERRIDES: dict[str, dict[str, Any]] = {
    "ldseg": {"noise_aug": 0.1, "noise_consistency": 1.0},
    "unet": {"noise_aug": 0.1, "dropout": 0.2},
    "consensus": {},
    "probunet": {},
}


@pytest.fixture(scope="module")
def rater_folder(tmp_path_factory) -> Path:
    return make_rater_folder(tmp_path_factory.mktemp("raters"), cases=8)


class Stop(Exception):
    pass


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(name, disk_dataset, rater_folder,
                                                                                 tmp_path):
    seg = method(name, "seg")
    config = seg.config("tiny", steps_train=24, checkpoint_every=10, **OVERRIDES[name])
    dataset = rater_folder if name in ("consensus", "probunet") else disk_dataset
    quiet: list[str] = []
    whole = seg.train(dataset, tmp_path / "whole", config=config, cases=None, log=quiet.append, device="cpu")

    def interrupt(line: str) -> None:
        if line.startswith("train step 14/"):  # after the step-10 checkpoint
            raise Stop

    with pytest.raises(Stop):
        seg.train(dataset, tmp_path / "stopped", config=config, cases=None, log=interrupt, device="cpu")
    assert not (tmp_path / "stopped" / "model").exists()
    lines: list[str] = []
    resumed = seg.train(dataset, tmp_path / "stopped", config=config, cases=None, log=lines.append, device="cpu")
    assert any("resuming at step 10/24" in line for line in lines), lines
    assert_same_weights(whole, resumed)


def test_a_training_killed_with_sigkill_continues_to_the_weights_of_an_uninterrupted_one(disk_dataset, tmp_path):
    """``kill -9`` of ``segqc seg train`` at whatever point it reached (mid-step or mid-save): the
    same command continues from the last whole checkpoint and ends where an uninterrupted run does
    (both runs in fresh processes with one torch thread)."""
    import os
    import subprocess
    import sys
    import time

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "segqc", "seg", "train", "unet", str(disk_dataset), "-o", str(out), "--config",
                "tiny", "--set", "steps_train=400", "--set", "checkpoint_every=25", "--device", "cpu"]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True)
    process = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    for line in process.stdout:  # past the first checkpoints, then kill without warning
        if line.startswith("train step 160/"):
            break
    time.sleep(0.05)
    process.kill()
    process.wait(timeout=30)
    assert not (tmp_path / "killed" / "model").exists()
    resumed = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at step" in resumed.stdout, resumed.stdout
    assert_same_weights(tmp_path / "whole" / "model", tmp_path / "killed" / "model")


def test_sigterm_stops_a_training_like_ctrl_c_and_the_same_command_resumes(disk_dataset, tmp_path):
    """SIGTERM (a scheduler's or a container's stop) killed a training silently with exit 143;
    it now stops like Ctrl-C: one line, exit 130, and the same command continues."""
    import os
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "segqc", "seg", "train", "unet", str(disk_dataset), "-o", str(tmp_path / "run"),
               "--config", "tiny", "--set", "steps_train=100000", "--set", "checkpoint_every=25", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # past the first checkpoints
        if line.startswith("train step 10000/"):
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 130, rest
    assert "interrupted; the last training checkpoint is kept" in " ".join(rest.split())
    assert "Traceback" not in rest
    resumed = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert resumed.stdout is not None
    first = [next(resumed.stdout) for _ in range(3)]
    resumed.kill()
    resumed.wait(timeout=30)
    assert any("resuming at step" in line for line in first), first
