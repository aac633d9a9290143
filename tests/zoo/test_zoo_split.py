"""Patient-level splits: no patient on both sides, deterministic, documented grouping rule."""

from __future__ import annotations

import json

import pytest

from segqc.errors import InputError
from segqc.io.split import Split, make_split, patient_id
from segqc.zoo import ZooConfig


@pytest.mark.parametrize("case, patient", [
    ("ACDC_patient001_frame01", "ACDC_patient001"),
    ("ACDC_patient100_frame13", "ACDC_patient100"),
    ("BraTS_0001_tp2", "BraTS_0001"),
    ("sub-03_ses-2", "sub-03"),
    ("liver_17_Visit03", "liver_17"),
    ("la_007", "la_007"),
    ("frame01", "frame01"),
])
def test_patient_id_strips_one_time_point_suffix(case, patient):
    assert patient_id(case) == patient


def _acdc_like(n_patients: int = 90) -> list[str]:
    return [f"ACDC_patient{p:03d}_frame{f:02d}" for p in range(1, n_patients + 1) for f in (1, 12)]


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
def test_split_never_puts_a_patient_on_both_sides(seed, fraction):
    cases = _acdc_like() + ["loose_case_a", "loose_case_b"]
    split = make_split(cases, holdout_fraction=fraction, seed=seed)
    train = {patient_id(c) for c in split.train}
    held = {patient_id(c) for c in split.holdout}
    assert not train & held
    assert sorted(split.train + split.holdout) == sorted(cases)
    assert len(held) == round(fraction * 92)
    # both frames of a patient travel together
    for case in split.holdout:
        if case.startswith("ACDC"):
            assert patient_id(case) + "_frame01" in split.holdout and patient_id(case) + "_frame12" in split.holdout


def test_split_is_deterministic_and_depends_on_the_seed():
    cases = _acdc_like()
    assert (make_split(cases, holdout_fraction=0.25, seed=3)
            == make_split(reversed(cases), holdout_fraction=0.25, seed=3))
    assert make_split(cases, holdout_fraction=0.25, seed=3).holdout != make_split(cases, holdout_fraction=0.25,
                                                                                     seed=4).holdout


def test_split_keeps_at_least_one_patient_on_each_side():
    split = make_split(["a_frame01", "a_frame02", "b_frame01"], holdout_fraction=0.01, seed=0)
    assert split.train_patients and split.holdout_patients
    split = make_split(["a_frame01", "b_frame01"], holdout_fraction=0.99, seed=0)
    assert len(split.train_patients) == 1 and len(split.holdout_patients) == 1
    with pytest.raises(InputError, match="at least two patients"):
        make_split(["p1_frame01", "p1_frame02"], holdout_fraction=0.5, seed=0)


def test_split_json_round_trips_and_refuses_an_overlapping_hand_edit(tmp_path):
    split = make_split(_acdc_like(10), holdout_fraction=0.3, seed=0)
    path = split.save(tmp_path / "split.json")
    assert Split.load(path) == split
    data = json.loads(path.read_text())
    assert data["n_patients"] == {"train": 7, "holdout": 3} and "frame" in data["rule"]
    data["train"].append(data["holdout"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="both sides"):
        Split.load(path)


def test_zoo_config_presets_round_trip_and_validate(tmp_path):
    small = ZooConfig.preset("small")
    assert small.size == 128 and small.saved_epochs == (1, 2, 4, 8, 16, 24) and small.holdout_fraction == 0.25
    assert ZooConfig.preset("large") == ZooConfig.preset("paper") != small
    assert ZooConfig.load(small.save(tmp_path / "c.json")) == small
    assert ZooConfig.preset("small", epochs=5, seed=None).saved_epochs == (1, 2, 4, 5)
    assert small.resume_key() == ZooConfig.preset("small", epochs=40, snapshot_epochs=(1, 40)).resume_key()
    assert small.resume_key() != ZooConfig.preset("small", lr=0.1).resume_key()
    with pytest.raises(ValueError, match="multiple of 8"):
        ZooConfig(size=100)
    with pytest.raises(ValueError, match="unknown zoo config"):
        ZooConfig.preset("huge")
    (tmp_path / "bad.json").write_text(json.dumps({"size": 128, "colour": "red"}))
    with pytest.raises(InputError, match="colour"):
        ZooConfig.load(tmp_path / "bad.json")
