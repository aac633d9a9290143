"""The cases a training run uses, and the files it writes for them: a rerun that would split the
cases otherwise is refused before its split.json replaces the run's, and an extra segmentation
folder that holds none of the training cases is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_folders import write_dataset

from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.split import Split
from segqc.training.cases import extra_segmentation_files, training_cases


def _dataset(root, patients: int = 4):
    geometry = Geometry.from_shape((8, 8), (1.0, 1.0))
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 1
    cases = {f"TOY_patient{p:03d}_frame01": (label.astype(np.float32), label, geometry) for p in range(patients)}
    return write_dataset(root, cases, labels={"background": 0, "a": 1}, channel="MR")


def test_a_run_on_another_split_is_refused_before_its_split_json_is_replaced(tmp_path):
    dataset, out = _dataset(tmp_path / "data"), tmp_path / "run"
    out.mkdir()
    first = training_cases(dataset, out, holdout_fraction=0.25, seed=0)
    assert Split.load(out / "split.json").train == tuple(first)
    before = (out / "split.json").read_bytes()
    assert training_cases(dataset, out, holdout_fraction=0.25, seed=0) == first  # the same split: a resume
    (out / "run.json").write_text("{}")  # the run started on that split
    with pytest.raises(InputError, match="another split of the cases"):
        training_cases(dataset, out, holdout_fraction=0.5, seed=0)
    assert (out / "split.json").read_bytes() == before
    (out / "split.json").unlink()  # a run on all cases (or another kind's run): no split.json
    with pytest.raises(InputError, match="another split of the cases"):
        training_cases(dataset, out, holdout_fraction=0.25, seed=0)
    assert not (out / "split.json").exists()
    assert training_cases(dataset, out) == training_cases(dataset, tmp_path / "all")  # no split: nothing written


def test_an_extra_segmentation_folder_without_a_training_case_is_named(tmp_path):
    dataset = _dataset(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no segmentation of the 2 training case") as error:
        extra_segmentation_files(tmp_path / "empty", ["TOY_patient000_frame01", "TOY_patient001_frame01"])
    assert error.value.path == tmp_path / "empty"
    other = tmp_path / "other"
    write_image(other / "unrelated.nii.gz", np.zeros((8, 8), np.uint8), Geometry.from_shape((8, 8), (1.0, 1.0)))
    with pytest.raises(InputError, match="holds no segmentation"):
        extra_segmentation_files(other, ["TOY_patient000_frame01"])
    seg = dataset / "labelsTr" / "TOY_patient000_frame01.nii.gz"
    assert extra_segmentation_files(dataset / "labelsTr", ["TOY_patient000_frame01"]) == [
        ("TOY_patient000_frame01", seg)]
    with pytest.raises(InputError, match="segmentation folder not found"):
        extra_segmentation_files(tmp_path / "missing", ["TOY_patient000_frame01"])


def test_the_run_of_another_method_is_named_as_such_not_as_another_split(tmp_path):
    dataset, out = _dataset(tmp_path / "data"), tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"format": "segqc-cae-run", "config": {}, "data": {}}))
    with pytest.raises(InputError, match=r"holds a training run of another kind \(not nnqc\)") as error:
        training_cases(dataset, out, holdout_fraction=0.25, seed=0, method="nnqc")
    assert error.value.path == out and not (out / "split.json").exists()
    assert training_cases(dataset, out, method="cae") == training_cases(dataset, tmp_path / "all")  # its own kind


def test_extra_files_come_in_the_order_of_the_training_cases_and_prefer_the_dataset_ending(tmp_path):
    geometry = Geometry.from_shape((8, 8), (1.0, 1.0))
    folder = tmp_path / "segs"
    for name in ("b.nii.gz", "a.nii.gz", "a.nii"):
        write_image(folder / name, np.zeros((8, 8), np.uint8), geometry)
    assert extra_segmentation_files(folder, ["b", "a"], file_ending=".nii.gz") == [
        ("b", folder / "b.nii.gz"), ("a", folder / "a.nii.gz")]
    with pytest.raises(InputError, match="two files for case 'a'"):
        extra_segmentation_files(folder, ["a"])  # which one is meant?
