"""Patient grouping by a regular expression (``--group-by``) and the shared choice of training
cases: images of one subject must never land on both sides of a split."""

from __future__ import annotations

import json

import pytest

from segqc.errors import InputError
from segqc.io.datasets import Dataset
from segqc.io.split import Split, make_split, patient_id, pattern_patient
from segqc.training.cases import training_cases

HC18 = r"^(HC18_[0-9]+)"


def test_pattern_groups_the_extra_images_of_a_subject():
    patient = pattern_patient(HC18)
    assert patient("HC18_012_2") == "HC18_012"
    assert patient("HC18_012") == "HC18_012"
    assert patient("other_case") == "other_case"  # no match: its own patient
    assert pattern_patient(r"sub-(?P<site>[a-z]+)-(?P<patient>\d+)")("sub-abc-07_x") == "07"
    # the default rule knows time points, not HC18's numbering: the reason for --group-by
    assert patient_id("HC18_012_2") != patient_id("HC18_012")


@pytest.mark.parametrize("pattern", ["^(HC18_[0-9]+", r"^HC18_\d+"])
def test_bad_patterns_are_refused(pattern):
    with pytest.raises(ValueError, match="group-by"):
        pattern_patient(pattern)


def test_a_grouped_split_keeps_each_subject_on_one_side():
    cases = [f"HC18_{i:03d}" for i in range(20)] + [f"HC18_{i:03d}_{k}" for i in range(0, 20, 3) for k in (2, 3)]
    split = make_split(cases, holdout_fraction=0.3, seed=1, patient=pattern_patient(HC18), rule="hc18")
    held = {c.split("_")[1] for c in split.holdout}
    trained = {c.split("_")[1] for c in split.train}
    assert not held & trained and len(held) == 6 and len(trained) == 14
    assert len(split.train) + len(split.holdout) == len(cases)


def _tiny_dataset(root, cases):
    import numpy as np
    from dataset_folders import write_dataset

    from segqc.io.geometry import Geometry

    geometry = Geometry(shape=(4, 4), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    blank = (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), geometry)
    return write_dataset(root, dict.fromkeys(cases, blank), labels={"background": 0, "x": 1}, channel="US")


def test_training_cases_writes_a_grouped_split_and_reads_it_back(tmp_path):
    cases = ["HC18_001", "HC18_001_2", "HC18_002", "HC18_003", "HC18_003_2", "HC18_004"]
    data = _tiny_dataset(tmp_path / "data", cases)
    chosen = training_cases(data, tmp_path / "run", holdout_fraction=0.5, seed=0, group_by=HC18)
    saved = Split.load(tmp_path / "run" / "split.json")
    assert sorted(chosen) == sorted(saved.train) and "HC18" in saved.rule
    assert {c[:8] for c in saved.train}.isdisjoint({c[:8] for c in saved.holdout})
    assert training_cases(data, tmp_path / "again", split=tmp_path / "run" / "split.json") == list(saved.train)
    assert training_cases(data, tmp_path / "all") == Dataset.open(data).cases
    with pytest.raises(InputError, match="group-by"):
        training_cases(data, tmp_path / "bad", holdout_fraction=0.5, group_by="HC18")


def test_split_cases_missing_from_the_dataset_are_left_out_with_one_line(tmp_path):
    cases = ["HC18_001", "HC18_002", "HC18_003", "HC18_004"]
    split = make_split(cases, holdout_fraction=0.5, seed=0, patient=pattern_patient(HC18), rule="hc18")
    split.save(tmp_path / "split.json")
    present = [c for c in cases if c != split.train[0]]  # a copy of the dataset without one training case
    data = _tiny_dataset(tmp_path / "data", present)
    lines: list[str] = []
    chosen = training_cases(data, tmp_path / "run", split=tmp_path / "split.json", log=lines.append)
    assert chosen == list(split.train[1:])
    assert len(lines) == 1 and "1 of its 2 training case(s)" in lines[0] and split.train[0] in lines[0], lines
    lines.clear()
    full = _tiny_dataset(tmp_path / "full", cases)
    assert training_cases(full, tmp_path / "run2", split=tmp_path / "split.json", log=lines.append) == list(split.train)
    assert not lines


def test_the_real_hc18_subjects_are_grouped(shared_data):
    cases = Dataset.open(shared_data("hc18")).cases
    patient = pattern_patient(HC18)
    extra = [c for c in cases if c.count("_") == 2]
    assert extra, "HC18 holds several images of some subjects"
    assert all(patient(c) in cases for c in extra)  # each extra image joins a subject that exists
    split = make_split(cases, holdout_fraction=0.2, seed=0, patient=patient)
    assert {patient(c) for c in split.train}.isdisjoint({patient(c) for c in split.holdout})


@pytest.mark.parametrize(("case", "patient"), [
    ("ACDC_patient001_frame12", "ACDC_patient001"), ("p7-visit-3", "p7"), ("sub1_ses02", "sub1"),
    ("case_visit", "case_visit"), ("x_frame", "x_frame"), ("knee_timepoint", "knee_timepoint")])
def test_only_a_numbered_time_point_suffix_is_stripped(case, patient):
    """A suffix word without its number is part of the case id, not a time point."""
    assert patient_id(case) == patient


def test_split_options_that_would_be_ignored_or_mean_nothing_are_refused(tmp_path):
    """A --group-by that matches no case id made every case a patient of its own (the frames of
    one patient on both sides of the split); a negative or NaN hold-out fraction, or --group-by
    without one, were taken for "train on all"."""
    cases = ["HC18_001", "HC18_001_2", "HC18_002", "HC18_003"]
    data = _tiny_dataset(tmp_path / "data", cases)
    with pytest.raises(InputError, match=r"--group-by '\^\(hc18_\[0-9\]\+\)' matches no case id \(e\.g\. 'HC18_001'\)"):
        training_cases(data, tmp_path / "run", holdout_fraction=0.5, group_by="^(hc18_[0-9]+)")
    for fraction in (-0.5, float("nan"), 1.0):
        with pytest.raises(InputError, match=r"--holdout-fraction must lie in \[0, 1\)"):
            training_cases(data, tmp_path / "run", holdout_fraction=fraction)
    with pytest.raises(InputError, match="--group-by groups the cases of a new split"):
        training_cases(data, tmp_path / "run", group_by=HC18)
    split = make_split(cases, holdout_fraction=0.5, seed=0, patient=pattern_patient(HC18), rule="hc18")
    with pytest.raises(InputError, match="either --split or --holdout-fraction"):
        training_cases(data, tmp_path / "run", split=split.save(tmp_path / "split.json"), holdout_fraction=0.5)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("inside", ["", "labelsTr", "imagesTr/run"])
def test_a_training_folder_in_the_dataset_is_refused(tmp_path, inside):
    data = _tiny_dataset(tmp_path / "data", ["HC18_001", "HC18_002"])
    out = data / inside
    with pytest.raises(InputError, match="is the dataset folder"):
        training_cases(data, out)
    assert sorted(p.name for p in data.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    assert training_cases(data, data.parent / "run") == ["HC18_001", "HC18_002"]


def test_a_split_written_by_hand_is_read_and_a_broken_one_is_named_in_plain_words(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["ACDC_patient001_frame01", "ACDC_patient001_frame12"],
                                "holdout": ["ACDC_patient002_frame01"]}))
    split = Split.load(path)
    assert split.train == ("ACDC_patient001_frame01", "ACDC_patient001_frame12")
    assert split.holdout_patients == ("ACDC_patient002",) and split.holdout_fraction == pytest.approx(1 / 3)
    path.write_text(json.dumps({"train": ["ACDC_patient001_frame01"], "holdout": ["ACDC_patient001_frame12"]}))
    with pytest.raises(InputError, match="patient.s. on both sides of the split: ACDC_patient001") as info:
        Split.load(path)
    assert info.value.path == path
    for content, words in (([], 'a JSON object with a "train" list'), ({"train": "A"}, '"train" must be a list'),
                           ({"train": ["a"], "holdout": [1]}, '"holdout" must be a list of case ids'),
                           ({"format": "segqc-split", "train": ["a"], "holdout": [], "seed": 0,
                             "holdout_fraction": 0.0}, "the field 'patients' of a split segqc wrote is missing"),
                           ({"format": "segqc-split", "train": ["a"], "holdout": [], "seed": 0,
                             "holdout_fraction": 0.0, "patients": {}}, "case 'a' has no patient")):
        path.write_text(json.dumps(content))
        with pytest.raises(InputError, match=words) as info:
            Split.load(path)
        assert "Error" not in str(info.value)
    path.write_text("{train")
    with pytest.raises(InputError, match=r"not a JSON file \(line 1\)"):
        Split.load(path)
