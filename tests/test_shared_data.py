"""The real data of ../shared/data: found beside the repository, and a missing folder FAILS a test."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_shared_data_is_the_folder_beside_the_repository(shared_data):
    acdc = shared_data("acdc")
    assert acdc == Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acdc"
    assert (shared_data("acdc/dataset.json")).is_file()


def test_a_missing_shared_data_folder_fails_with_the_reason(shared_data):
    with pytest.raises(pytest.fail.Exception,
                       match=r"^\.\./shared/data/acdc/no_such_folder is missing: the real-data tests need it "
                             r"\(clone with \.\./shared beside the repo"):
        shared_data("acdc/no_such_folder")
