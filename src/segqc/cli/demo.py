"""``segqc demo``: generate a multi-lesion case and a multi-class case and evaluate them; QC real
cardiac MRI with the shipped QC models; segment real fetal head ultrasound, clean and noisy, with
the shipped segmentation models. Each real-data part is skipped with one line without its data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from segqc.cli._common import console, user_errors


def write_demo_data(root: Path, *, seed: int = 0) -> dict[str, tuple[Path, Path]]:
    """Write generated ground truths and flawed predictions (NIfTI) under ``root``.

    Returns ``{dataset: (pred_dir, gt_dir)}`` for two nnU-Net-style datasets: ``lesions`` (a
    160x160x96 volume at 0.8x0.8x2.0 mm with 25 lesions; missed, eroded, dilated, shifted and added
    lesions) and ``phantom`` (a 3-class phantom at 1x1x2.5 mm, shifted, one class eroded, one grown).
    """
    from segqc import synthetic
    from segqc.io.images import Geometry, write_image

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


_REPO = Path(__file__).resolve().parents[3]
DEFAULT_MODELS = [_REPO / "models" / "acdc-nnqc-small", _REPO / "models" / "acdc-qcresunet-small"]
DEFAULT_ACDC = _REPO.parent / "shared" / "data" / "acdc"
_QC_CASES = ("ACDC_patient002_frame01", "ACDC_patient002_frame02")
SEG_MODELS = [_REPO / "models" / name for name in ("hc18-ldseg-small", "hc18-ldseg-paper-decoder-small",
                                                     "hc18-unet-small")]
DEFAULT_HC18 = _REPO.parent / "shared" / "data" / "hc18"
_SEG_CASES = ("HC18_006", "HC18_015", "HC18_022")  # held out from the shipped models' training
_SEG_NOISE = 0.3  # standard deviation of the added noise, times each image's intensity range


def write_seg_demo_data(root: Path, hc18: Path, *, seed: int = 0) -> Path:
    """The demo's HC18 images, each as it is (``CASE_0000.nii.gz``) and with white Gaussian noise
    of standard deviation 0.3 x its intensity range (``CASE_noisy_0000.nii.gz``); returns the folder."""
    import numpy as np

    from segqc.io.images import read_image, write_image

    images = root / "images"
    rng = np.random.default_rng(seed)
    for case in _SEG_CASES:
        image = read_image(hc18 / "imagesTr" / f"{case}_0000.nii.gz", finite=True)
        write_image(images / f"{case}_0000.nii.gz", image.array, image.geometry)
        span = float(image.array.max() - image.array.min())
        noisy = image.array + rng.normal(0.0, _SEG_NOISE * span, image.array.shape).astype(np.float32)
        write_image(images / f"{case}_noisy_0000.nii.gz", noisy, image.geometry)
    return images


def _seg_demo(out_dir: Path, hc18: Path) -> None:
    """Segmentation with uncertainty: the shipped HC18 models on held-out images, clean and noisy
    (LDSeg with 8 samples); Dice against the ground truth and LDSeg's case uncertainty (skipped
    with one line when the data, the models or PyTorch are not there)."""
    import importlib.util

    import pandas as pd
    from rich.table import Table

    present = [m for m in SEG_MODELS if (m / "config.json").is_file()]
    if importlib.util.find_spec("torch") is None or not present or not (hc18 / "imagesTr").is_dir():
        console.print(f"segmentation demo skipped: needs PyTorch, the shipped HC18 models and the HC18 images in "
                      f"{hc18} (--hc18)")
        return
    from segqc.io.images import read_label_map
    from segqc.metrics.binary import dice
    from segqc.seg.inference import predict_folder
    from segqc.training.checkpoints import read_checkpoint_meta

    images = write_seg_demo_data(out_dir / "seg_data", hc18)
    console.rule(f"segmentation with uncertainty: {len(_SEG_CASES)} held-out fetal head ultrasound images, "
                 f"clean and with noise of {_SEG_NOISE} x the intensity range")
    scores: dict[str, dict[str, float]] = {}
    uncertainty: dict[str, pd.Series] = {}
    for model in present:
        out = out_dir / "seg" / model.name
        diffusion = read_checkpoint_meta(model).get("method") == "ldseg"
        report = predict_folder(model, images, out, samples=8 if diffusion else None, progress=True)
        for case, error in report.failed.items():
            console.print(f"error: {case}: {error}")
        scores[model.name] = {}
        done = report.table if len(report.table) else pd.DataFrame({"case": [], "uncertainty": []})
        for case in done["case"]:
            truth = read_label_map(hc18 / "labelsTr" / f"{case.removesuffix('_noisy')}.nii.gz").array > 0
            scores[model.name][case] = dice(read_label_map(out / f"{case}.nii.gz").array > 0, truth).value
        uncertainty[model.name] = done.set_index("case")["uncertainty"]
    table = Table(title="Dice against the ground truth (uncertainty: mean entropy in the head, nats)")
    table.add_column("image")
    for name in scores:
        table.add_column(name, justify="right")
    first = present[0].name
    table.add_column(f"uncertainty, {first}", justify="right")
    for case in sorted(set().union(*scores.values())):
        table.add_row(case, *(f"{scores[name].get(case, float('nan')):.3f}" for name in scores),
                      f"{uncertainty[first].get(case, float('nan')):.3f}")
    console.print(table)
    console.print(f"segmentations, entropy maps (uncertainty/) and cases.csv in {out_dir / 'seg'}/MODEL")


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
    for case in _QC_CASES:
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


def _qc_demo(out_dir: Path, models: list[Path], acdc: Path) -> None:
    """QC of real cardiac MRI with the shipped models, estimated against true Dice (skipped with
    one line when no model, the data or PyTorch is not there; a missing model is named and left
    out)."""
    import importlib.util

    import pandas as pd
    from rich.table import Table

    if importlib.util.find_spec("torch") is None:
        console.print("QC demo skipped: PyTorch is not installed (README, 'Set up and run')")
        return
    present = [m for m in models if (m / "config.json").is_file()]
    for missing in (m for m in models if m not in present):
        console.print(f"QC demo: no model in {missing} (--model), left out")
    if not present or not (acdc / "imagesTr").is_dir():
        console.print(f"QC demo skipped: needs a QC model and ACDC images in {acdc} (--model, --acdc)")
        return
    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings

    images, segs, gts = write_qc_demo_data(out_dir / "qc_data", acdc)
    estimates: dict[str, pd.Series] = {}
    true = pd.Series(dtype=float)
    for model in present:
        console.rule(f"GT-free QC with {model.name} on {len(_QC_CASES)} ACDC volumes")
        bench_dir = out_dir / "qc" / model.name
        benchmark_qc(model, images, segs, gts, bench_dir, settings=QcSettings(metrics=("dice",)), progress=True)
        pairs = pd.read_csv(bench_dir / "pairs.csv", dtype={"case": str, "label": str})
        overall = pairs[(pairs.label == "all") & (pairs.metric == "dice")].set_index("case")
        estimates[model.name] = overall["estimate"]
        true = overall["true"]
    if len(present) > 1:  # the models' mean (segqc qc combine), the better estimate on real predictions
        from segqc.qc.combine import combine_qc_folders

        combined, _, _ = combine_qc_folders([out_dir / "qc" / m.name / "qc" for m in present],
                                            out_dir / "qc" / "combined")
        overall = combined[(combined.label == "all") & (combined.metric == "dice")].set_index("case")
        estimates["mean of both" if len(present) == 2 else "mean"] = overall["estimate"]
    table = Table(title="multi-class Dice: estimated without ground truth vs true")
    table.add_column("segmentation")
    for name in estimates:
        table.add_column(name, justify="right")
    table.add_column("true", justify="right")
    for case in true.index:
        table.add_row(case, *(f"{estimates[name][case]:.3f}" for name in estimates), f"{true[case]:.3f}")
    console.print(table)
    console.print(f"QC results (qc.csv, worklist.csv, pgt/ or errors/) in {out_dir / 'qc'}/MODEL/qc"
                  + (f", the models combined in {out_dir / 'qc' / 'combined'}" if len(present) > 1 else ""))


def demo_command(
    out_dir: Path = typer.Option(Path("demo_out"), "-o", "--out", help="Folder for the generated data and results."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated data."),
    models: list[Path] = typer.Option(DEFAULT_MODELS, "--model",
                                      help="QC model(s) for the QC part (repeat; default: the shipped ones)."),
    acdc: Path = typer.Option(DEFAULT_ACDC, "--acdc", help="ACDC dataset folder (imagesTr, labelsTr) for the QC part."),
    hc18: Path = typer.Option(DEFAULT_HC18, "--hc18", help="HC18 dataset folder for the segmentation part."),
    no_qc: bool = typer.Option(False, "--no-qc", help="Leave out the QC part."),
    no_seg: bool = typer.Option(False, "--no-seg", help="Leave out the segmentation part."),
) -> None:
    """Evaluate generated cases (with CC-metrics), QC real cardiac MRI and segment real ultrasound
    with the shipped models.

    The QC part estimates the Dice of good and broken segmentations of two ACDC volumes without
    their ground truth and prints the estimates next to the true values. The segmentation part
    segments three held-out HC18 images, clean and noisy, with both shipped LDSeg models and the
    U-Net, and prints their Dice and LDSeg's uncertainty.

    Example: segqc demo -o demo_out
    """
    from segqc.cli.evaluate import print_summary
    from segqc.evaluation.evaluate import evaluate_folder

    metrics = ("dice", "iou", "precision", "recall", "volume_pred", "volume_gt", "rvd", "hd", "hd95", "assd", "masd",
               "nsd", "pq", "lesion_dice")
    with user_errors():
        folders = write_demo_data(out_dir / "data", seed=seed)
        for name, (pred_dir, gt_dir) in folders.items():
            result = evaluate_folder(pred_dir, gt_dir, out_dir / "evaluation" / name, per_component=True,
                                     metrics=metrics, return_details=True)
            console.rule(f"{name}: {gt_dir}")
            print_summary(result.summary, metrics)
            if name == "lesions":
                rows = result.table[result.table["component"].isna()]
                detection = {r.metric: int(r.value) for r in rows.itertuples() if "components" in r.metric}
                console.print(
                    "{gt_components} lesions: {gt_components_hit} found, {gt_components_missed} missed; "
                    "{pred_components_unmatched} false-positive components".format(**detection)
                )
        console.print(f"results (metrics.csv, summary.json) in {out_dir / 'evaluation'}")
        if not no_qc:
            _qc_demo(out_dir, list(models), acdc)
        if not no_seg:
            _seg_demo(out_dir, hc18)
