"""``segqc degrade``'s bookkeeping around the degradation itself, against values worked out by
hand: which classes the class-mean NSD averages, the grid of a 2D slice, the image-grid check,
the per-bin summary and the order of the per-label columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segqc.degrade.folder import (
    _check_image_geometry,
    _column_order,
    _slice_geometry,
    bin_summary,
    degrade_folder,
    mask_quality,
)
from segqc.degrade.targeting import DiceBin
from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

_EYE3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_a_class_only_in_the_degraded_map_counts_in_the_class_mean_nsd() -> None:
    """Class 1 is reproduced exactly (NSD 1); class 2 is only in the degraded map, a false
    structure (NSD 0, the worst): the class mean over the classes present in either map is 1/2."""
    gt = np.zeros((8, 8, 3), dtype=np.uint8)
    gt[1:4, 1:4] = 1
    pred = gt.copy()
    pred[5:7, 5:7] = 2
    row = mask_quality(pred, gt, (1.0, 1.0, 1.0), [1, 2])
    assert row["nsd_1"] == 1.0 and row["nsd_2"] == 0.0
    assert row["nsd"] == pytest.approx(0.5)
    assert row["dice_1"] == 1.0 and row["dice_2"] == 0.0


def test_a_slice_keeps_the_spacing_and_origin_of_its_in_plane_axes() -> None:
    """Slice 3 across axis 0 of a (6, 4, 5) grid with spacing (5, 1, 2) mm and origin
    (10, 20, 30): a (4, 5) grid of spacing (1, 2), its origin the in-plane part of
    (10 + 3 * 5, 20, 30)."""
    geometry = Geometry(shape=(6, 4, 5), spacing=(5.0, 1.0, 2.0), origin=(10.0, 20.0, 30.0), direction=_EYE3)
    sliced = _slice_geometry(geometry, 0, 3)
    assert sliced.shape == (4, 5)
    assert tuple(sliced.spacing) == pytest.approx((1.0, 2.0))
    assert tuple(sliced.origin) == pytest.approx((20.0, 30.0))


def test_an_image_with_another_number_of_slices_is_refused(tmp_path: Path) -> None:
    """Same in-plane grid, 3 slices against 5: not the same grid."""
    label_geometry = Geometry(shape=(4, 4, 3), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=_EYE3)
    image_geometry = Geometry(shape=(4, 4, 5), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=_EYE3)
    write_image(tmp_path / "image.nii.gz", np.zeros((4, 4, 5), dtype=np.float32), image_geometry)
    with pytest.raises(InputError, match="shape"):
        _check_image_geometry(tmp_path / "label.nii.gz", label_geometry, [tmp_path / "image.nii.gz"])
    same = tmp_path / "same.nii.gz"
    write_image(same, np.zeros((4, 4, 3), dtype=np.float32), label_geometry)
    _check_image_geometry(tmp_path / "label.nii.gz", label_geometry, [same])  # no complaint


def test_bin_summary_reports_the_median_of_the_dice_it_was_binned_on() -> None:
    """Maps binned on label 2's Dice: the summary's min/median/max are of ``dice_2`` (0.1, 0.2,
    0.9 -> median 0.2, not the mean 0.4), not of the multi-class ``dice``."""
    low, high = DiceBin(0.0, 0.5), DiceBin(0.5, 1.0, closed=True)
    manifest = pd.DataFrame({"bin": [str(low)] * 3, "binned_on": "dice_2", "dice": [0.7, 0.8, 0.95],
                             "dice_2": [0.1, 0.2, 0.9], "in_bin": [True, True, False]})
    summary = bin_summary(manifest, [low, high])
    assert summary[0] == {"bin": str(low), "n": 3, "min": pytest.approx(0.1), "median": pytest.approx(0.2),
                          "max": pytest.approx(0.9), "in_bin": 2, "fraction_in_bin": pytest.approx(2 / 3)}
    assert summary[1]["n"] == 0 and summary[1]["median"] is None


def test_per_label_columns_are_ordered_by_label_value() -> None:
    """Label 10 comes after label 2 (numeric, not text, order), each metric's columns together."""
    columns = ["case", "nsd_10", "dice_10", "hd95_2", "dice_2", "nsd_2", "hd95_10", "dice"]
    order = _column_order(columns)
    per_label = [c for c in order if c.split("_")[0] in ("dice", "hd95", "nsd") and "_" in c]
    assert per_label == ["dice_2", "dice_10", "hd95_2", "hd95_10", "nsd_2", "nsd_10"]


def test_with_a_target_label_in_bin_is_judged_on_that_labels_dice(tmp_path: Path) -> None:
    """Binned on label 2: a map is in its bin when ``dice_2`` is, whatever the multi-class Dice
    (label 1, much larger, is left nearly intact and keeps that one high)."""
    gt = np.zeros((32, 32, 6), dtype=np.uint8)
    gt[2:30, 2:20] = 1
    gt[22:30, 22:30, 1:5] = 2
    geometry = Geometry(shape=gt.shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=_EYE3)
    (tmp_path / "gt").mkdir()
    write_image(tmp_path / "gt" / "case0.nii.gz", gt, geometry)
    target = DiceBin(0.3, 0.6)
    result = degrade_folder(tmp_path / "gt", tmp_path / "out", per_case=3, seed=0, bins=[target], target_label=2,
                            images_dir=None)
    manifest = result.manifest
    assert len(manifest) == 3 and set(manifest["binned_on"]) == {"dice_2"}
    expected = [0.3 <= d < 0.6 for d in manifest["dice_2"]]
    assert manifest["in_bin"].tolist() == expected
    assert any(expected) and not any(0.3 <= d < 0.6 for d in manifest["dice"])
