"""Training the zoo: held-out patients unseen, loss goes down, checkpoints round-trip, resume continues."""

from __future__ import annotations

import json
from dataclasses import replace

import monai  # noqa: F401
import numpy as np
import pytest
import torch
from zoo_fixtures import TINY

from segqc.errors import InputError
from segqc.fingerprint import DatasetFingerprint
from segqc.io.split import Split, patient_id
from segqc.training import CheckpointError, load_checkpoint, load_state
from segqc.zoo import load_model, read_zoo, train_zoo


def test_training_never_sees_held_out_patients(trained_zoo):
    split = Split.load(trained_zoo / "split.json")
    assert not {patient_id(c) for c in split.train} & {patient_id(c) for c in split.holdout}
    assert len(split.holdout_patients) == 1 and len(split.train_patients) == 3
    fingerprint = DatasetFingerprint.load(trained_zoo / "fingerprint.json")
    assert sorted(c.case for c in fingerprint.cases) == sorted(split.train)


def test_training_loss_decreases(trained_zoo):
    history = json.loads((trained_zoo / "train_log.json").read_text())["loss_history"]
    assert len(history) == TINY.epochs
    assert history[-1] < 0.7 * history[0]
    metrics = json.loads((trained_zoo / "models" / "unet_e004" / "metrics.json").read_text())
    assert metrics["loss_history"] == history and metrics["epoch"] == 4


def test_snapshots_are_saved_at_the_snapshot_epochs_and_round_trip(trained_zoo):
    models = sorted(p.name for p in (trained_zoo / "models").iterdir())
    assert models == ["unet_e001", "unet_e004"]
    info = read_zoo(trained_zoo)
    assert info.config == TINY and info.classes == (0, 1, 2) and info.in_channels == 1
    config, weights, fingerprint = load_checkpoint(trained_zoo / "models" / "unet_e004", method="zoo_unet")
    assert config["epoch"] == 4 and config["zoo"] == TINY.to_dict() and fingerprint["n_cases"] == 6
    model = load_model(trained_zoo / "models" / "unet_e004")
    assert model.epoch == 4 and model.plan.size == 32 and model.labels == (1, 2)
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, weights["unet"][key])
    first = load_model(trained_zoo / "models" / "unet_e001").network.state_dict()
    assert any(not torch.equal(first[k], v) for k, v in model.network.state_dict().items())
    with pytest.raises(CheckpointError, match="method 'zoo_unet', expected 'nnqc'"):
        load_checkpoint(trained_zoo / "models" / "unet_e004", method="nnqc")


def test_an_interrupted_run_continues_and_ends_where_an_uninterrupted_one_does(toy_dataset, trained_zoo, tmp_path):
    out = tmp_path / "zoo"
    train_zoo(toy_dataset, out, replace(TINY, epochs=2))  # as if stopped after epoch 2
    assert load_state(out / "stages" / "train")["step"] == 2
    lines: list[str] = []
    train_zoo(toy_dataset, out, TINY, log=lines.append)
    assert "train: resuming at epoch 2/4" in lines
    assert not any(line.startswith(("train epoch 1/", "train epoch 2/")) for line in lines)
    resumed = load_model(out / "models" / "unet_e004").network.state_dict()
    straight = load_model(trained_zoo / "models" / "unet_e004").network.state_dict()
    for key, value in straight.items():
        assert torch.allclose(resumed[key], value, atol=1e-5), key
    history = json.loads((out / "train_log.json").read_text())["loss_history"]
    expected = json.loads((trained_zoo / "train_log.json").read_text())["loss_history"]
    assert np.allclose(history, expected, atol=1e-4)
    lines.clear()
    train_zoo(toy_dataset, out, TINY, log=lines.append)  # finished: nothing to do
    assert any("done before (4 epochs)" in line for line in lines)


def test_continuing_with_other_settings_is_refused(toy_dataset, trained_zoo, tmp_path):
    import shutil

    out = tmp_path / "zoo"
    shutil.copytree(trained_zoo, out)
    with pytest.raises(InputError, match=r"other settings \(lr 0.01 -> 0.05\)"):
        train_zoo(toy_dataset, out, replace(TINY, lr=0.05))
    (tmp_path / "junk" / "models").mkdir(parents=True)
    with pytest.raises(InputError, match="no zoo.json"):
        train_zoo(toy_dataset, tmp_path / "junk", TINY)


def test_bad_training_input_is_one_clear_error(tmp_path, toy_dataset):
    with pytest.raises(InputError, match="dataset folder not found"):
        train_zoo(tmp_path / "missing", tmp_path / "out", TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no dataset.json"):
        train_zoo(tmp_path / "empty", tmp_path / "out", TINY)


ONE_EPOCH = replace(TINY, epochs=1, snapshot_epochs=(1,))


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit_in_place(path, change, spacing=None) -> None:
    """Rewrite the image ``path`` with ``change(array)`` (and ``spacing``, if given), keeping its
    name and time stamps."""
    import os

    from segqc.io.geometry import Geometry
    from segqc.io.images import read_image, write_image

    stat = path.stat()
    image = read_image(path)
    geometry = image.geometry if spacing is None else Geometry.from_shape(image.array.shape, spacing)
    write_image(path, change(image.array), geometry)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_label_map_edited_in_place_is_other_training_data(toy_dataset, tmp_path):
    import shutil

    dataset, out = tmp_path / "data", tmp_path / "zoo"
    shutil.copytree(toy_dataset, dataset)
    train_zoo(dataset, out, ONE_EPOCH)
    before = _files(out)
    train_case = Split.load(out / "split.json").train[0]
    _edit_in_place(dataset / "labelsTr" / f"{train_case}.nii.gz", lambda a: np.where(a == 2, 1, a).astype(a.dtype))
    with pytest.raises(InputError, match="run on other training data"):
        train_zoo(dataset, out, ONE_EPOCH)
    assert _files(out) == before  # refused before anything was written


def test_an_older_zoo_without_the_checksum_is_continued_but_not_on_changed_images(toy_dataset, tmp_path):
    import shutil

    dataset, out = tmp_path / "data", tmp_path / "zoo"
    shutil.copytree(toy_dataset, dataset)
    train_zoo(dataset, out, ONE_EPOCH)
    record = json.loads((out / "run.json").read_text())
    del record["data"]["crc32"]  # as a zoo trained before the checksum was recorded
    (out / "run.json").write_text(json.dumps(record))
    lines: list[str] = []
    train_zoo(dataset, out, ONE_EPOCH, log=lines.append)
    assert any("done before (1 epochs)" in line for line in lines)
    before = _files(out)
    for case in Split.load(out / "split.json").train:  # finer in-plane spacing: another preprocessing plan
        for path in (dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz"):
            _edit_in_place(path, lambda a: a, spacing=(1.0, 1.0, 5.0))
    with pytest.raises(InputError, match="another preprocessing plan"):
        train_zoo(dataset, out, ONE_EPOCH)
    assert _files(out) == before


def test_a_refused_rerun_leaves_the_zoos_files_as_they_were(toy_dataset, trained_zoo, tmp_path):
    import shutil

    out = tmp_path / "zoo"
    shutil.copytree(trained_zoo, out)
    before = _files(out)
    for other in (replace(TINY, lr=0.05), replace(TINY, holdout_fraction=0.5), replace(TINY, size=64)):
        with pytest.raises(InputError, match="other settings"):
            train_zoo(toy_dataset, out, other)
        assert _files(out) == before  # zoo.json, plan.json, fingerprint.json, split.json untouched


def test_training_labels_without_foreground_are_refused_naming_the_dataset(toy_dataset, tmp_path):
    import shutil

    from segqc.io.images import read_label_map, write_image

    dataset = tmp_path / "data"
    shutil.copytree(toy_dataset, dataset)
    for path in sorted((dataset / "labelsTr").iterdir()):
        label = read_label_map(path)
        write_image(path, np.zeros_like(label.array), label.geometry)
    with pytest.raises(InputError, match="no ground-truth slice with foreground in the training cases") as error:
        train_zoo(dataset, tmp_path / "zoo", ONE_EPOCH)
    assert error.value.path == dataset.resolve()
    assert not (tmp_path / "zoo" / "models").exists() and not (tmp_path / "zoo" / "run.json").exists()


@pytest.mark.parametrize("where", ["", "model"])
def test_a_folder_holding_a_model_is_refused_and_left_untouched(where, toy_dataset, tmp_path):
    from segqc.training import save_checkpoint

    out = tmp_path / "unet_copy"
    save_checkpoint(out / where, method="unet", config={"size": 32}, weights={"unet": {"w": torch.zeros(2)}}, seed=0)
    before = _files(out)
    with pytest.raises(InputError, match=r"holds a model \((model/)?config.json, method unet\)"):
        train_zoo(toy_dataset, out, ONE_EPOCH)
    assert _files(out) == before
