"""Merging partial label maps: the three overlap strategies on hand-made maps, provenance, the class
and conflict tables, the two TotalSegmentator models of the example CT, and the command."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import segqc.anatomy.merge as merge_module
from segqc.anatomy.merge import merge_label_maps
from segqc.anatomy.scheme import LabelClass, LabelScheme, shipped_scheme
from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image

# tissue (coarse) contains organ; organ contains lesion (finest)
SCHEME = LabelScheme(name="toy", classes=(LabelClass("tissue", 1), LabelClass("organ", 2, parent="tissue"),
                                          LabelClass("lesion", 3, parent="organ"), LabelClass("other", 4)))
A = np.array([1, 1, 2, 0, 4, 0, 1])
B = np.array([2, 1, 3, 2, 0, 0, 4])
C = np.array([2, 0, 1, 2, 1, 0, 1])


def test_priority_takes_the_first_source_that_labels_the_voxel():
    result = merge_label_maps([A, B], SCHEME, strategy="priority", priority=[1, 0])
    np.testing.assert_array_equal(result.merged, [2, 1, 3, 2, 4, 0, 4])
    np.testing.assert_array_equal(result.provenance, [2, 2, 2, 2, 1, 0, 2])


def test_hierarchy_draws_the_finer_class_on_top():
    result = merge_label_maps([A, B], SCHEME, strategy="hierarchy")
    # voxel 0: tissue (A) vs organ (B) -> organ; voxel 2: organ vs lesion -> lesion;
    # voxel 6: tissue (depth 0) vs other (depth 0) -> tie, A first
    np.testing.assert_array_equal(result.merged, [2, 1, 3, 2, 4, 0, 1])
    np.testing.assert_array_equal(result.provenance, [2, 1, 2, 2, 1, 0, 1])


def test_vote_takes_the_majority_and_breaks_ties_by_priority():
    result = merge_label_maps([A, B, C], SCHEME, strategy="vote")
    # voxel 0: tissue, organ, organ -> organ (2 votes, B is the first of them)
    # voxel 2: organ, lesion, tissue -> tie of three, A first; voxel 6: tissue, other, tissue -> tissue
    np.testing.assert_array_equal(result.merged, [2, 1, 2, 2, 4, 0, 1])
    np.testing.assert_array_equal(result.provenance, [2, 1, 1, 2, 1, 0, 1])
    swapped = merge_label_maps([A, B, C], SCHEME, strategy="vote", priority=[2, 1, 0])
    assert swapped.merged[2] == 1 and swapped.provenance[2] == 3


def test_class_and_conflict_tables_count_claims_wins_and_disagreements():
    result = merge_label_maps([A, B], SCHEME, strategy="priority", names=["a", "b"])
    classes = result.classes.set_index(["source", "class"])
    assert classes.loc[("a", "tissue"), "claimed"] == 3 and classes.loc[("a", "tissue"), "won"] == 3
    assert classes.loc[("b", "other"), "claimed"] == 1 and classes.loc[("b", "other"), "won"] == 0
    conflicts = {(r.class_a, r.class_b): r.voxels for r in result.conflicts.itertuples()}
    # both labelled, different classes: voxel 0 (tissue/organ), 2 (organ/lesion), 6 (tissue/other)
    assert conflicts == {("tissue", "organ"): 1, ("organ", "lesion"): 1, ("tissue", "other"): 1}


@pytest.mark.parametrize("strategy", ["hierarchy", "priority", "vote"])
def test_class_values_above_16_bits_are_merged_and_counted_without_wrapping(strategy):
    wide = {1: 70_000, 2: 70_001, 3: 3_000_000, 4: 5}  # the toy scheme's values, renumbered
    scheme = LabelScheme(name="wide", classes=tuple(
        LabelClass(c.name, wide[c.value], parent=c.parent) for c in SCHEME.classes if c.value is not None))
    lookup = np.vectorize(lambda v: wide.get(int(v), 0))
    expected = merge_label_maps([A, B], SCHEME, strategy=strategy, names=["a", "b"])
    result = merge_label_maps([lookup(A), lookup(B)], scheme, strategy=strategy, names=["a", "b"])
    assert result.merged.dtype == np.uint32
    np.testing.assert_array_equal(result.merged, lookup(expected.merged))
    np.testing.assert_array_equal(result.provenance, expected.provenance)
    def by_name(table):
        return table.sort_values(["source", "class"]).reset_index(drop=True)

    expected_classes = expected.classes.assign(value=[wide[v] for v in expected.classes["value"]])
    assert by_name(result.classes).equals(by_name(expected_classes))
    assert result.conflicts.equals(expected.conflicts)  # conflicts by class name: the same pairs and counts


def test_merging_in_blocks_gives_the_same_maps_and_tables(monkeypatch):
    rng = np.random.default_rng(1)
    sources = [rng.integers(0, 5, size=(9, 11, 7)) * (rng.random((9, 11, 7)) < 0.7) for _ in range(3)]
    whole = merge_label_maps(sources, SCHEME, strategy="vote")
    monkeypatch.setattr(merge_module, "_BLOCK", 50)
    blocks = merge_label_maps(sources, SCHEME, strategy="vote")
    np.testing.assert_array_equal(whole.merged, blocks.merged)
    np.testing.assert_array_equal(whole.provenance, blocks.provenance)
    assert whole.classes.equals(blocks.classes) and whole.conflicts.equals(blocks.conflicts)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="different shapes"):
        merge_label_maps([A, A[:3]], SCHEME)
    with pytest.raises(ValueError, match=r"source2: values \[9\]"):
        merge_label_maps([A, np.array([9, 0, 0, 0, 0, 0, 0])], SCHEME)
    with pytest.raises(ValueError, match="priority"):
        merge_label_maps([A, B], SCHEME, priority=[0, 0])


def test_the_two_totalsegmentator_models_of_the_example_ct(shared_data):
    normal = read_label_map(shared_data("totalseg") / "example_seg.nii.gz").array
    fast = read_label_map(shared_data("totalseg") / "example_seg_fast.nii.gz").array
    result = merge_label_maps([normal, fast], shipped_scheme("total"), strategy="priority", names=["normal", "fast"])
    # union: every voxel either model labels is labelled; where normal labels, normal wins
    np.testing.assert_array_equal(result.merged > 0, (normal > 0) | (fast > 0))
    np.testing.assert_array_equal(result.merged[normal > 0], normal[normal > 0])
    only_fast = (normal == 0) & (fast > 0)
    np.testing.assert_array_equal(result.merged[only_fast], fast[only_fast])
    np.testing.assert_array_equal(result.provenance[only_fast], 2)
    disagree = (normal > 0) & (fast > 0) & (normal != fast)
    assert result.conflicts["voxels"].sum() == disagree.sum() > 0


runner = CliRunner()


def test_merge_command_on_the_example_ct_writes_maps_provenance_and_reports(shared_data, tmp_path):
    data = shared_data("totalseg")
    out = tmp_path / "merged"
    args = ["labels", "merge", str(data / "example_seg.nii.gz"), str(data / "example_seg_fast.nii.gz"),
            "--scheme", "total", "--names", "normal,fast", "--case", "ct", "-o", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    merged = read_label_map(out / "merged" / "ct.nii.gz")
    normal = read_label_map(data / "example_seg.nii.gz")
    assert merged.geometry == normal.geometry
    provenance = read_label_map(out / "provenance" / "ct.nii.gz").array
    fast = read_label_map(data / "example_seg_fast.nii.gz").array
    sources = np.stack([np.zeros_like(normal.array), normal.array, fast])
    np.testing.assert_array_equal(np.take_along_axis(sources, provenance[None].astype(int), 0)[0], merged.array)
    assert (out / "classes.csv").is_file() and (out / "conflicts.csv").is_file() and (out / "scheme.yaml").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "reused" in again.output


def test_merge_command_maps_an_old_scheme_and_resamples_another_grid(tmp_path):
    geometry = Geometry(shape=(4, 4, 4), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    v1, v2 = shipped_scheme("total_v1"), shipped_scheme("total")
    new = np.zeros((4, 4, 4), np.uint8)
    new[:2] = v2.value_of("liver")
    old = np.zeros((8, 8, 8), np.uint8)  # v1 values on a 1 mm grid over the same box
    old[4:, 4:] = v1.value_of("heart_myocardium")
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    write_image(tmp_path / "new" / "c1.nii.gz", new, geometry)
    write_image(tmp_path / "old" / "c1.nii.gz", old,
                Geometry(shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0), origin=(-0.5, -0.5, -0.5),
                         direction=geometry.direction))
    out = tmp_path / "out"
    result = runner.invoke(app, ["labels", "merge", str(tmp_path / "new"), f"{tmp_path / 'old'}=total_v1",
                                 "--scheme", "total", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "resampled" in result.output
    merged = read_label_map(out / "merged" / "c1.nii.gz").array
    assert merged.shape == (4, 4, 4)
    assert (merged[:2] == v2.value_of("liver")).all()
    assert (merged[2:, 2:] == v2.value_of("heart")).all()  # v1 myocardium -> v2 heart, on the 2 mm grid
    assert (merged[2:, :2] == 0).all()


def test_merge_command_names_the_file_with_a_value_outside_the_scheme(tmp_path):
    geometry = Geometry(shape=(2, 2, 2), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    write_image(tmp_path / "a.nii.gz", np.full((2, 2, 2), 200, np.uint8), geometry)
    write_image(tmp_path / "b.nii.gz", np.ones((2, 2, 2), np.uint8), geometry)
    result = runner.invoke(app, ["labels", "merge", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"),
                                 "--scheme", "total", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1
    assert "a.nii.gz: label values 200 are not classes of the scheme 'total'" in result.output
    assert "Traceback" not in result.output


def test_priority_of_three_sources_is_the_order_given():
    """priority [1, 2, 0]: B first, then C, then A, voxel by voxel (worked out by hand from the
    arrays above); with two sources every order is its own inverse, so three are needed."""
    result = merge_label_maps([A, B, C], SCHEME, strategy="priority", priority=[1, 2, 0])
    assert result.merged.tolist() == [2, 1, 3, 2, 1, 0, 4]
    assert result.provenance.tolist() == [2, 2, 2, 2, 3, 0, 2]
    result = merge_label_maps([A, B, C], SCHEME, strategy="priority", priority=[2, 0, 1])
    assert result.merged.tolist() == [2, 1, 1, 2, 1, 0, 1]
    assert result.provenance.tolist() == [3, 1, 3, 3, 3, 0, 3]


def test_conflicts_are_listed_largest_first():
    a = np.array([1] * 5 + [4] * 2)
    b = np.array([4] * 5 + [1] * 2)
    c = np.array([0] * 5 + [2] * 2)
    conflicts = merge_label_maps([a, b, c], SCHEME, strategy="priority").conflicts
    assert conflicts["voxels"].tolist() == sorted(conflicts["voxels"].tolist(), reverse=True)
    assert conflicts["voxels"].iloc[0] == 5
