"""``segqc labels check``: anatomical plausibility flags of label maps.

Every test starts from the whole-body phantom (:mod:`segqc.anatomy.phantom`), which raises no flag on
any grid, injects one kind of error with a known answer and asserts that exactly the expected
(class, flag) pairs appear — on an identity grid and on a flipped, permuted one, so that a check
that ignores the affine fails. Expected numbers are counted on the arrays with numpy, never by the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from scipy import ndimage
from typer.testing import CliRunner

from segqc.anatomy.check import CheckConfig, check_case, combine_masks, reference_volumes, worklist
from segqc.anatomy.flags import FLAG_COLUMNS, _fill_holes, body_mask, flag_overlap, side_pairs
from segqc.anatomy.phantom import Phantom, make_phantom
from segqc.anatomy.scheme import load_scheme
from segqc.anatomy.space import axis_coordinate, centroid_mm, index_to_mm
from segqc.cli.labels_check import check_command
from segqc.io.geometry import Geometry
from segqc.io.images import read_image, read_label_map, write_image

runner = CliRunner()
_app = typer.Typer()
_app.command()(check_command)

#: x -> -x, z along array axis 1 running inferior, y along array axis 2: flipped and permuted.
FLIP = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)
GRIDS = {"6mm-identity": (6.0, None), "8mm-flipped": (8.0, FLIP)}
TOTALSEG = Path(__file__).resolve().parents[3] / "shared" / "data" / "totalseg"


def _phantom(grid: str, sex: str = "M") -> Phantom:
    spacing, direction = GRIDS[grid]
    return make_phantom(spacing=spacing, sex=sex, direction=direction)


def _found(flags: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(flags["class"], flags["flag"], strict=True))


def _one(flags: pd.DataFrame, name: str, flag: str) -> pd.Series:
    rows = flags[(flags["class"] == name) & (flags["flag"] == flag)]
    assert len(rows) == 1, flags
    return rows.iloc[0]


def _mm(geometry: Geometry, axis: int) -> np.ndarray:
    return np.broadcast_to(axis_coordinate(geometry, axis), geometry.shape)


def _shift(mask: np.ndarray, geometry: Geometry, offset_mm: tuple[float, float, float]) -> np.ndarray:
    """``mask`` moved by a physical offset (LPS mm, a whole number of voxels on this grid)."""
    step = np.linalg.solve(geometry.direction_matrix() * np.asarray(geometry.spacing), np.asarray(offset_mm))
    assert np.allclose(step, np.round(step)), step
    index = np.argwhere(mask) + np.round(step).astype(int)
    keep = np.all((index >= 0) & (index < np.array(mask.shape)), axis=1)
    out = np.zeros_like(mask)
    out[tuple(index[keep].T)] = True
    return out


def _centroid(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    centre = centroid_mm(mask, geometry)
    assert centre is not None
    return centre


def _check(labels: np.ndarray, phantom: Phantom, **options) -> pd.DataFrame:
    options.setdefault("image", phantom.image)
    flags = check_case(labels, phantom.geometry, phantom.scheme, case="c", **options)
    assert list(flags.columns) == FLAG_COLUMNS
    assert set(flags["case"]) <= {"c"}
    return flags


def _crop_superior(phantom: Phantom, z_max: float) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """The phantom without the voxels above ``z_max`` (mm), on whatever grid it has."""
    geometry = phantom.geometry
    axis = int(np.argmax(np.abs(geometry.direction_matrix()[2])))  # the array axis along z
    index = np.zeros((geometry.shape[axis], 3))
    index[:, axis] = np.arange(geometry.shape[axis])
    z = index_to_mm(geometry, index)[:, 2]
    keep = np.flatnonzero(z <= z_max)
    start, stop = int(keep.min()), int(keep.max()) + 1
    box = tuple(slice(start, stop) if d == axis else slice(None) for d in range(3))
    first = [start if d == axis else 0 for d in range(3)]
    cropped = Geometry(shape=phantom.labels[box].shape, spacing=geometry.spacing,
                       origin=tuple(index_to_mm(geometry, np.array(first)).tolist()), direction=geometry.direction)
    return phantom.labels[box].copy(), phantom.image[box].copy(), cropped


# ------------------------------------------------------------------------------------------------
# The clean phantom raises nothing, on any grid.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [6.0, 8.0])
@pytest.mark.parametrize("sex", ["M", "F"])
@pytest.mark.parametrize("direction", [None, FLIP], ids=["identity", "flipped"])
def test_the_clean_phantom_raises_no_flag(spacing, sex, direction):
    phantom = make_phantom(spacing=spacing, sex=sex, direction=direction)
    flags = _check(phantom.labels, phantom)
    assert flags.empty, flags.to_string()


def test_the_body_holds_lungs_cut_by_the_field_of_view():
    phantom = _phantom("8mm-flipped")
    lung = np.isin(phantom.labels, phantom.scheme.values_under("lung"))
    middle = float(np.median(_mm(phantom.geometry, 2)[lung]))
    labels, image, geometry = _crop_superior(phantom, middle)  # the lungs open at the top of the grid
    lung = np.isin(labels, phantom.scheme.values_under("lung"))
    body = body_mask(image, geometry)
    assert body[labels > 0].all() and not body[0, 0, 0]
    # in 3D the cut lungs are no holes (they reach the border); slice by slice they are
    assert not body_mask(image, geometry, fill_holes="3d")[lung].any()
    assert body_mask(image, geometry, fill_holes="axial")[lung].all()


# ------------------------------------------------------------------------------------------------
# One injected error, one flag.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", GRIDS)
def test_swapped_kidneys_lie_on_the_wrong_side(grid):
    phantom = _phantom(grid)
    left, right = phantom.value("kidney_left"), phantom.value("kidney_right")
    labels = phantom.labels.copy()
    labels[phantom.labels == left] = right
    labels[phantom.labels == right] = left
    flags = _check(labels, phantom)
    assert _found(flags) == {("kidney_left", "left_right"), ("kidney_right", "left_right")}
    # the phantom's midline (spine, sternum) is x = 0 mm, sampled by the grid (within half a voxel): the
    # distance on the wrong side is the distance of the kidney's centroid to it
    x = _mm(phantom.geometry, 0)
    for name, value in (("kidney_left", left), ("kidney_right", right)):
        centroid_x = float(x[labels == value].mean())
        assert (centroid_x < 0) == (name == "kidney_left")
        assert _one(flags, name, "left_right")["value"] == pytest.approx(abs(centroid_x),
                                                                          abs=phantom.geometry.spacing[0] / 2)
        assert _one(flags, name, "left_right")["severity"] == "error"


def test_side_pairs_need_both_sides_in_the_scheme():
    pairs = side_pairs(load_scheme("total"))
    assert ("kidney_left", "kidney_right") in pairs and ("rib_left_7", "rib_right_7") in pairs
    assert not any("atrial_appendage" in left for left, _ in pairs)  # no atrial_appendage_right


@pytest.mark.parametrize("grid", GRIDS)
def test_liver_copied_into_the_head_is_out_of_its_region_and_a_second_component(grid):
    phantom = _phantom(grid)
    geometry, liver_value = phantom.geometry, phantom.value("liver")
    liver, brain = phantom.labels == liver_value, phantom.labels == phantom.value("brain")
    offset_z = round((_centroid(brain, geometry)[2] - _centroid(liver, geometry)[2]) / 24) * 24
    copy = _shift(liver, geometry, (24.0, 0.0, float(offset_z))) & brain  # into the brain's right part
    labels = phantom.labels.copy()
    labels[copy] = liver_value
    assert ndimage.label(labels == phantom.value("brain"), np.ones((3, 3, 3)))[1] == 1  # the brain stays whole
    flags = _check(labels, phantom)
    assert _found(flags) == {("liver", "region"), ("liver", "components")}
    # the original liver lies inside the abdomen (the clean phantom has no flag); the copy does not
    expected = int(copy.sum()) / int(copy.sum() + liver.sum())
    assert _one(flags, "liver", "region")["value"] == pytest.approx(expected, abs=1e-12)
    assert _one(flags, "liver", "components")["value"] == 2


@pytest.mark.parametrize("grid", GRIDS)
def test_two_vertebrae_merged_into_one_label(grid):
    phantom = _phantom(grid)
    geometry = phantom.geometry
    lower, upper = "vertebrae_L2", "vertebrae_L1"
    gap_low, gap_high = phantom.vertebra_z[lower][1], phantom.vertebra_z[upper][0]
    x, y, z = (_mm(geometry, a) for a in range(3))
    gap = (np.abs(x) <= 25) & (y >= 45) & (y <= 100) & (z > gap_low) & (z < gap_high)
    labels = phantom.labels.copy()
    labels[(phantom.labels == phantom.value(upper)) | gap] = phantom.value(lower)
    flags = _check(labels, phantom)
    assert _found(flags) == {(lower, "merged_vertebrae")}
    row = _one(flags, lower, "merged_vertebrae")
    merged_z = z[labels == phantom.value(lower)]
    height = float(merged_z.max() - merged_z.min()) + geometry.spacing[0]
    lumbar = phantom.vertebra_z["vertebrae_L3"][1] - phantom.vertebra_z["vertebrae_L3"][0]
    assert height > 2 * lumbar and row["value"] > 2 and row["value"] > row["threshold"] >= 1.6
    assert f"{upper} missing" in row["detail"]


@pytest.mark.parametrize("grid", GRIDS)
def test_a_blob_of_spleen_in_the_air_outside_the_body(grid):
    phantom = _phantom(grid)
    geometry, spleen = phantom.geometry, phantom.value("spleen")
    centre = _centroid(phantom.labels == spleen, geometry)
    x, y, z = (_mm(geometry, a) for a in range(3))
    # 24 mm cube 36 mm in front of the body (y radius 120 mm), at the spleen's height
    blob = (np.abs(x - centre[0]) <= 12) & (y >= -180) & (y <= -156) & (np.abs(z - centre[2]) <= 12)
    assert (phantom.image[blob] == -1000).all() and blob.sum() > 8
    labels = phantom.labels.copy()
    labels[blob] = spleen
    flags = _check(labels, phantom)
    # outside the body and a second component; its interior is too small a part of the spleen for in_air
    assert _found(flags) == {("spleen", "outside_body"), ("spleen", "components")}
    voxel_ml = float(np.prod(geometry.spacing)) / 1000
    assert _one(flags, "spleen", "outside_body")["value"] == pytest.approx(int(blob.sum()) * voxel_ml, rel=1e-12)
    assert f"{int(blob.sum())} voxels" in _one(flags, "spleen", "outside_body")["detail"]
    # without the image the body is unknown: nothing is outside
    assert _found(_check(labels, phantom, image=None)) == {("spleen", "components")}


@pytest.mark.parametrize("grid", GRIDS)
def test_a_label_on_the_patient_table_is_outside_the_body(grid):
    phantom = _phantom(grid)
    geometry, spleen = phantom.geometry, phantom.value("spleen")
    x, y, z = (_mm(geometry, a) for a in range(3))
    table = (y >= 150) & (y <= 170)  # 30 mm behind the patient's back (y radius 120 mm), all along
    image = phantom.image.copy()
    image[table] = 300.0  # as dense as tissue, but not connected to the body
    centre = _centroid(phantom.labels == spleen, geometry)
    blob = table & (np.abs(x - centre[0]) <= 12) & (np.abs(z - centre[2]) <= 12)
    labels = phantom.labels.copy()
    labels[blob] = spleen
    flags = _check(labels, phantom, image=image)
    assert _found(flags) == {("spleen", "outside_body"), ("spleen", "components")}
    voxel_ml = float(np.prod(geometry.spacing)) / 1000
    assert _one(flags, "spleen", "outside_body")["value"] == pytest.approx(int(blob.sum()) * voxel_ml, rel=1e-12)


@pytest.mark.parametrize("grid", GRIDS)
def test_a_liver_full_of_gas_is_in_air(grid):
    phantom = _phantom(grid)
    image = phantom.image.copy()
    image[phantom.labels == phantom.value("liver")] = -900.0  # e.g. a liver label over the lung
    flags = _check(phantom.labels, phantom, image=image)
    assert _found(flags) == {("liver", "in_air")}
    assert _one(flags, "liver", "in_air")["value"] == 1.0
    # the lungs are just as much in air, and allowed to be; allow nothing and they are flagged too
    config = CheckConfig(air_allowed=(), flags=("in_air",))
    lungs = {c.name for c in phantom.scheme.classes if c.parent == "lung"}
    assert _found(_check(phantom.labels, phantom, image=image, config=config)) == (
        {(n, "in_air") for n in lungs} | {("liver", "in_air")})


@pytest.mark.parametrize("grid", GRIDS)
def test_a_field_of_view_that_cuts_the_head(grid):
    phantom = _phantom(grid)
    brain = phantom.labels == phantom.value("brain")
    top = float(_mm(phantom.geometry, 2)[brain].max())
    labels, image, geometry = _crop_superior(phantom, top - 40.0)
    flags = check_case(labels, geometry, phantom.scheme, image=image, case="c")
    assert _found(flags) == {("brain", "fov_border"), ("skull", "fov_border")}
    axis = int(np.argmax(np.abs(geometry.direction_matrix()[2])))
    superior_end = 0 if geometry.direction_matrix()[2, axis] < 0 else labels.shape[axis] - 1
    on_face = int((np.take(labels, superior_end, axis=axis) == phantom.value("brain")).sum())
    row = _one(flags, "brain", "fov_border")
    assert row["value"] == on_face and row["severity"] == "warning"
    assert row["detail"] == f"cut by the field of view: touches the superior ({on_face} voxels) face(s)"


@pytest.mark.parametrize("grid", GRIDS)
def test_an_image_on_another_grid_is_one_geometry_flag(grid):
    phantom = _phantom(grid)
    image = phantom.image[:-1]  # one slice fewer along array axis 0
    other = Geometry(shape=image.shape, spacing=phantom.geometry.spacing, origin=phantom.geometry.origin,
                     direction=phantom.geometry.direction)
    flags = _check(phantom.labels, phantom, image=image, image_geometry=other)
    assert _found(flags) == {("all", "geometry")}
    row = _one(flags, "all", "geometry")
    assert row["value"] == 1 and f"shape {phantom.geometry.shape} (image {image.shape})" in row["detail"]


def test_a_volume_far_from_the_reference():
    phantom = _phantom("8mm-flipped")
    liver_ml = int((phantom.labels == phantom.value("liver")).sum()) * 0.512  # 8 mm voxels: 0.512 ml
    reference = pd.DataFrame({"class": ["liver", "spleen", "brain"],
                              "mean_ml": [liver_ml + 40.0, 10.0, 1.0], "sd_ml": [10.0, 0.0, float("nan")]})
    flags = _check(phantom.labels, phantom, reference=reference)
    assert _found(flags) == {("liver", "volume_z")}  # spleen and brain: no spread, not scored
    assert _one(flags, "liver", "volume_z")["value"] == pytest.approx(-4.0, abs=1e-9)


def test_a_reference_from_per_case_volumes():
    volumes = pd.DataFrame({"case": ["a", "b", "c", "a", "b", "c"],
                            "organ": ["liver"] * 3 + ["spleen"] * 3,
                            "volume_ml": [100.0, 110.0, 120.0, 50.0, 0.0, 0.0]})  # spleen: one case only
    reference = reference_volumes(volumes)
    assert reference.to_dict("records") == [{"class": "liver", "mean_ml": 110.0, "sd_ml": 10.0, "n": 3}]


def test_two_binary_masks_that_overlap():
    phantom = _phantom("8mm-flipped")
    masks = {name: phantom.labels == phantom.value(name) for name in ("spleen", "kidney_left", "liver")}
    kidney = np.argwhere(masks["kidney_left"])[:7]
    masks["spleen"][tuple(kidney.T)] = True  # 7 kidney voxels claimed by the spleen too
    flags = flag_overlap(masks, phantom.geometry, case="c")
    assert _found(flags) == {("spleen+kidney_left", "overlap")}
    assert _one(flags, "spleen+kidney_left", "overlap")["value"] == 7
    combined = combine_masks(masks, phantom.scheme)  # the higher value wins: the map is unchanged
    labels = np.where(np.isin(phantom.labels, [phantom.value(n) for n in masks]), phantom.labels, 0)
    np.testing.assert_array_equal(combined, labels)


def test_worklist_puts_the_worst_cases_first():
    rows = [("w", "a", "fov_border", "warning"), ("e1", "a", "left_right", "error"),
            ("e2", "a", "left_right", "error"), ("e2", "b", "components", "warning")]
    flags = pd.DataFrame([{"case": c, "class": n, "flag": f, "severity": s, "value": 1.0, "threshold": 0.0,
                           "detail": ""} for c, n, f, s in rows], columns=FLAG_COLUMNS)
    table = worklist(flags, ["clean", "w", "e1", "e2"])
    assert list(table["case"]) == ["e2", "e1", "w", "clean"]
    assert list(table["flag"]) == [True, True, True, False]
    assert table.iloc[0]["reason"] == "left_right: a; components: b"
    assert table.iloc[0]["worst_severity"] == "error" and table.iloc[2]["worst_severity"] == "warning"


# ------------------------------------------------------------------------------------------------
# The command, end to end.
# ------------------------------------------------------------------------------------------------


def _swapped_kidneys(phantom: Phantom) -> np.ndarray:
    left, right = phantom.value("kidney_left"), phantom.value("kidney_right")
    labels = phantom.labels.copy()
    labels[phantom.labels == left] = right
    labels[phantom.labels == right] = left
    return labels


def test_the_command_on_a_folder_then_a_rerun(tmp_path):
    phantom = _phantom("8mm-flipped")
    labels_dir, images_dir, out = tmp_path / "labels", tmp_path / "images", tmp_path / "out"
    for case, labels in (("clean", phantom.labels), ("swapped", _swapped_kidneys(phantom))):
        write_image(labels_dir / f"{case}.nii.gz", labels, phantom.geometry)
        write_image(images_dir / f"{case}_0000.nii.gz", phantom.image, phantom.geometry)
    args = [str(labels_dir), str(images_dir), "-o", str(out), "-q"]
    result = runner.invoke(_app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 of 2 case(s) done" in result.output

    flags = pd.read_csv(out / "flags.csv", dtype={"case": str})
    assert list(flags.columns) == FLAG_COLUMNS
    assert set(zip(flags["case"], flags["class"], flags["flag"], strict=True)) == {
        ("swapped", "kidney_left", "left_right"), ("swapped", "kidney_right", "left_right")}
    work = pd.read_csv(out / "worklist.csv", dtype={"case": str}, keep_default_na=False)
    assert list(work["case"]) == ["swapped", "clean"]
    assert work.iloc[0]["worst_severity"] == "error" and work.iloc[0]["n_errors"] == 2
    assert work.iloc[0]["reason"] == "left_right: kidney_left, kidney_right"
    assert not work.iloc[1]["flag"] and work.iloc[1]["worst_severity"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flags"]["left_right"] == {"severity": "error", "checked": True, "flags": 2, "cases": 1}
    assert summary["flags"]["outside_body"] == {"severity": "error", "checked": True, "flags": 0, "cases": 0}
    assert not summary["flags"]["overlap"]["checked"] and not summary["flags"]["volume_z"]["checked"]
    assert summary["cases_flagged"] == 1 and summary["cases_with_errors"] == 1
    assert summary["per_case"]["swapped"]["by_flag"] == {"left_right": 2}
    assert summary["per_case"]["clean"]["flags"] == 0
    assert summary["cases"]["inputs"]["clean"]["image"] == [str(images_dir / "clean_0000.nii.gz")]
    volumes = pd.read_csv(out / "volumes.csv", dtype={"case": str}).set_index(["case", "class"])["voxels"]
    assert volumes[("clean", "liver")] == int((phantom.labels == phantom.value("liver")).sum())

    # the review app opens the check folder: flagged cases first, the flags as the reason
    from segqc.review.worklist import load_worklist

    review = load_worklist(out)
    assert [c.id for c in review.cases] == ["swapped", "clean"]
    assert review.cases[0].flagged and review.cases[0].reason == "left_right: kidney_left, kidney_right"
    assert not review.cases[1].flagged
    assert review.cases[0].files["segmentation"] == labels_dir / "swapped.nii.gz"
    assert review.cases[0].files["image"] == images_dir / "swapped_0000.nii.gz"

    rerun = runner.invoke(_app, args, catch_exceptions=False)
    assert rerun.exit_code == 0, rerun.output
    assert "reused 2 finished case(s)" in rerun.output
    pd.testing.assert_frame_equal(pd.read_csv(out / "flags.csv", dtype={"case": str}), flags)

    # per-case volumes (volumes.csv) make a reference: livers of half this size, SD 2.5 % of this one
    liver_ml = volumes[("clean", "liver")] * 0.512  # 8 mm voxels
    reference = tmp_path / "reference.csv"
    pd.DataFrame({"case": ["r1", "r2", "r3"], "class": ["liver"] * 3,
                  "volume_ml": [f * liver_ml for f in (0.475, 0.5, 0.525)]}).to_csv(reference, index=False)
    result = runner.invoke(_app, [*args, "--reference", str(reference), "--flags", "volume_z"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    flags = pd.read_csv(out / "flags.csv", dtype={"case": str})
    assert set(zip(flags["case"], flags["class"], flags["flag"], strict=True)) == {
        ("clean", "liver", "volume_z"), ("swapped", "liver", "volume_z")}
    assert flags["value"].to_numpy() == pytest.approx([20.0, 20.0], abs=1e-9)  # (1 - 0.5) / 0.025


def test_a_label_value_outside_the_scheme_is_one_error_line_naming_the_file(tmp_path):
    phantom = _phantom("8mm-flipped")
    labels_dir = tmp_path / "labels"
    write_image(labels_dir / "good.nii.gz", phantom.labels, phantom.geometry)
    bad = phantom.labels.copy()
    bad[0, 0, 0] = 200
    write_image(labels_dir / "bad.nii.gz", bad, phantom.geometry)
    result = runner.invoke(_app, [str(labels_dir), "-o", str(tmp_path / "out"), "-q"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {labels_dir / 'bad.nii.gz'}: label values 200 are not classes of the scheme 'total'"]
    assert "1 of 2 case(s) done, 1 failed" in result.output
    assert pd.read_csv(tmp_path / "out" / "worklist.csv")["case"].tolist() == ["good"]


def test_bad_options_stop_the_run_with_exit_code_2(tmp_path):
    phantom = _phantom("8mm-flipped")
    write_image(tmp_path / "labels" / "c.nii.gz", phantom.labels, phantom.geometry)
    result = runner.invoke(_app, [str(tmp_path / "labels"), "-o", str(tmp_path / "out"), "--flags", "nonsense"],
                           catch_exceptions=False)
    assert result.exit_code == 2 and "unknown flag(s) nonsense" in result.output
    result = runner.invoke(_app, [str(tmp_path / "labels"), "-o", str(tmp_path / "out"), "--set", "body_hu=low"],
                           catch_exceptions=False)
    assert result.exit_code == 2 and "body_hu takes a number" in result.output


@pytest.mark.parametrize("rows, problem", [
    ("class,mean_ml,sd_ml\nliver,1500,200\nsplen,1,1\n", "class 'splen' is not in the scheme 'total'"),
    ("class,mean_ml,sd_ml\nliver,1500,200\nspleen,1 ml,1\n", "mean_ml of 'spleen' (row 3) is not a number: '1 ml'"),
    ("case,class,volume_ml\na,liver,1500\nb,liver,1.2 l\n", "volume_ml of 'liver' (row 3) is not a number: '1.2 l'"),
], ids=["unknown-class", "units", "per-case-text"])
def test_a_reference_with_an_unknown_class_or_a_value_that_is_no_number_is_one_error_line(tmp_path, rows, problem):
    phantom = _phantom("8mm-flipped")
    write_image(tmp_path / "labels" / "c.nii.gz", phantom.labels, phantom.geometry)
    reference = tmp_path / "reference.csv"
    reference.write_text(rows)
    result = runner.invoke(_app, [str(tmp_path / "labels"), "-o", str(tmp_path / "out"), "--flags", "volume_z",
                                  "--reference", str(reference), "-q"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {reference}: {problem}"


@pytest.mark.parametrize("step, problem", [
    ("{rule: largest_component, classes: 5}", "step 1 (largest_component): classes must be a list of class names"),
    ("{rule: restrict_to_region, regions: {head: {inferior: {landmark: vertebrae_C3}}}, classes: [brain]}",
     "step 1 (restrict_to_region): classes must map each region to a list of class names"),
], ids=["classes-int", "region-classes-list"])
def test_a_malformed_rules_file_is_one_error_line_naming_it(tmp_path, step, problem):
    phantom = _phantom("8mm-flipped")
    write_image(tmp_path / "labels" / "c.nii.gz", phantom.labels, phantom.geometry)
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"steps:\n- {step}\n")
    result = runner.invoke(_app, [str(tmp_path / "labels"), "-o", str(tmp_path / "out"), "--rules", str(rules), "-q"],
                           catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {rules}: {problem}"), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_thresholds_from_the_command_line():
    config = CheckConfig.preset("default", air_allowed="lung,trachea", body_hu=-300, flags="region,components")
    assert config.air_allowed == ("lung", "trachea") and config.body_hu == -300.0
    assert config.flags == ("region", "components")
    assert CheckConfig.from_dict(config.to_dict()) == config


def test_per_class_mask_folders_report_overlaps(tmp_path):
    phantom = _phantom("8mm-flipped")
    case_dir = tmp_path / "masks" / "c1"
    values = [int(v) for v in np.unique(phantom.labels) if v]
    masks = {phantom.scheme.name_of(v): phantom.labels == v for v in values}
    kidney = np.argwhere(masks["kidney_left"])[:7]
    masks["spleen"][tuple(kidney.T)] = True  # the kidney (higher value) wins in the combined map
    for name, mask in masks.items():
        write_image(case_dir / f"{name}.nii.gz", mask.astype(np.uint8), phantom.geometry)
    write_image(case_dir / "not_a_class.nii.gz", np.zeros(phantom.labels.shape, np.uint8), phantom.geometry)
    images = tmp_path / "images"
    write_image(images / "c1.nii.gz", phantom.image, phantom.geometry)
    out = tmp_path / "out"
    result = runner.invoke(_app, [str(tmp_path / "masks"), str(images), "-o", str(out), "-q"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "c1: ignored 1 file(s) not named after a class: not_a_class.nii.gz" in result.output
    flags = pd.read_csv(out / "flags.csv")
    assert set(zip(flags["class"], flags["flag"], flags["value"], strict=True)) == {
        ("spleen+kidney_left", "overlap", 7.0)}
    assert json.loads((out / "summary.json").read_text())["layout"] == "per-class masks"


# ------------------------------------------------------------------------------------------------
# A real TotalSegmentator output (model output on a 3 mm abdominal CT slab).
# ------------------------------------------------------------------------------------------------


def test_totalsegmentators_example_has_only_warnings():
    labels = read_label_map(TOTALSEG / "example_seg.nii.gz")
    image = read_image(TOTALSEG / "example_ct_sm.nii.gz")
    flags = check_case(labels.array, labels.geometry, load_scheme("total"), image=image.array,
                       image_geometry=image.geometry, case="example")
    assert set(flags["severity"]) == {"warning"}, flags[flags["severity"] == "error"].to_string()
    # a 90 mm slab: the liver runs through both ends of it, and the lower lobes through its top
    assert "superior" in _one(flags, "liver", "fov_border")["detail"]
    assert "inferior" in _one(flags, "liver", "fov_border")["detail"]
    assert "inferior" not in _one(flags, "lung_lower_lobe_left", "fov_border")["detail"]


_OBLIQUE = Geometry(shape=(9, 7, 5), spacing=(0.8, 1.1, 2.5), origin=(10.0, -4.0, 30.0),
                    direction=tuple(np.linalg.qr(np.array([[1.0, 0.3, 0.1], [0.2, 1.0, 0.4], [0.1, 0.2, 1.0]]))[0]
                                    .ravel().tolist()))
_PERMUTED = Geometry(shape=(9, 7, 5), spacing=(0.8, 1.1, 2.5), origin=(10.0, -4.0, 30.0),
                     direction=(0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))


@pytest.mark.parametrize("geometry", [_OBLIQUE, _PERMUTED], ids=["oblique", "permuted"])
def test_coordinates_and_centroids_equal_those_of_every_voxel_index(geometry):
    """axis_coordinate skips the array axes a coordinate does not move along, and centroid_mm
    sums per-axis counts: both must equal the plain computation from every voxel's index
    (index_to_mm of np.indices / of np.argwhere)."""
    every = index_to_mm(geometry, np.indices(geometry.shape).reshape(3, -1).T).reshape(*geometry.shape, 3)
    for axis in range(3):
        np.testing.assert_allclose(np.broadcast_to(axis_coordinate(geometry, axis), geometry.shape),
                                   every[..., axis], atol=1e-9)
    mask = np.random.default_rng(3).random(geometry.shape) < 0.3
    np.testing.assert_allclose(centroid_mm(mask, geometry), index_to_mm(geometry, np.argwhere(mask)).mean(axis=0),
                               atol=1e-9)
    assert centroid_mm(np.zeros(geometry.shape, bool), geometry) is None


def test_an_axis_aligned_coordinate_is_one_line_of_values_not_a_grid():
    """A whole-body CT's z as a full float64 grid took 8 bytes per voxel in `labels check`."""
    z = axis_coordinate(_PERMUTED, 2)
    assert z.size == 7 and np.ndim(z) == 3  # z moves along the second array axis only


@pytest.mark.parametrize("geometry", [_OBLIQUE, _PERMUTED], ids=["oblique", "permuted"])
def test_index_to_mm_equals_simpleitks_physical_points(geometry):
    """SimpleITK's TransformContinuousIndexToPhysicalPoint is the reference for index -> LPS mm on
    anisotropic, oblique and permuted grids (a spacing applied to the wrong axis shows here)."""
    import SimpleITK as sitk

    image = sitk.Image(list(geometry.shape), sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    indices = np.array([[0, 0, 0], [8, 0, 0], [0, 6, 0], [0, 0, 4], [3.5, 2.0, 1.25], [8, 6, 4]])
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, i))) for i in indices])
    np.testing.assert_allclose(index_to_mm(geometry, indices), expected, atol=1e-9)


def _toy_scheme():
    from segqc.anatomy.scheme import LabelClass, LabelScheme

    return LabelScheme(name="toy", classes=(LabelClass("near", 1), LabelClass("small", 2), LabelClass("far", 3)))


def test_outside_body_counts_only_voxels_beyond_the_margin_and_flags_only_above_the_volume():
    """Body x in [10, 30) mm. "near" lies 1-2 mm outside it (within the 3 mm margin); "small" is
    0.3 ml and "far" 0.9 ml 15 mm outside: only "far" passes min_ml 0.5."""
    from segqc.anatomy.flags import flag_outside_body

    geometry = Geometry(shape=(60, 60, 60), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    body = np.zeros(geometry.shape, bool)
    body[10:30, 10:50, 10:50] = True
    labels = np.zeros(geometry.shape, np.uint8)
    labels[31:33, 20:40, 20:40] = 1  # 800 voxels, 1-2 mm outside
    labels[45:48, 20:30, 40:50] = 2  # 300 voxels = 0.3 ml
    labels[45:49, 20:35, 20:35] = 3  # 900 voxels = 0.9 ml
    flags = flag_outside_body(labels, body, geometry, _toy_scheme(), margin_mm=3.0, min_ml=0.5)
    assert flags["class"].tolist() == ["far"] and flags["value"].iloc[0] == pytest.approx(0.9)


def test_the_worklist_puts_more_errors_before_more_warnings():
    from segqc.anatomy.flags import _row, flag_table

    flags = flag_table([_row("two_errors", "a", "outside_body", 1, 0, ""), _row("two_errors", "b", "region", 1, 0, ""),
                    _row("one_error", "a", "region", 1, 0, ""), _row("one_error", "a", "fov_border", 1, 0, ""),
                    _row("one_error", "b", "components", 2, 1, ""), _row("one_error", "c", "overlap", 1, 0, "")])
    table = worklist(flags, ["clean", "one_error", "two_errors"])
    assert table["case"].tolist() == ["two_errors", "one_error", "clean"]


def test_components_below_the_minimum_volume_do_not_count():
    """A 0.125 ml organ with a 0.05 ml fragment is one component at min_ml 0.1 (not flagged), two
    at min_ml 0.01 (flagged)."""
    from segqc.anatomy.flags import flag_components

    geometry = Geometry(shape=(30, 30, 30), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[2:7, 2:7, 2:7] = 3  # 125 voxels = 0.125 ml
    labels[20:25, 20:25, 20:22] = 3  # 50 voxels = 0.05 ml
    scheme = _toy_scheme()
    assert flag_components(labels, geometry, scheme, classes=["far"], min_ml=0.1).empty
    flagged = flag_components(labels, geometry, scheme, classes=["far"], min_ml=0.01)
    assert flagged["value"].tolist() == [2.0]


def _vertebra_stack(slices: list[int]):
    from segqc.anatomy.scheme import LabelClass, LabelScheme

    names = [f"v{i + 1}" for i in range(len(slices))]
    scheme = LabelScheme(name="spine", classes=tuple(LabelClass(n, i + 1) for i, n in enumerate(names)))
    labels = np.zeros((6, 6, sum(slices) + 4), np.uint8)
    z = 2  # two empty slices at both ends: no vertebra is cut by the field of view
    for value, n in enumerate(slices, 1):
        labels[1:5, 1:5, z:z + n] = value
        z += n
    geometry = Geometry(shape=labels.shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return labels, geometry, scheme, names


def test_merged_vertebrae_compare_with_near_levels_after_their_relative_height():
    """Heights (mm) 10, 20 (relative height 2: counts 10), 10, 10, then eight of 5: against the
    median of the levels within 3, nothing is too tall (against all levels v1 would be 2x the
    median, and v2 without its relative height 2x its neighbours). A 12 mm v6 among 5 mm
    neighbours is flagged, alone."""
    from segqc.anatomy.flags import flag_merged_vertebrae

    slices = [10, 20, 10, 10] + [5] * 8
    labels, geometry, scheme, names = _vertebra_stack(slices)
    options = {"order": names, "window": 3, "relative_height": {"v2": 2.0}}
    assert flag_merged_vertebrae(labels, geometry, scheme, **options).empty
    slices[5] = 12
    labels, geometry, scheme, names = _vertebra_stack(slices)
    flags = flag_merged_vertebrae(labels, geometry, scheme, **options)
    assert flags["class"].tolist() == ["v6"] and flags["value"].iloc[0] == pytest.approx(12 / 5)


@pytest.mark.parametrize("seed", range(4))
def test_hole_filling_equals_scipys_in_3d_and_slice_by_slice(seed):
    """scipy's binary_fill_holes (repeated dilations of the background from the border) is the
    reference, on random masks of every density: in 3D, and on each slice across each axis."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 12, 3))
        mask = rng.random(shape) < rng.uniform(0.3, 0.9)
        assert np.array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))
        for axis in range(3):
            expected = np.stack([ndimage.binary_fill_holes(part) for part in np.moveaxis(mask, axis, 0)], axis=axis)
            assert np.array_equal(_fill_holes(mask, across=axis), expected), axis


def test_the_report_of_a_check_folder_shows_every_flag_kind_with_its_value(tmp_path):
    """The report's table of a check folder showed the first flag kind only (the `volume_z` flags
    of other classes were missing, a case flagged for them had an empty row), an always-empty
    spread column, and voxel counts as 1133.0000."""
    import re

    from segqc.report.html import build_report

    phantom = _phantom("8mm-flipped")
    labels_dir, out = tmp_path / "labels", tmp_path / "out"
    for case, labels in (("clean", phantom.labels), ("swapped", _swapped_kidneys(phantom))):
        write_image(labels_dir / f"{case}.nii.gz", labels, phantom.geometry)
    liver_ml = int((phantom.labels == phantom.value("liver")).sum()) * 0.512
    reference = tmp_path / "reference.csv"
    pd.DataFrame({"case": ["r1", "r2", "r3"], "class": ["liver"] * 3,
                  "volume_ml": [f * liver_ml for f in (0.475, 0.5, 0.525)]}).to_csv(reference, index=False)
    result = runner.invoke(_app, [str(labels_dir), "-o", str(out), "--reference", str(reference), "-q"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    flags = pd.read_csv(out / "flags.csv", dtype={"case": str})
    assert {("liver", "volume_z"), ("kidney_left", "left_right")} <= set(zip(flags["class"], flags["flag"]))
    kinds = {(str(phantom.value(name)), flag) for name, flag in zip(flags["class"], flags["flag"], strict=True)}
    page = build_report(out, jobs=1).read_text(encoding="utf-8")
    table = page[page.index('<table class="sortable cohort">'):]
    table = table[:table.index("</table>")]
    headers = re.findall(r'<th data-label="([^"]*)" data-metric="([^"]*)" data-column="value">', table)
    assert set(headers) == kinds and "spread" not in table
    rows = dict(re.findall(r'<tr data-case="([^"]+)"[^>]*>(.*?)</tr>', table))
    for row in flags.itertuples():
        cells = re.findall(r'<td[^>]*data-value="([^"]*)"[^>]*>([^<]*)</td>', rows[row.case])
        value, shown = cells[headers.index((str(phantom.value(row._2)), row.flag))]
        assert float(value) == pytest.approx(row.value) and shown == f"{row.value:.6g}"
    # the review app of the folder colours and names every class the maps hold, flagged or not
    # (it showed the maps in grey, without a legend: the flags name classes, not label values)
    from segqc.review.app import label_colours
    from segqc.review.worklist import load_worklist

    volumes = pd.read_csv(out / "volumes.csv")
    expected = {str(v): name for name, v in zip(volumes["class"], volumes["value"], strict=True)}
    assert load_worklist(out).labels == dict(sorted(expected.items(), key=lambda item: int(item[0])))
    assert {entry["value"] for entry in label_colours(load_worklist(out).labels)} == set(map(int, expected))
