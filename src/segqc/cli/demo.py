"""``segqc demo``: generate a multi-lesion case and a multi-class case, evaluate them, print it."""

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


def demo_command(
    out_dir: Path = typer.Option(Path("demo_out"), "-o", "--out", help="Folder for the generated data and results."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated data."),
) -> None:
    """Generate a multi-lesion and a multi-class case, evaluate them (with CC-metrics), print the summary.

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
