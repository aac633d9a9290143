"""Training states: a save killed while its tensors are written leaves the previous state whole,
and nested containers come back with their exact types (tuples, integer keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segqc.training import load_state, save_state


class Killed(BaseException):
    """Stands for kill -9 in the middle of a write: nothing after it runs."""


def test_a_state_save_killed_while_writing_its_tensors_leaves_the_previous_state_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new tensor file must be complete before ``state.json`` names it: a skeleton switched
    first would point at a tensor file that a kill left missing, and the run could not resume."""
    import segqc.training.checkpoints as checkpoints

    save_state(tmp_path, {"step": 10, "w": torch.ones(3)})

    def killed(tensors, path):
        raise Killed

    monkeypatch.setattr(checkpoints, "_save_tensors", killed)
    with pytest.raises(Killed):
        save_state(tmp_path, {"step": 20, "w": torch.full((3,), 2.0)})
    state = load_state(tmp_path)
    assert state is not None and state["step"] == 10 and torch.equal(state["w"], torch.ones(3))


def test_nested_containers_round_trip_with_their_types(tmp_path: Path) -> None:
    """An optimizer's ``state`` is keyed by integers and its ``betas`` is a tuple; both must come
    back as they were (a str key or a list would not match the optimizer's own state dict)."""
    state = {"opt": {"state": {0: {"step": torch.tensor(3.0)}, 1: {"exp_avg": torch.arange(2.0)}},
                     "param_groups": [{"betas": (0.9, 0.999), "params": [0, 1], "amsgrad": False}]},
             "history": {"loss": [0.5, 0.25]}, "tag": None}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back is not None
    assert set(back["opt"]["state"]) == {0, 1}
    assert isinstance(back["opt"]["param_groups"][0]["betas"], tuple)
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["opt"]["param_groups"][0]["params"] == [0, 1] and back["opt"]["param_groups"][0]["amsgrad"] is False
    assert torch.equal(back["opt"]["state"][1]["exp_avg"], torch.arange(2.0))
    assert back["history"] == {"loss": [0.5, 0.25]} and back["tag"] is None

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    save_state(tmp_path, {"optimizer": optimizer.state_dict()})
    loaded = load_state(tmp_path)
    assert loaded is not None
    again = torch.optim.Adam(model.parameters(), lr=0.1)
    again.load_state_dict(loaded["optimizer"])
    assert again.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
