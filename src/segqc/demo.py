"""The demo's data and computations (``segqc demo`` prints them): generated cases to evaluate,
two ACDC volumes with good and broken segmentations for the shipped QC models, and HC18 images,
clean and noisy, for the shipped segmentation models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_demo_data(root: Path, *, seed: int = 0) -> dict[str, tuple[Path, Path]]:
    """Write generated ground truths and flawed predictions (NIfTI) under ``root``.

    Returns ``{dataset: (pred_dir, gt_dir)}`` for two nnU-Net-style datasets: ``lesions`` (a
    160x160x96 volume at 0.8x0.8x2.0 mm with 25 lesions; missed, eroded, dilated, shifted and added
    lesions) and ``phantom`` (a 3-class phantom at 1x1x2.5 mm, shifted, one class eroded, one grown).
    """
    from segqc import synthetic
    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image

    folders = {name: (root / name / "pred", root / name / "gt") for name in ("lesions", "phantom")}
    spacing = (0.8, 0.8, 2.0)
    gt, lesions = synthetic.lesion_volume((160, 160, 96), spacing, 25, radius_mm=(2.0, 12.0), seed=seed)
    pred = synthetic.imperfect_lesion_prediction(gt, spacing, lesions, seed=seed + 1)
    geometry = Geometry.from_shape(gt.shape, spacing)
    pred_dir, gt_dir = folders["lesions"]
    write_image(gt_dir / "lesions.nii.gz", gt.astype("uint8"), geometry)
    write_image(pred_dir / "lesions.nii.gz", pred.astype("uint8"), geometry)
    spacing = (1.0, 1.0, 2.5)
    label = synthetic.multiclass_phantom((96, 96, 48), spacing, seed=seed)
    geometry = Geometry.from_shape(label.shape, spacing)
    pred_dir, gt_dir = folders["phantom"]
    write_image(gt_dir / "phantom.nii.gz", label, geometry)
    write_image(pred_dir / "phantom.nii.gz", synthetic.imperfect_multiclass_prediction(label, seed=seed), geometry)
    dataset = {"labels": {"background": 0, "cavity_a": 1, "wall": 2, "cavity_b": 3}, "file_ending": ".nii.gz",
               "channel_names": {"0": "synthetic"}}
    (gt_dir / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folders


_REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = [_REPO / "models" / "acdc-nnqc-small", _REPO / "models" / "acdc-qcresunet-small"]
DEFAULT_ACDC = _REPO.parent / "shared" / "data" / "acdc"
QC_CASES = ("ACDC_patient002_frame01", "ACDC_patient002_frame02")
SEG_MODELS = [_REPO / "models" / name for name in ("hc18-ldseg-small", "hc18-ldseg-paper-decoder-small",
                                                     "hc18-unet-small")]
DEFAULT_HC18 = _REPO.parent / "shared" / "data" / "hc18"
SEG_CASES = ("HC18_006", "HC18_015", "HC18_022")  # held out from the shipped models' training
SEG_NOISE = 0.3  # standard deviation of the added noise, times each image's intensity range


def write_seg_demo_data(root: Path, hc18: Path, *, seed: int = 0) -> Path:
    """The demo's HC18 images, each as it is (``CASE_0000.nii.gz``) and with white Gaussian noise
    of standard deviation 0.3 x its intensity range (``CASE_noisy_0000.nii.gz``); returns the folder."""
    import numpy as np

    from segqc.io.images import read_image, write_image

    images = root / "images"
    rng = np.random.default_rng(seed)
    for case in SEG_CASES:
        image = read_image(hc18 / "imagesTr" / f"{case}_0000.nii.gz", finite=True)
        write_image(images / f"{case}_0000.nii.gz", image.array, image.geometry)
        span = float(image.array.max() - image.array.min())
        noisy = image.array + rng.normal(0.0, SEG_NOISE * span, image.array.shape).astype(np.float32)
        write_image(images / f"{case}_noisy_0000.nii.gz", noisy, image.geometry)
    return images


def segment_demo(out_dir: Path, hc18: Path, models: list[Path]) -> tuple[dict[str, dict[str, float]], dict[str, Any],
                                                                      dict[str, dict[str, str]]]:
    """Segment the demo's HC18 images (:func:`write_seg_demo_data`) with each model in ``models``
    (LDSeg with 8 samples) into ``out_dir/seg/MODEL``. Returns the Dice of every image against
    its ground truth per model, each model's case uncertainty (a pandas Series by case) and the
    failed cases per model (case -> one error line)."""
    import pandas as pd

    from segqc.io.images import read_label_map
    from segqc.metrics.binary import dice
    from segqc.seg.inference import predict_folder
    from segqc.training.checkpoints import read_checkpoint_meta

    images = write_seg_demo_data(out_dir / "seg_data", hc18)
    truths = {case: read_label_map(hc18 / "labelsTr" / f"{case}.nii.gz").array > 0 for case in SEG_CASES}
    scores: dict[str, dict[str, float]] = {}
    uncertainty: dict[str, Any] = {}
    failed: dict[str, dict[str, str]] = {}
    for model in models:
        out = out_dir / "seg" / model.name
        diffusion = read_checkpoint_meta(model).get("method") == "ldseg"
        report = predict_folder(model, images, out, samples=8 if diffusion else None, progress=True)
        failed[model.name] = dict(report.failed)
        scores[model.name] = {}
        done = report.table if len(report.table) else pd.DataFrame({"case": [], "uncertainty": []})
        for case in done["case"]:
            truth = truths[case.removesuffix("_noisy")]
            scores[model.name][case] = dice(read_label_map(out / f"{case}.nii.gz").array > 0, truth).value
        uncertainty[model.name] = done.set_index("case")["uncertainty"]
    return scores, uncertainty, failed


def write_qc_demo_data(root: Path, acdc: Path) -> tuple[Path, Path, Path]:
    """Two ACDC volumes with three segmentations each: the ground truth, the ground truth with
    the myocardium eroded, and the ground truth shifted 31 mm off the heart (ids ``CASE__gt``,
    ``CASE__eroded``, ``CASE__shifted``; a ``manifest.csv`` maps them to their case). Returns
    (images, segmentations, ground truths)."""
    import shutil

    import numpy as np
    import pandas as pd
    from scipy import ndimage

    from segqc.io.images import read_label_map, write_image

    images, segs, gts = root / "images", root / "segmentations", root / "ground_truth"
    rows = []
    for case in QC_CASES:
        images.mkdir(parents=True, exist_ok=True)
        shutil.copy(acdc / "imagesTr" / f"{case}_0000.nii.gz", images / f"{case}_0000.nii.gz")
        truth = read_label_map(acdc / "labelsTr" / f"{case}.nii.gz")
        write_image(gts / f"{case}.nii.gz", truth.array, truth.geometry)
        eroded = truth.array.copy()
        myo = eroded == 2
        eroded[myo & ~ndimage.binary_erosion(myo, iterations=2)] = 0
        shifted = np.roll(truth.array, 20, axis=0)  # 20 voxels x 1.5625 mm
        for kind, array in (("gt", truth.array), ("eroded", eroded), ("shifted", shifted)):
            name = f"{case}__{kind}.nii.gz"
            write_image(segs / name, array, truth.geometry)
            rows.append({"case": case, "file": name})
    pd.DataFrame(rows).to_csv(segs / "manifest.csv", index=False)
    return images, segs, gts


def qc_demo(out_dir: Path, acdc: Path, models: list[Path]) -> tuple[dict[str, Any], Any]:
    """Benchmark each QC model in ``models`` on the demo's ACDC segmentations
    (:func:`write_qc_demo_data`) into ``out_dir/qc/MODEL``, and with two or more models their mean
    (``segqc qc combine``, ``out_dir/qc/combined``). Returns the multi-class Dice estimates per
    model (pandas Series by case; "mean of both" / "mean" for the combination) and the true ones."""
    import pandas as pd

    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings

    images, segs, gts = write_qc_demo_data(out_dir / "qc_data", acdc)
    estimates: dict[str, Any] = {}
    true = pd.Series(dtype=float)
    for model in models:
        bench_dir = out_dir / "qc" / model.name
        benchmark_qc(model, images, segs, gts, bench_dir, settings=QcSettings(metrics=("dice",)), progress=True)
        pairs = pd.read_csv(bench_dir / "pairs.csv", dtype={"case": str, "label": str})
        overall = pairs[(pairs.label == "all") & (pairs.metric == "dice")].set_index("case")
        estimates[model.name] = overall["estimate"]
        true = overall["true"]
    if len(models) > 1:  # the models' mean (segqc qc combine), the better estimate on real predictions
        from segqc.qc.combine import combine_qc_folders

        combined, _, _ = combine_qc_folders([out_dir / "qc" / m.name / "qc" for m in models],
                                            out_dir / "qc" / "combined")
        overall = combined[(combined.label == "all") & (combined.metric == "dice")].set_index("case")
        estimates["mean of both" if len(models) == 2 else "mean"] = overall["estimate"]
    return estimates, true
