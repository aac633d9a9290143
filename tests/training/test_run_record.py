"""The run record (``run.json``) that guards a training folder: a rerun on other data is refused,
a record written before a data field existed is still continued."""

from __future__ import annotations

import json

import pytest

from segqc.errors import InputError
from segqc.training.stages import check_run_record, check_training_folder


def test_a_run_record_from_before_the_data_checksum_is_still_continued_and_a_changed_checksum_refused(tmp_path):
    settings, data = {"lr": 0.001}, {"slices": 4, "crc32": 123}
    record = {"format": "segqc-demo-run", "config": settings, "data": {"slices": 4}}  # written before the crc32
    (tmp_path / "run.json").write_text(json.dumps(record))
    check_run_record(tmp_path, method="demo", settings=settings, data=data)  # accepted
    with pytest.raises(InputError, match="other training data"):
        check_run_record(tmp_path, method="demo", settings=settings, data={"slices": 5, "crc32": 123})
    record["data"] = data
    (tmp_path / "run.json").write_text(json.dumps(record))
    check_run_record(tmp_path, method="demo", settings=settings, data=data)
    with pytest.raises(InputError, match="other training data"):
        check_run_record(tmp_path, method="demo", settings=settings, data={"slices": 4, "crc32": 124})


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpoint(path, method: str) -> None:
    import torch

    from segqc.training import save_checkpoint

    save_checkpoint(path, method=method, config={"size": 32}, weights={"net": {"w": torch.zeros(2)}}, seed=0)


@pytest.mark.parametrize("where", ["", "model"])
def test_a_model_folder_without_its_run_is_refused_and_nothing_is_written(tmp_path, where):
    _checkpoint(tmp_path / where, "ldseg")
    before = _files(tmp_path)
    expected = rf"holds a model \({where + '/' if where else ''}config.json, method ldseg\) but no training run"
    with pytest.raises(InputError, match=expected):
        check_run_record(tmp_path, method="cae", settings={"lr": 0.001}, data={"slices": 4})
    with pytest.raises(InputError, match=expected):  # even a model of the same method: not this run's own
        check_run_record(tmp_path, method="ldseg", settings={"lr": 0.001}, data={"slices": 4})
    with pytest.raises(InputError, match=expected):  # the early check of trainers, before they prepare data
        check_training_folder(tmp_path)
    assert _files(tmp_path) == before


def test_a_runs_own_model_is_resumed_and_a_model_of_another_method_beside_it_refused(tmp_path):
    settings, data = {"lr": 0.001}, {"slices": 4}
    check_run_record(tmp_path, method="cae", settings=settings, data=data)
    _checkpoint(tmp_path, "cae")  # the CAE saves its model into the run folder itself
    check_run_record(tmp_path, method="cae", settings=settings, data=data)
    check_training_folder(tmp_path, method="cae", settings=settings)
    _checkpoint(tmp_path / "model", "ldseg")
    with pytest.raises(InputError, match=r"method ldseg\) beside a training run of another kind"):
        check_run_record(tmp_path, method="cae", settings=settings, data=data)


def test_the_early_check_refuses_another_kind_or_other_settings_and_passes_a_users_config_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.001}))  # a config file, not a checkpoint
    check_training_folder(tmp_path, method="unet", settings={"lr": 0.001})
    check_run_record(tmp_path, method="unet", settings={"lr": 0.001}, data={"slices": 4})
    with pytest.raises(InputError, match="another kind"):
        check_training_folder(tmp_path, method="ldseg", settings={"lr": 0.001})
    with pytest.raises(InputError, match=r"other settings \(lr 0.001 -> 0.01\); only steps_train may change"):
        check_training_folder(tmp_path, method="unet", settings={"lr": 0.01}, may_change="steps_train")
    check_training_folder(tmp_path / "missing", method="unet", settings={"lr": 0.01})


@pytest.mark.parametrize("content", [b"\xff\xfe{not text", b"{\"format\": ", b"[1, 2]"])
def test_a_corrupt_run_record_is_one_line_naming_it(tmp_path, content):
    """A run.json that is not UTF-8 text, malformed, or not an object: one InputError naming the
    file and what to do, never a UnicodeDecodeError or JSONDecodeError traceback."""
    (tmp_path / "run.json").write_bytes(content)
    with pytest.raises(InputError) as exc:
        check_run_record(tmp_path, method="demo", settings={}, data={})
    assert str(exc.value).startswith(f"{tmp_path / 'run.json'}: ") and str(exc.value).endswith("use an empty folder")
