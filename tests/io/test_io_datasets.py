"""segqc.io.datasets: nnU-Net folder conventions, dataset.json, case pairing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from segqc.errors import InputError
from segqc.io import (
    DatasetInfo,
    Pairing,
    case_id,
    find_dataset_json,
    list_image_files,
    list_label_files,
    pair_cases,
    read_dataset_json,
)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


# ------------------------------------------------------------------------------------------
# case ids
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ACDC_patient002_frame01.nii.gz", "ACDC_patient002_frame01"),
        ("a.b.nii.gz", "a.b"),
        ("case.NII.GZ", "case"),
        ("case.nii", "case"),
        ("case.nrrd", "case"),
        ("case.mha", "case"),
        ("slice_12.png", "slice_12"),
        ("case.tiff", "case"),
        ("case.raw.gz", "case"),
        ("case_0000.nii.gz", "case_0000"),
    ],
)
def test_case_id_strips_multi_part_endings(name, expected):
    assert case_id(Path("some/folder") / name) == expected


def test_case_id_strips_channel_suffix_only_when_asked():
    assert case_id("BraTS_001_0000.nii.gz", channel=True) == "BraTS_001"
    assert case_id("BraTS_001_0003.nii.gz", channel=True) == "BraTS_001"
    assert case_id("BraTS_001.nii.gz", channel=True) == "BraTS_001"
    assert case_id("BraTS_01.nii.gz", channel=True) == "BraTS_01"  # two digits: not a channel


# ------------------------------------------------------------------------------------------
# listing
# ------------------------------------------------------------------------------------------


def test_label_listing_ignores_nnunet_extras_hidden_and_temp_files(tmp_path):
    _touch(
        tmp_path,
        "b.nii.gz", "a.nii.gz", "c.nrrd",
        "dataset.json", "plans.json", "predict_from_raw_data_args.json",
        "a.npz", "a.pkl", ".hidden.nii.gz", ".tmp-1a2b3c4d-d.nii.gz", "notes.txt",
    )
    (tmp_path / "sub.nii.gz").mkdir()
    files = list_label_files(tmp_path)
    assert list(files) == ["a", "b", "c"]
    assert files["a"] == tmp_path / "a.nii.gz"
    assert files["c"] == tmp_path / "c.nrrd"


def test_label_listing_with_file_ending(tmp_path):
    _touch(tmp_path, "a.nii.gz", "b.nii.gz", "c.nrrd")
    assert list(list_label_files(tmp_path, file_ending=".nii.gz")) == ["a", "b"]
    assert list(list_label_files(tmp_path, file_ending="nrrd")) == ["c"]


def test_two_files_for_one_case_is_an_error(tmp_path):
    _touch(tmp_path, "x.nii", "x.nii.gz")
    with pytest.raises(InputError, match=r"two files for case 'x': x\.nii and x\.nii\.gz"):
        list_label_files(tmp_path)
    assert list(list_label_files(tmp_path, file_ending=".nii.gz")) == ["x"]


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(InputError) as exc:
        list_label_files(tmp_path / "nowhere")
    assert str(exc.value) == f"{tmp_path / 'nowhere'}: folder not found"


def test_image_listing_groups_channels_in_order(tmp_path):
    _touch(
        tmp_path,
        "b_0001.nii.gz", "b_0000.nii.gz", "a_0000.nii.gz", "a_0001.nii.gz", "dataset.json",
    )
    files = list_image_files(tmp_path)
    assert list(files) == ["a", "b"]
    assert [p.name for p in files["b"]] == ["b_0000.nii.gz", "b_0001.nii.gz"]


def test_image_listing_without_channel_suffixes_gives_one_channel_per_case(tmp_path):
    _touch(tmp_path, "p1.nii.gz", "p2.nii.gz")
    assert list_image_files(tmp_path) == {
        "p1": [tmp_path / "p1.nii.gz"], "p2": [tmp_path / "p2.nii.gz"]
    }


def test_image_listing_rejects_missing_channel(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0002.nii.gz")
    with pytest.raises(InputError, match="case 'a' has channels"):
        list_image_files(tmp_path)


def test_image_listing_rejects_unequal_channel_counts(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz")
    with pytest.raises(InputError, match=r"case 'b' has 1 channel\(s\) but 1 other case\(s\) have 2"):
        list_image_files(tmp_path)


def test_image_listing_rejects_mixed_naming(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "b.nii.gz")
    with pytest.raises(InputError, match=r"b\.nii\.gz has no channel suffix"):
        list_image_files(tmp_path)


# ------------------------------------------------------------------------------------------
# pairing
# ------------------------------------------------------------------------------------------


def test_pairing_reports_matched_missing_and_extra(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _touch(gt, "c1.nii.gz", "c2.nii.gz", "c3.nii.gz", "dataset.json")
    _touch(pred, "c3.nii.gz", "c1.nii.gz", "c9.nii.gz", "plans.json", "c1.npz", "c1.pkl")
    pairing = pair_cases(pred, gt)
    assert isinstance(pairing, Pairing)
    assert pairing.matched == [
        ("c1", "c1", pred / "c1.nii.gz", gt / "c1.nii.gz"),
        ("c3", "c3", pred / "c3.nii.gz", gt / "c3.nii.gz"),
    ]
    assert pairing.missing == [("c2", gt / "c2.nii.gz")]
    assert pairing.extra == [("c9", pred / "c9.nii.gz")]


def test_pairing_across_formats_by_case_id(tmp_path):
    _touch(tmp_path / "gt", "c1.nii.gz")
    _touch(tmp_path / "pred", "c1.nrrd")
    pairing = pair_cases(tmp_path / "pred", tmp_path / "gt")
    assert [case for case, _, _, _ in pairing.matched] == ["c1"]


def test_pairing_with_empty_ground_truth_is_an_error(tmp_path):
    _touch(tmp_path / "gt", "dataset.json")
    _touch(tmp_path / "pred", "c1.nii.gz")
    with pytest.raises(InputError, match="no label files"):
        pair_cases(tmp_path / "pred", tmp_path / "gt")


def test_pairing_names_missing_prediction_folder(tmp_path):
    _touch(tmp_path / "gt", "c1.nii.gz")
    with pytest.raises(InputError, match="pred: folder not found"):
        pair_cases(tmp_path / "pred", tmp_path / "gt")


# ------------------------------------------------------------------------------------------
# dataset.json
# ------------------------------------------------------------------------------------------


def _write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_nnunet_v2_labels_and_regions(tmp_path):
    path = _write_json(
        tmp_path / "dataset.json",
        {
            "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
            "labels": {
                "background": 0,
                "whole tumor": [1, 2, 3],
                "tumor core": [2, 3],
                "enhancing tumor": [3],
            },
            "regions_class_order": [1, 2, 3],
            "file_ending": ".nii.gz",
        },
    )
    info = read_dataset_json(path)
    assert info.regions == {
        "whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)
    }
    assert info.labels == {0: "background", 3: "enhancing tumor"}
    assert info.channel_names == {0: "T1", 1: "T1ce", 2: "T2", 3: "FLAIR"}
    assert info.file_ending == ".nii.gz"
    assert info.label_name(2) == "2"
    assert info.label_name("tumor core") == "tumor core"


def test_nnunet_v1_labels(tmp_path):
    path = _write_json(
        tmp_path / "dataset.json",
        {"labels": {"0": "background", "1": "liver", "2": "tumour"}, "modality": {"0": "CT"}},
    )
    info = read_dataset_json(path)
    assert info.labels == {0: "background", 1: "liver", 2: "tumour"}
    assert info.regions == {}
    assert info.channel_names == {0: "CT"}
    assert info.file_ending is None
    assert info.label_name(1) == "liver"


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{"labels": {"background": 0,}}')
    with pytest.raises(InputError) as exc:
        read_dataset_json(path)
    assert str(exc.value).startswith(f"{path}: malformed JSON")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1, 2], "top level"),
        ({"labels": [0, 1]}, "'labels' must be an object"),
        ({"labels": {"RV": 1.5}}, "label 'RV' has value 1.5"),
        ({"labels": {"RV": -1}}, "label 'RV' has value -1"),
        ({"labels": {"RV": True}}, "label 'RV' has value true"),
        ({"labels": {"RV": 1, "LV": 1}}, "label value 1 is named twice"),
        ({"labels": {}, "channel_names": {"zero": "CT"}}, "channel entry"),
        ({"labels": {}, "file_ending": 5}, "'file_ending' must be a string"),
    ],
)
def test_wrong_types_are_reported_with_the_file(tmp_path, data, fragment):
    path = _write_json(tmp_path / "dataset.json", data)
    with pytest.raises(InputError) as exc:
        read_dataset_json(path)
    assert str(exc.value).startswith(str(path))
    assert fragment in str(exc.value)


def test_find_dataset_json_looks_in_folder_then_parent(tmp_path):
    _write_json(tmp_path / "Dataset001" / "dataset.json", {"labels": {"background": 0, "A": 1}})
    (tmp_path / "Dataset001" / "labelsTr").mkdir()
    (tmp_path / "preds").mkdir()
    assert find_dataset_json(tmp_path / "preds") is None
    info = find_dataset_json(None, tmp_path / "preds", tmp_path / "Dataset001" / "labelsTr")
    assert isinstance(info, DatasetInfo)
    assert info.labels == {0: "background", 1: "A"}
    assert info.path == tmp_path / "Dataset001" / "dataset.json"


def test_real_acdc_dataset_json_and_labels(shared_data):
    acdc = shared_data("acdc")
    shared_data("acdc/labelsTr")
    info = find_dataset_json(acdc / "labelsTr")
    assert info is not None
    assert info.labels == {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
    assert info.file_ending == ".nii.gz"
    files = list_label_files(acdc / "labelsTr", file_ending=info.file_ending)
    assert "ACDC_patient002_frame01" in files
    assert all(p.name == f"{case}.nii.gz" for case, p in files.items())


def test_top_level_regions_of_dataset_json_are_read(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
                                "regions": {"whole tumour": [1, 2, 3], "tumour core": [1, 3]}}))
    info = read_dataset_json(path)
    assert info.regions == {"whole tumour": (1, 2, 3), "tumour core": (1, 3)}
    path.write_text(json.dumps({"labels": {"background": 0, "a": 1}, "regions": {"bad": []}}))
    with pytest.raises(InputError, match="region 'bad'"):
        read_dataset_json(path)


def test_real_brats_dataset_json_gives_the_three_tumour_regions(shared_data):
    info = read_dataset_json(shared_data("brats") / "dataset.json")
    assert info.regions["whole tumour"] == (1, 2, 3) and info.regions["enhancing tumour"] == (3,)


def _label_file(path) -> None:
    import numpy as np

    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image

    write_image(path, np.ones((3, 3, 2), np.uint8), Geometry.from_shape((3, 3, 2), (1.0, 1.0, 1.0)))


def test_a_broken_link_named_like_a_case_is_named_not_taken_for_a_missing_case(tmp_path):
    """A dangling CASE.nii.gz link in a prediction folder was an 'empty prediction' (Dice 0, exit 0)."""
    _label_file(tmp_path / "a.nii.gz")
    (tmp_path / "b.nii.gz").symlink_to(tmp_path / "gone" / "b.nii.gz")
    with pytest.raises(InputError) as exc:
        list_label_files(tmp_path)
    assert str(exc.value) == f"{tmp_path / 'b.nii.gz'}: is a broken link (to {tmp_path / 'gone' / 'b.nii.gz'})"


def test_a_pipe_named_like_a_case_is_refused_instead_of_read(tmp_path):
    """Reading a FIFO blocks for ever; it was skipped as 'no file' before."""
    os.mkfifo(tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match="is not a regular file"):
        list_label_files(tmp_path)


def test_a_file_name_that_is_not_utf8_is_one_line_not_an_itk_abort(tmp_path):
    """SimpleITK aborted the whole process (std::logic_error, exit 134) on such a name: no output
    for the good cases either. The run now stops before any case with the name escaped."""
    import subprocess
    import sys

    for folder in ("gt", "pred"):
        _label_file(tmp_path / folder / "good.nii.gz")
        _label_file(tmp_path / folder / "x.nii.gz")
        os.rename(os.fsencode(tmp_path / folder / "x.nii.gz"), os.fsencode(tmp_path / folder) + b"/caf\xe9.nii.gz")
    result = subprocess.run([sys.executable, "-m", "segqc", "evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"),
                             "-o", str(tmp_path / "out"), "-q"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [f"error: {tmp_path / 'gt'}: holds a file whose name is not valid UTF-8 (caf\\xe9.nii.gz); "
                     "rename it"], lines


def test_the_dataset_file_ending_picks_a_case_file_whatever_the_case_of_its_letters(tmp_path):
    from segqc.io.datasets import segmentation_files

    (tmp_path / "c1.NII.GZ").write_bytes(b"")
    (tmp_path / "c1.nii").write_bytes(b"")
    found = segmentation_files(tmp_path, file_ending=".nii.gz")
    assert found.files["c1"][1].name == "c1.NII.GZ"
    assert [p.name for p, _ in found.ignored] == ["c1.nii"]
