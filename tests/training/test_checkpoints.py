"""Checkpoint directories round-trip exactly and fail loudly when corrupt or foreign."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors  # noqa: F401
import torch

from segqc.training import CheckpointError, load_checkpoint, load_state, save_checkpoint, save_state, seed_everything


def _trained_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def test_checkpoint_round_trips_weights_config_and_fingerprint(tmp_path):
    model, _ = _trained_model()
    save_checkpoint(tmp_path / "m", method="demo", config={"width": 8}, weights={"net": model.state_dict()},
                    fingerprint={"median_spacing": [1.0, 1.0, 2.0]}, seed=3)
    config, weights, fingerprint = load_checkpoint(tmp_path / "m", method="demo")
    assert config == {"width": 8} and fingerprint == {"median_spacing": [1.0, 1.0, 2.0]}
    for key, value in model.state_dict().items():
        assert torch.equal(weights["net"][key], value)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["seed"] == 3 and "torch" in meta["versions"]


def test_model_directory_of_another_method_is_refused(tmp_path):
    model, _ = _trained_model()
    save_checkpoint(tmp_path / "m", method="cae", config={}, weights={"net": model.state_dict()})
    with pytest.raises(CheckpointError, match="method 'cae', expected 'nnqc'"):
        load_checkpoint(tmp_path / "m", method="nnqc")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "config"])
def test_corrupt_checkpoint_gives_a_clear_error_naming_the_file(tmp_path, damage):
    model, _ = _trained_model()
    directory = save_checkpoint(tmp_path / "m", method="demo", config={}, weights={"net": model.state_dict()})
    weights = directory / "net.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:40])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 100)
    elif damage == "missing":
        weights.unlink()
    else:
        (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory, method="demo")
    assert str(directory) in str(error.value)


@pytest.mark.parametrize("text", ['{"labels": ', "[1, 2]"])
def test_a_corrupt_fingerprint_is_named(tmp_path, text):
    model, _ = _trained_model()
    directory = save_checkpoint(tmp_path / "m", method="demo", config={}, weights={"net": model.state_dict()},
                                fingerprint={"median_spacing": [1.0, 1.0, 2.0]})
    (directory / "fingerprint.json").write_text(text)
    with pytest.raises(CheckpointError, match="corrupt fingerprint.json") as error:
        load_checkpoint(directory, method="demo")
    assert str(directory / "fingerprint.json") in str(error.value)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing", method="demo")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path, method="demo")


def test_training_state_resumes_optimizer_exactly(tmp_path):
    seed_everything(0)
    model, optimizer = _trained_model()
    save_state(tmp_path, {"optimizer": optimizer.state_dict(), "step": 3, "losses": [0.5, 0.25], "tag": None,
                          "rng": torch.get_rng_state()})
    state = load_state(tmp_path)
    assert state["step"] == 3 and state["losses"] == [0.5, 0.25] and state["tag"] is None
    assert torch.equal(state["rng"], torch.get_rng_state())
    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    clone.load_state_dict(model.state_dict())
    clone_opt = torch.optim.Adam(clone.parameters(), lr=1e-2)
    clone_opt.load_state_dict(state["optimizer"])
    batch = torch.randn(5, 4)
    for m, o in ((model, optimizer), (clone, clone_opt)):
        o.zero_grad()
        m(batch).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_seed_everything_makes_draws_repeatable():
    first = (seed_everything(7).random(3), torch.rand(3))
    second = (seed_everything(7).random(3), torch.rand(3))
    assert np.array_equal(first[0], second[0]) and torch.equal(first[1], second[1])


class Killed(BaseException):
    """Stands for kill -9 between two writes: nothing after it runs."""


def test_a_state_save_killed_before_its_json_leaves_the_previous_state_whole(tmp_path, monkeypatch):
    """Once: the new tensors replaced ``state.safetensors`` before ``state.json`` named the new step,
    so a kill in between resumed the old step count with the newer weights."""
    import segqc.training.checkpoints as checkpoints

    save_state(tmp_path, {"step": 10, "w": torch.ones(3)})
    real = checkpoints.write_text_atomic

    def killed(path, text):
        raise Killed

    monkeypatch.setattr(checkpoints, "write_text_atomic", killed)
    with pytest.raises(Killed):
        save_state(tmp_path, {"step": 20, "w": torch.full((3,), 2.0)})
    state = load_state(tmp_path)
    assert state["step"] == 10 and torch.equal(state["w"], torch.ones(3))
    monkeypatch.setattr(checkpoints, "write_text_atomic", real)
    save_state(tmp_path, {"step": 30, "w": torch.full((3,), 3.0)})
    state = load_state(tmp_path)
    assert state["step"] == 30 and torch.equal(state["w"], torch.full((3,), 3.0))
    assert len(list(tmp_path.glob("state*.safetensors"))) == 1  # the orphan of the killed save is gone


def test_a_state_in_the_earlier_layout_still_loads(tmp_path):
    """Runs stopped before the tensor file was named in the skeleton: ``state.safetensors``."""
    save_state(tmp_path, {"step": 4, "w": torch.arange(3.0)})
    skeleton = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / skeleton.pop("__tensors__")).rename(tmp_path / "state.safetensors")
    (tmp_path / "state.json").write_text(json.dumps(skeleton))
    state = load_state(tmp_path)
    assert state["step"] == 4 and torch.equal(state["w"], torch.arange(3.0))
    skeleton["__tensors__"] = "../elsewhere.safetensors"
    (tmp_path / "state.json").write_text(json.dumps(skeleton))
    with pytest.raises(CheckpointError, match="bad tensor file name"):
        load_state(tmp_path)


def test_a_model_save_killed_half_way_over_an_older_model_is_refused_not_mixed(tmp_path, monkeypatch):
    import segqc.training.checkpoints as checkpoints

    first, _ = _trained_model()
    second, _ = _trained_model()
    directory = save_checkpoint(tmp_path / "m", method="demo", config={}, weights={"a": first.state_dict(),
                                                                                   "b": first.state_dict()})
    real = checkpoints._save_tensors

    def killed_after_the_first(tensors, path):
        if path.name == "b.safetensors":
            raise Killed
        real(tensors, path)

    monkeypatch.setattr(checkpoints, "_save_tensors", killed_after_the_first)
    with pytest.raises(Killed):
        save_checkpoint(directory, method="demo", config={}, weights={"a": second.state_dict(),
                                                                      "b": second.state_dict()})
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(directory, method="demo")



def _damage_inside_a_tensor(path, value: float) -> None:
    """Overwrite the first float32 of the last tensor of a safetensors file in place: the header
    stays valid, so the file still parses."""
    import struct

    raw = bytearray(path.read_bytes())
    header_size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_size])
    begin, _ = max(entry["data_offsets"] for key, entry in header.items() if key != "__metadata__")
    raw[8 + header_size + begin:8 + header_size + begin + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


def test_bytes_damaged_inside_the_weights_are_caught_by_the_recorded_checksum(tmp_path):
    """A weights file damaged inside its tensors parsed, and the QC model estimated from it with
    exit 0 (Dice 0.33 for a perfect segmentation, or NaN everywhere)."""
    model, _ = _trained_model()
    directory = save_checkpoint(tmp_path / "m", method="demo", config={}, weights={"net": model.state_dict()})
    assert set(json.loads((directory / "config.json").read_text())["sha256"]) == {"net"}
    load_checkpoint(directory, method="demo")  # intact: loads
    _damage_inside_a_tensor(directory / "net.safetensors", 123.0)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory, method="demo")
    assert str(error.value).startswith(f"{directory / 'net.safetensors'}: corrupt weights file (its SHA-256 differs")


def test_a_checkpoint_saved_before_checksums_is_still_loaded_but_not_with_nan_weights(tmp_path):
    model, _ = _trained_model()
    directory = save_checkpoint(tmp_path / "m", method="demo", config={}, weights={"net": model.state_dict()})
    meta = json.loads((directory / "config.json").read_text())
    del meta["sha256"]
    (directory / "config.json").write_text(json.dumps(meta))
    load_checkpoint(directory, method="demo")
    _damage_inside_a_tensor(directory / "net.safetensors", float("nan"))
    with pytest.raises(CheckpointError, match="holds NaN or infinite values"):
        load_checkpoint(directory, method="demo")


def test_a_config_json_that_is_a_pipe_or_binary_is_one_line_not_a_hang(tmp_path):
    import os

    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "config.json")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path / "a", method="demo")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(CheckpointError, match="not UTF-8 text"):
        load_checkpoint(tmp_path / "b", method="demo")
