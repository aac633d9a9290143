"""``segqc demo``: generate a multi-lesion case and a multi-class case and evaluate them; QC real
cardiac MRI with the shipped QC models; segment real fetal head ultrasound, clean and noisy, with
the shipped segmentation models. Each real-data part is skipped with one line without its data.
The data and numbers come from :mod:`segqc.demo`; this module prints them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from segqc.cli._common import console, user_errors
from segqc.demo import DEFAULT_ACDC, DEFAULT_HC18, DEFAULT_MODELS, QC_CASES, SEG_CASES, SEG_MODELS, SEG_NOISE
from segqc.errors import InputError


def _check_data(folder: Path, cases: Sequence[str], option: str, *, given: bool) -> None:
    """:class:`InputError` for a data folder the user named (``given``) that is not there, and for
    one with images that lacks a case the demo uses (e.g. another dataset); the default folder
    missing altogether only skips that part of the demo."""
    images = folder / "imagesTr"
    if not images.is_dir():
        if given:
            raise InputError(f"{option}: no imagesTr/ folder here; give the dataset's folder", folder)
        return
    for case in cases:
        for needed in (images / f"{case}_0000.nii.gz", folder / "labelsTr" / f"{case}.nii.gz"):
            if not needed.is_file():
                raise InputError(f"{option}: {needed.relative_to(folder)} is missing; the demo uses the cases "
                                 f"{', '.join(cases)}", folder)


def _seg_demo(out_dir: Path, hc18: Path) -> None:
    """Segmentation with uncertainty: the shipped HC18 models on held-out images, clean and noisy
    (LDSeg with 8 samples); Dice against the ground truth and LDSeg's case uncertainty (skipped
    with one line when the data, the models or PyTorch are not there)."""
    import importlib.util

    from rich.table import Table

    present = [m for m in SEG_MODELS if (m / "config.json").is_file()]
    if importlib.util.find_spec("torch") is None or not present or not (hc18 / "imagesTr").is_dir():
        console.print(f"segmentation demo skipped: needs PyTorch, the shipped HC18 models and the HC18 images in "
                      f"{hc18} (--hc18)")
        return
    from segqc.demo import segment_demo

    console.rule(f"segmentation with uncertainty: {len(SEG_CASES)} held-out fetal head ultrasound images, "
                 f"clean and with noise of {SEG_NOISE} x the intensity range")
    scores, uncertainty, failed = segment_demo(out_dir, hc18, present)
    for errors in failed.values():
        for case, error in errors.items():
            console.print(f"error: {case}: {error}")
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


def _qc_demo(out_dir: Path, models: list[Path], acdc: Path) -> None:
    """QC of real cardiac MRI with the shipped models, estimated against true Dice (skipped with
    one line when no model, the data or PyTorch is not there; a missing model is named and left
    out)."""
    import importlib.util

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
    from segqc.demo import qc_demo

    console.rule(f"GT-free QC with {', '.join(m.name for m in present)} on {len(QC_CASES)} ACDC volumes")
    estimates, true = qc_demo(out_dir, acdc, present)
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
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated data."),
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
    from segqc.demo import write_demo_data
    from segqc.evaluation.evaluate import evaluate_folder

    metrics = ("dice", "iou", "precision", "recall", "volume_pred", "volume_gt", "rvd", "hd", "hd95", "assd", "masd",
               "nsd", "pq", "lesion_dice")
    with user_errors():
        if not no_qc:  # a named data folder that is wrong is said before anything runs
            _check_data(acdc, QC_CASES, "--acdc", given=acdc != DEFAULT_ACDC)
        if not no_seg:
            _check_data(hc18, SEG_CASES, "--hc18", given=hc18 != DEFAULT_HC18)
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
