"""Atomic writes: errors name the file asked for, never the temporary file beside it."""

from __future__ import annotations

import errno

import pytest

from segqc.errors import InputError
from segqc.io.atomic import atomic_path, write_text_atomic


def test_an_output_that_is_a_folder_is_named(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(InputError) as caught:
        write_text_atomic(folder, "x")
    assert str(caught.value) == f"{folder}: is a folder; give a file name"
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_a_parent_that_is_a_file_is_named_with_the_output(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    out_file = blocker / "deeper" / "x.csv"
    with pytest.raises(InputError) as caught:
        write_text_atomic(out_file, "x")
    assert caught.value.path == out_file and f"its parent {blocker} is a file" in str(caught.value)
    assert blocker.read_text() == "keep"


def test_an_os_error_on_the_temporary_file_names_the_output(tmp_path):
    out_file = tmp_path / "x.csv"
    with pytest.raises(PermissionError) as caught:
        with atomic_path(out_file) as tmp:
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert caught.value.filename == str(out_file) and caught.value.errno == errno.EACCES
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_pass_unchanged(tmp_path):
    elsewhere = tmp_path / "input.nii.gz"
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_path(tmp_path / "x.csv"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(elsewhere))
    assert caught.value.filename == str(elsewhere)


def test_a_normal_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    out_file = tmp_path / "a" / "b.txt"
    write_text_atomic(out_file, "one")
    write_text_atomic(out_file, "two")
    assert out_file.read_text() == "two" and list(out_file.parent.iterdir()) == [out_file]
