"""Parity with CC-Metrics (``ccmetrics`` 0.0.3, installed in the test extra): the two reductions of
per-component scores over a data set. ``patient`` (CC-Metrics' default) averages the components
of each case, then the cases: segqc's per-case ``cc_*`` rows and their summary mean. ``overall``
pools every component of every case with equal weight: ``overall`` of each ``cc_*`` entry of
summary.json. The per-component values themselves are compared with ccmetrics in
``tests/metrics/test_components.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from segqc.evaluation.evaluate import evaluate_folder
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

ccmetrics = pytest.importorskip("CCMetrics")
torch = pytest.importorskip("torch")


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Three cases with 4, 1 and 2 well separated components of different quality."""
    shape = (40, 40, 40)
    gt_a = _ball(shape, (10, 10, 10), 5) | _ball(shape, (10, 30, 28), 4) | _ball(shape, (30, 12, 30), 6) \
        | _ball(shape, (30, 30, 8), 3)
    pred_a = _ball(shape, (11, 10, 10), 5) | _ball(shape, (10, 30, 28), 3) | _ball(shape, (30, 13, 30), 7)
    gt_b = _ball(shape, (20, 20, 20), 6)
    pred_b = _ball(shape, (20, 22, 20), 6)
    gt_c = _ball(shape, (10, 10, 10), 4) | _ball(shape, (30, 30, 30), 5)
    pred_c = _ball(shape, (10, 10, 10), 4)
    return {"a": (pred_a, gt_a), "b": (pred_b, gt_b), "c": (pred_c, gt_c)}


def _one_hot(mask: np.ndarray):
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


@pytest.mark.parametrize("metric, reference", [("dice", "CCDiceMetric"), ("nsd", "CCSurfaceDiceMetric")])
def test_patient_and_overall_reductions_match_ccmetrics(tmp_path, metric, reference):
    cases = _cases()
    geometry = Geometry(shape=(40, 40, 40), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    kwargs = {"class_thresholds": [1.0]} if metric == "nsd" else {}
    ref = getattr(ccmetrics, reference)(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case, (pred, gt) in cases.items():
            write_image(tmp_path / "pred" / f"{case}.nii.gz", pred.astype(np.uint8), geometry)
            write_image(tmp_path / "gt" / f"{case}.nii.gz", gt.astype(np.uint8), geometry)
            ref(_one_hot(pred), _one_hot(gt))
        patient = ref.cc_aggregate("patient").numpy()
        overall = ref.cc_aggregate("overall").numpy()
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt", tmp_path / "out", metrics=(f"cc_{metric}",),
                             surface="voxel", voronoi_units="voxel", return_details=True)
    entry = result.summary["labels"]["1"][f"cc_{metric}"]
    assert entry["mean"] == pytest.approx(float(patient.mean()), rel=1e-6)
    assert entry["overall"]["mean"] == pytest.approx(float(overall.mean()), rel=1e-6)
    assert entry["overall"]["n_components"] == overall.size == 7
    assert entry["mean"] != pytest.approx(entry["overall"]["mean"])  # the two reductions really differ here
