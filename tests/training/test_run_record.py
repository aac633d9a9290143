"""The run record (``run.json``) that guards a training folder: a rerun on other data is refused,
a record written before a data field existed is still continued."""

from __future__ import annotations

import json

import pytest

from segqc.errors import InputError
from segqc.training.stages import check_run_record


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
