"""The uncertainty layer of ``segqc review`` and ``segqc report``: a segmentation folder written by
``segqc seg predict`` keeps its per-voxel entropy in ``uncertainty/``; an evaluation (or QC run)
of that folder shows it. Expected voxels are the file's own (nibabel), expected colours those of
matplotlib's ``hot`` map at the values written here."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import nibabel
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from segqc.io.images import read_label_map, write_image
from segqc.report.cohort import load_cohort
from segqc.report.html import case_pictures
from segqc.review.app import ReviewSession, create_app
from segqc.review.store import DecisionStore
from segqc.review.worklist import load_worklist


def _segs_with_uncertainty(toy: dict[str, Path], target: Path) -> Path:
    """The toy segmentations plus, for case1 only, an entropy map: 0.3 nats in a 10 x 10 block
    around the centre of every slice, 0.5 in its first half, 0 elsewhere."""
    shutil.copytree(toy["segs"], target)
    seg = read_label_map(target / "case1.nii.gz")
    entropy = np.zeros(seg.array.shape, dtype=np.float32)
    cx, cy = seg.array.shape[0] // 2, seg.array.shape[1] // 2
    entropy[cx - 5:cx + 5, cy - 5:cy + 5] = 0.3
    entropy[cx - 5:cx, cy - 5:cy + 5] = 0.5
    write_image(target / "uncertainty" / "case1.nii.gz", entropy, seg.geometry)
    return target


def _evaluate(segs: Path, gt: Path, out: Path) -> Path:
    from segqc.evaluation.evaluate import evaluate_folder

    evaluate_folder(segs, gt, out, metrics=("dice",), multiclass_all=True)
    return out


def _orange_pixels(data_uri: str) -> int:
    """Pixels of ``hot`` at 0.6 of its range (1, 0.64, 0) over a dark background."""
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 150) & (rgb[..., 1] > 70) & (rgb[..., 1] < 200) & (rgb[..., 2] < 40)).sum())


def test_the_uncertainty_beside_the_segmentations_reaches_the_cohort_review_and_report(toy, tmp_path):
    segs = _segs_with_uncertainty(toy, tmp_path / "segs")
    out = _evaluate(segs, toy["gt"], tmp_path / "evaluation")
    cohort = load_cohort(out)
    assert cohort.inputs["case1"].uncertainty == segs / "uncertainty" / "case1.nii.gz"
    assert all(cohort.inputs[case].uncertainty is None for case in cohort.inputs if case != "case1")

    session = ReviewSession(load_worklist(out), DecisionStore(tmp_path / "review.sqlite"), "anna")
    client = TestClient(create_app(session), base_url="http://127.0.0.1")
    assert "uncertainty" in client.get("/api/cases/case1").json()["layers"]
    assert "uncertainty" not in client.get("/api/cases/case0").json()["layers"]
    served = nibabel.Nifti1Image.from_bytes(client.get("/api/cases/case1/layers/uncertainty.nii").content)
    written = nibabel.load(segs / "uncertainty" / "case1.nii.gz")
    np.testing.assert_allclose(np.asarray(served.dataobj, dtype=np.float32), written.get_fdata(), atol=1e-6)

    with_map, without = case_pictures(cohort, "case1"), case_pictures(cohort, "case0")
    width = Image.open(io.BytesIO(base64.b64decode(with_map["views"].split(",", 1)[1]))).size[0]
    width_plain = Image.open(io.BytesIO(base64.b64decode(without["views"].split(",", 1)[1]))).size[0]
    assert width == width_plain * 4 // 3  # one more panel than the three orthogonal views
    assert _orange_pixels(with_map["views"]) > 50  # 0.3 of the 0.5 maximum: hot's orange
    assert _orange_pixels(without["views"]) == 0
