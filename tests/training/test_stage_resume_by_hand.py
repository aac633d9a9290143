"""A stage killed half-way and resumed ends where an uninterrupted one ends: the same weights,
optimizer moments, losses and step calls; a finished stage is reused untouched. The reference is
the same toy stage run without interruption (and numpy's own seeding for the step generators)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segqc.training.stages import Stage, check_run_record, finished_steps, run_stage, step_generators

STEPS = 6


class Killed(BaseException):
    """Stands for kill -9 during a step: nothing after it runs."""


def _toy_stage(calls: list[int], *, kill_at: int | None = None, slow_before: int = 0, init_seed: int = 0) -> Stage:
    """A linear model trained by SGD with momentum (its moments are part of the state) on the
    batch of step k drawn from :func:`step_generators` (seed 5, stage 0, k)."""
    torch.manual_seed(init_seed)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(k: int) -> dict[str, float]:
        if k == kill_at:
            raise Killed
        calls.append(k)
        if k < slow_before:
            time.sleep(0.05)
        _, generator = step_generators(5, 0, k)
        x = torch.randn(4, 3, generator=generator)
        optimizer.zero_grad()
        loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    return Stage("toy", STEPS, {"net": model}, {"sgd": optimizer}, step)


def test_a_stage_killed_half_way_resumes_at_the_saved_step_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    """Killed during step 3 with a checkpoint after every step: the rerun (a freshly initialised
    model and optimizer, as a new process has) loads the weights and moments of step 3, runs
    steps 3, 4, 5 once each, keeps the loss history and the seconds already spent."""
    calls_whole: list[int] = []
    whole = _toy_stage(calls_whole)
    metrics_whole = run_stage(whole, tmp_path / "whole", checkpoint_every=1)
    assert calls_whole == list(range(STEPS))

    calls: list[int] = []
    with pytest.raises(Killed):
        run_stage(_toy_stage(calls, kill_at=3, slow_before=3), tmp_path / "run", checkpoint_every=1)
    assert calls == [0, 1, 2] and finished_steps(tmp_path / "run", "toy") == 3
    resumed = _toy_stage(calls, init_seed=1)
    metrics = run_stage(resumed, tmp_path / "run", checkpoint_every=1)
    assert calls == [0, 1, 2, 3, 4, 5]
    for a, b in zip(whole.modules["net"].parameters(), resumed.modules["net"].parameters()):
        assert torch.equal(a, b)
    moments_whole = whole.optimizers["sgd"].state_dict()["state"]
    moments = resumed.optimizers["sgd"].state_dict()["state"]
    for key in moments_whole:
        assert torch.equal(moments_whole[key]["momentum_buffer"], moments[key]["momentum_buffer"])
    assert metrics["losses"] == metrics_whole["losses"] and len(metrics["losses"]["loss"]) == STEPS
    assert metrics["steps"] == STEPS and metrics["seconds"] >= 0.15  # three slow steps before the kill
    assert finished_steps(tmp_path / "run", "toy") == STEPS


def test_a_finished_stage_is_reused_without_a_step_or_a_new_save(tmp_path: Path) -> None:
    calls: list[int] = []
    run_stage(_toy_stage(calls), tmp_path, checkpoint_every=100)
    state_json = (tmp_path / "stages" / "toy" / "state.json").read_text()
    lines: list[str] = []
    again = _toy_stage(calls, init_seed=1)
    run_stage(again, tmp_path, checkpoint_every=100, log=lines.append)
    assert calls == list(range(STEPS))
    assert (tmp_path / "stages" / "toy" / "state.json").read_text() == state_json
    assert any("done before" in line for line in lines)
    assert not again.modules["net"].training  # eval mode, as after a run


def test_step_generators_are_seeded_by_the_seed_and_every_word() -> None:
    """The numpy generator is ``default_rng([seed, *words])``; different steps draw differently."""
    rng, generator = step_generators(5, 0, 3)
    assert rng.random() == np.random.default_rng([5, 0, 3]).random()
    _, same = step_generators(5, 0, 3)
    _, other = step_generators(5, 0, 4)
    first = torch.rand(4, generator=generator)
    assert torch.equal(first, torch.rand(4, generator=same))
    assert not torch.equal(first, torch.rand(4, generator=other))


def test_settings_with_tuples_continue_and_a_new_data_field_is_compared(tmp_path: Path) -> None:
    """Settings are compared as JSON gives them back (a tuple is stored as a list), so a rerun
    with the same tuple continues; a data field the record has no value for, other than the
    fields added to segqc later, refuses the run."""
    from segqc.errors import InputError

    settings = {"widths": (8, 16), "lr": 0.1}
    check_run_record(tmp_path, method="demo", settings=settings, data={"slices": 4})
    assert json.loads((tmp_path / "run.json").read_text())["config"]["widths"] == [8, 16]
    check_run_record(tmp_path, method="demo", settings=settings, data={"slices": 4})
    with pytest.raises(InputError, match="other training data"):
        check_run_record(tmp_path, method="demo", settings=settings, data={"slices": 4, "cases": 2})
