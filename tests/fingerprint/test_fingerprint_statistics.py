"""Fingerprint statistics on a tiny generated folder, against numpy and the documented sampling
rule (``samples_per_case`` voxels drawn without replacement by ``default_rng((seed, crc32(case)))``
from the foreground values in C order; min / max exact; medians over cases)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from dataset_folders import write_dataset

from segqc.errors import InputError
from segqc.fingerprint import channel_modality, compute_fingerprint
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

SHAPE = (6, 5, 4)
SPACING = (1.0, 1.0, 2.0)  # 2 mm³ = 0.002 ml a voxel
_SRA = (0.0, -1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0)


def _case(n_fg: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.uniform(10.0, 100.0, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label.flat[np.arange(n_fg) * 3 + 1] = 1
    return image, label


def _dataset(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]]) -> Path:
    """Cases (image, label, direction or None for the identity) on grids of SHAPE and SPACING."""
    return write_dataset(root, {name: (image, label, Geometry(shape=SHAPE, spacing=SPACING, origin=(0.0, 0.0, 0.0),
                                                             direction=direction or tuple(np.eye(3).ravel())))
                                for name, (image, label, direction) in cases.items()},
                         labels={"background": 0, "fg": 1}, channel="T1")


def test_pd_channel_is_mr():
    """Module docstring: MR names include PD (proton density)."""
    assert channel_modality("PD") == "MR"
    assert channel_modality("pd_fs") == "MR"


def test_case_statistics_follow_the_documented_sampling_and_medians(tmp_path):
    """Cases with 0, 4, 4 and 30 foreground voxels, 3 samples a case; one negative background
    voxel in case d. Reference: numpy on the arrays, the documented generator per case."""
    arrays = {"a": _case(0, 0), "b": _case(4, 1), "c": _case(4, 1), "d": _case(30, 2)}
    arrays["d"][0][arrays["d"][1] == 0] = 0.0
    arrays["d"][0][5, 4, 3] = -5.0  # background, nonzero: the crop keeps it
    arrays["d"][0].flat[1 + 3 * 8] = 1.0  # a foreground minimum, not among the 3 samples of 30
    directions = {"a": _SRA, "b": None, "c": _SRA, "d": None}  # orientations tie 2 : 2
    root = _dataset(tmp_path / "Dataset001_T", {k: (*v, directions[k]) for k, v in arrays.items()})
    fp = compute_fingerprint(root, samples_per_case=3, seed=5)
    by_case = {c.case: c for c in fp.cases}
    for name in ("b", "c", "d"):
        image, label = arrays[name]
        values = image[label > 0]
        rng = np.random.default_rng([5, zlib.crc32(name.encode("utf-8"))])
        chosen = np.sort(rng.choice(values.size, size=3, replace=False))
        stats = by_case[name].intensity[0]
        assert stats.mean == pytest.approx(float(values[chosen].astype(np.float64).mean()), rel=1e-6)
        assert stats.min == pytest.approx(float(values.min()))
    assert by_case["d"].intensity[0].min == pytest.approx(1.0)
    assert fp.channels[0].intensity.min == pytest.approx(1.0)  # the empty case a adds nothing
    nonzero = np.argwhere(arrays["d"][0] != 0)
    assert by_case["d"].cropped_shape == tuple(int(n) for n in nonzero.max(0) - nonzero.min(0) + 1)
    assert fp.median_foreground_voxels == 4.0  # median of 0, 4, 4, 30
    assert fp.median_foreground_volume_ml == pytest.approx(4 * 2.0 / 1000)
    codes = sorted({c.orientation for c in fp.cases})
    assert len(codes) == 2 and fp.orientation == codes[0]


def test_an_image_origin_off_by_half_a_millimetre_is_another_grid(tmp_path):
    """ORIGIN_ATOL_MM is 0.01 mm: 0.5 mm apart is refused, naming the image."""
    image, label = _case(4, 1)
    root = _dataset(tmp_path / "Dataset002_T", {"b": (image, label, None), "c": (image, label, None)})
    write_image(root / "imagesTr" / "c_0000.nii.gz", image,
                Geometry(shape=SHAPE, spacing=SPACING, origin=(0.5, 0.0, 0.0), direction=tuple(np.eye(3).ravel())))
    with pytest.raises(InputError, match="c_0000"):
        compute_fingerprint(root, samples_per_case=3)


def test_a_2d_case_volume_is_its_area_over_1000(tmp_path):
    """By hand: 20 foreground pixels of 0.5 x 0.8 mm = 8 mm², stored as "ml" the way 2D fingerprints
    are documented (mm² / 1000, one slice 1 mm thick): 0.008."""
    geometry = Geometry(shape=(10, 12), spacing=(0.5, 0.8), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    label = np.zeros((10, 12), dtype=np.uint8)
    label[2:6, 3:8] = 1
    image = np.random.default_rng(0).normal(size=(10, 12)).astype(np.float32)
    write_dataset(tmp_path, {"a": (image, label, geometry)}, labels={"background": 0, "fg": 1}, channel="T1")
    assert compute_fingerprint(tmp_path).cases[0].foreground_volume_ml == pytest.approx(20 * 0.5 * 0.8 / 1000)
