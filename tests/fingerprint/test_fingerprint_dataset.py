"""Dataset fingerprints: values against numpy on generated folders and on real ACDC, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel
import numpy as np
import pytest
from dataset_folders import write_dataset

from segqc.errors import InputError
from segqc.fingerprint import DatasetFingerprint, channel_modality, compute_fingerprint
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

# Direction of a grid whose array axes point towards S, R, A (in ITK's LPS physical frame):
# axis 0 -> +z (S), axis 1 -> -x (R), axis 2 -> -y (A).
_SRA = (0.0, -1.0, 0.0,
        0.0, 0.0, -1.0,
        1.0, 0.0, 0.0)


def _case_arrays(shape, seed, box_margin=2):
    """Two channels (CT-like and MR-like), zero outside a box, and a label map with values 1, 2."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(40.0, 20.0, shape).astype(np.float32)
    mr = rng.uniform(10.0, 500.0, shape).astype(np.float32)
    inner = tuple(slice(box_margin, s - box_margin) for s in shape)
    outside = np.ones(shape, dtype=bool)
    outside[inner] = False
    ct[outside] = 0.0
    mr[outside] = 0.0
    label = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    label[c[0] - 3 : c[0] + 2, c[1] - 2 : c[1] + 4, c[2] - 1 : c[2] + 1] = 1
    label[c[0] - 3 : c[0], c[1] - 2 : c[1], c[2] - 1 : c[2] + 1] = 2
    return ct, mr, label


@pytest.fixture()
def generated(tmp_path: Path):
    """Three cases: two LPS grids and one whose axes point S, R, A; known arrays per case."""
    root = tmp_path / "Dataset001_Test"
    specs = {
        "case_a": ((20, 24, 8), (0.8, 0.9, 3.0), None),
        "case_b": ((22, 26, 10), (0.7, 0.9, 2.0), None),
        "case_c": ((8, 20, 24), (3.0, 0.8, 0.9), _SRA),  # RAS order: (20, 24, 8), (0.8, 0.9, 3)
    }
    arrays = {}
    for i, (case, (shape, spacing, direction)) in enumerate(specs.items()):
        geometry = Geometry(shape=shape, spacing=spacing, origin=(1.0, -2.0, 3.0),
                            direction=direction or tuple(np.eye(3).ravel()))
        ct, mr, label = _case_arrays(shape, seed=i)
        arrays[case] = (ct, mr, label, geometry)
    write_dataset(root, {case: ([ct, mr], label, geometry) for case, (ct, mr, label, geometry) in arrays.items()},
                  labels={"background": 0, "liver": 1, "tumour": 2}, channel=("CT", "T2"), name="Test")
    return root, arrays


def _bbox(mask):
    idx = np.argwhere(mask)
    return tuple(int(v) for v in idx.max(0) - idx.min(0) + 1)


def test_fingerprint_matches_numpy_on_generated_folder(generated):
    root, arrays = generated
    fp = compute_fingerprint(root, samples_per_case=10**6)  # more than the foreground: all voxels
    assert fp.n_cases == 3 and fp.name == "Test"
    assert [c.case for c in fp.cases] == ["case_a", "case_b", "case_c"]
    for case_fp, (ct, mr, label, geometry) in zip(fp.cases, arrays.values()):
        assert case_fp.shape == geometry.shape
        assert case_fp.spacing == pytest.approx(geometry.spacing)
        assert case_fp.cropped_shape == _bbox((ct != 0) | (mr != 0))
        assert case_fp.foreground_voxels == int((label > 0).sum())
        assert case_fp.foreground_volume_ml == pytest.approx(
            (label > 0).sum() * np.prod(geometry.spacing) / 1000)
        assert case_fp.foreground_bbox_shape == _bbox(label > 0)
        assert case_fp.label_values == (0, 1, 2)
        for stats, channel in zip(case_fp.intensity, (ct, mr)):
            fg = channel[label > 0].astype(np.float64)
            assert stats.n_samples == fg.size
            assert stats.mean == pytest.approx(fg.mean(), rel=1e-6)
            assert stats.std == pytest.approx(fg.std(), rel=1e-6)
            assert (stats.min, stats.max) == (pytest.approx(fg.min()), pytest.approx(fg.max()))
            assert stats.percentile_99_5 == pytest.approx(np.percentile(fg, 99.5), rel=1e-6)

    # orientation codes; medians in RAS axis order even though case_c stores its axes as S, R, A
    assert [c.orientation for c in fp.cases] == ["LPS", "LPS", "SRA"]
    assert fp.orientation == "LPS" and fp.orientations == {"LPS": 2, "SRA": 1}
    assert fp.median_spacing == pytest.approx((0.8, 0.9, 3.0))
    assert fp.median_shape == pytest.approx((20, 24, 8))
    assert fp.median_cropped_shape == pytest.approx((16, 20, 4))
    assert fp.median_foreground_voxels == pytest.approx(
        np.median([(a[2] > 0).sum() for a in arrays.values()]))

    # pooled foreground intensities per channel
    for index, channel_fp in enumerate(fp.channels):
        pooled = np.concatenate([a[index][a[2] > 0] for a in arrays.values()]).astype(np.float64)
        s = channel_fp.intensity
        assert s.mean == pytest.approx(pooled.mean(), rel=1e-6)
        assert s.std == pytest.approx(pooled.std(), rel=1e-6)
        assert s.percentile_00_5 == pytest.approx(np.percentile(pooled, 0.5), rel=1e-6)
        assert s.percentile_99_5 == pytest.approx(np.percentile(pooled, 99.5), rel=1e-6)
        assert (s.min, s.max) == (pytest.approx(pooled.min()), pytest.approx(pooled.max()))
    assert [(c.name, c.modality, c.normalization) for c in fp.channels] == [
        ("CT", "CT", "ct"), ("T2", "MR", "percentile")]
    assert fp.labels == {0: "background", 1: "liver", 2: "tumour"}
    assert fp.label_values_present == (0, 1, 2)


def test_intensity_sampling_is_deterministic_and_independent_of_jobs(generated):
    root, _ = generated
    first = compute_fingerprint(root, samples_per_case=50)
    again = compute_fingerprint(root, samples_per_case=50)
    parallel = compute_fingerprint(root, samples_per_case=50, jobs=2)
    other_seed = compute_fingerprint(root, samples_per_case=50, seed=1)
    assert first.to_dict() == again.to_dict() == parallel.to_dict()
    assert all(c.intensity[0].n_samples == 50 for c in first.cases)
    assert first.channels[0].intensity.n_samples == 150
    assert first.channels[0].intensity.mean != other_seed.channels[0].intensity.mean


def test_fingerprint_json_round_trip(generated, tmp_path):
    root, _ = generated
    fp = compute_fingerprint(root)
    path = fp.save(tmp_path / "out" / "fingerprint.json")
    assert DatasetFingerprint.load(path) == fp
    data = json.loads(path.read_text())
    assert data["axis_order_of_medians"] == "RAS" and data["labels"]["1"] == "liver"


def test_a_malformed_fingerprint_is_named_in_plain_words(generated):
    """Once: `malformed fingerprint: KeyError: 'sampling'`, an exception's name."""
    data = compute_fingerprint(generated[0]).to_dict()
    del data["sampling"]
    with pytest.raises(InputError) as missing:
        DatasetFingerprint.from_dict(data)
    assert str(missing.value) == "malformed fingerprint: an entry 'sampling' is missing"
    data = compute_fingerprint(generated[0]).to_dict() | {"median_spacing": 3}
    with pytest.raises(InputError) as wrong:
        DatasetFingerprint.from_dict(data)
    assert str(wrong.value) == ("malformed fingerprint: an entry holds a value of the wrong kind (e.g. text where "
                                "numbers or a list belong)")


def test_channel_modality_from_names():
    assert [channel_modality(n) for n in ("CT", "ct_venous", "PET-CT", "cineMRI", "T1c",
                                          "FLAIR", "spectral", "US", "noise")] == [
        "CT", "CT", "CT", "MR", "MR", "MR", "other", "other", "other"]


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_folder_without_labels_is_rejected(generated):
    root, _ = generated
    for item in (root / "labelsTr").iterdir():
        item.unlink()
    with pytest.raises(InputError, match="holds no label files") as info:
        compute_fingerprint(root)
    assert info.value.path == root / "labelsTr"
    (root / "labelsTr").rmdir()
    with pytest.raises(InputError, match="no labelsTr folder"):
        compute_fingerprint(root)


def test_label_value_absent_from_dataset_json_names_file_and_value(generated):
    root, arrays = generated
    ct, mr, label, geometry = arrays["case_b"]
    label = label.copy()
    label[0, 0, 0] = 7
    write_image(root / "labelsTr" / "case_b.nii.gz", label, geometry)
    with pytest.raises(InputError, match=r"label value\(s\) 7 not named in .*dataset.json") as info:
        compute_fingerprint(root, jobs=2)
    assert info.value.path == root / "labelsTr" / "case_b.nii.gz"


def test_image_and_label_on_different_grids_are_rejected(generated):
    root, arrays = generated
    ct, mr, label, geometry = arrays["case_a"]
    moved = Geometry(geometry.shape, (0.8, 0.9, 2.5), geometry.origin, geometry.direction)
    write_image(root / "imagesTr" / "case_a_0001.nii.gz", mr, moved)
    with pytest.raises(InputError, match=r"case_a_0001.nii.gz: spacing .* differs from label map") as info:
        compute_fingerprint(root)
    assert info.value.path == root / "imagesTr" / "case_a_0001.nii.gz"
    assert "--resample" not in str(info.value)


def test_a_2d_case_among_3d_cases_names_its_label_map(generated):
    root, arrays = generated
    ct, mr, label, geometry = arrays["case_b"]
    flat = Geometry.from_shape(geometry.shape[:2], geometry.spacing[:2])
    for channel, image in (("0000", ct), ("0001", mr)):
        write_image(root / "imagesTr" / f"case_b_{channel}.nii.gz", image[:, :, 4], flat)
    write_image(root / "labelsTr" / "case_b.nii.gz", label[:, :, 4], flat)
    with pytest.raises(InputError, match=r"case_b\.nii\.gz: 2D while other cases are 3D$") as info:
        compute_fingerprint(root)
    assert info.value.path == root / "labelsTr" / "case_b.nii.gz"


def test_missing_image_missing_dataset_json_and_unreadable_file(generated):
    root, _ = generated
    (root / "imagesTr" / "case_c_0000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="cannot read image") as info:
        compute_fingerprint(root)
    assert info.value.path == root / "imagesTr" / "case_c_0000.nii.gz"
    for channel in ("0000", "0001"):
        (root / "imagesTr" / f"case_c_{channel}.nii.gz").unlink()
    with pytest.raises(InputError, match="no image for case 'case_c'"):
        compute_fingerprint(root)
    (root / "dataset.json").unlink()
    with pytest.raises(InputError, match="no dataset.json"):
        compute_fingerprint(root)


def test_several_broken_cases_are_named_together_on_one_line(generated):
    """The first broken case stopped the fingerprint; a user fixed one file per run."""
    root, _ = generated
    for case in ("case_a", "case_c"):
        (root / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError) as info:
        compute_fingerprint(root)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{root}: 2 of 3 cases cannot be used")
    assert str(root / "imagesTr" / "case_a_0000.nii.gz") in message
    assert str(root / "imagesTr" / "case_c_0000.nii.gz") in message


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


def test_acdc_fingerprint_matches_nibabel_arrays(shared_data):
    shared_data("acdc/dataset.json")
    acdc = shared_data("acdc")
    fp = compute_fingerprint(acdc, max_cases=8, samples_per_case=10**7)
    assert fp.n_cases == 8 and fp.name == "ACDC"
    assert fp.labels == {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
    assert fp.label_values_present == (0, 1, 2, 3)
    assert fp.median_spacing == pytest.approx((1.5625, 1.5625, 10.0))
    assert fp.orientation == "RAS"
    assert [(c.name, c.modality, c.normalization) for c in fp.channels] == [
        ("cineMRI", "MR", "percentile")]
    pooled = []
    for case_fp in fp.cases:
        image = np.asarray(nibabel.load(acdc / case_fp.image_files[0]).dataobj, dtype=np.float64)
        label = np.asarray(nibabel.load(acdc / case_fp.label_file).dataobj)
        assert case_fp.shape == image.shape
        assert case_fp.foreground_voxels == int((label > 0).sum())
        assert case_fp.cropped_shape == _bbox(image != 0)
        fg = image[label > 0]
        pooled.append(fg)
        stats = case_fp.intensity[0]
        assert stats.mean == pytest.approx(fg.mean(), rel=1e-9)
        assert stats.percentile_00_5 == pytest.approx(np.percentile(fg, 0.5))
    pooled = np.concatenate(pooled)
    assert fp.channels[0].intensity.std == pytest.approx(pooled.std(), rel=1e-9)
    shapes = np.array([c.shape for c in fp.cases])
    assert fp.median_shape == pytest.approx(tuple(np.median(shapes, axis=0)))
