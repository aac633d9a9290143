"""Loading a trained QCResUNet and assessing preprocessed volumes.

:func:`load` reads a model directory written by :func:`segqc.qc.qcresunet.train.train`
(another method's directory, a missing or corrupt file, or weights that do not fit the saved
config raise :class:`~segqc.training.CheckpointError`). :func:`assess_volume` maps arrays to
arrays; :func:`load_qc_model` wraps the model for the dataset-level QC driver
(:mod:`segqc.qc.inference`), which writes ``qc.csv`` (Dice and NSD per class and over all
classes), ``errors/CASE.nii.gz`` and ``qc_slices.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segqc.errors import InputError
from segqc.fingerprint.preprocessing import PreprocessingPlan
from segqc.qc.qcresunet.config import TEST_FLIPS, QcResUNetConfig
from segqc.qc.qcresunet.model import QcResUNet
from segqc.qc.qcresunet.train import METHOD, QcClass, build_network, query_channels
from segqc.training import CheckpointError, checkpoint_fits, load_checkpoint, select_device
from segqc.training.precision import autocast, resolve_precision

__all__ = ["LoadedQcResUNet", "assess_volume", "load", "load_qc_model", "network_inputs"]


@dataclass
class LoadedQcResUNet:
    """The ensemble members (eval mode), the config, label values (0 first), the classes it
    assesses, the plan, the fingerprint and the spatial dimensions of a trained QCResUNet, and
    the precision its forward passes run at here (the config's, resolved for the device:
    ``small`` runs in bfloat16 where the hardware has it, as its read-out was fitted)."""

    members: list[QcResUNet]
    config: QcResUNetConfig
    labels: tuple[int, ...]
    classes: tuple[QcClass, ...]
    plan: PreprocessingPlan
    fingerprint: dict[str, Any] | None
    spatial_dims: int
    precision: str = "fp32"


def load(model_dir: str | Path, *, device: str = "cpu") -> LoadedQcResUNet:
    """The trained QCResUNet of a model directory, on ``device``."""
    saved, weights, fingerprint = load_checkpoint(model_dir, method=METHOD)
    dev = select_device(device)
    with checkpoint_fits(model_dir, "QCResUNet model"):
        # Models saved before the read-out (or its correction) existed have none.
        config = QcResUNetConfig.from_dict({"readout_per_case": 0, "readout_fourier": 0, "readout_surface": False,
                                            **saved["qcresunet"]})
        labels = tuple(int(v) for v in saved["labels"])
        if "classes" in saved:
            classes = tuple((str(c[0]), str(c[1]), tuple(int(v) for v in c[2])) for c in saved["classes"])
        else:  # saved before classes could be regions: every label value, named as in the fingerprint
            names = (fingerprint or {}).get("labels") or {}
            classes = tuple((str(v), str(names.get(str(v), v)), (v,)) for v in labels if v != 0)
        spatial_dims = int(saved["spatial_dims"])
        precision = resolve_precision(config.precision, dev)
        members = []
        for name in sorted(weights, key=lambda n: int(n.removeprefix("member"))):
            network = build_network(config, spatial_dims=spatial_dims, image_channels=int(saved["image_channels"]),
                                    n_classes=len(classes), strides=saved["strides"], precision=precision,
                                    kernels=saved.get("kernels"))  # saved before kernels could differ: None
            state = dict(weights[name])
            state.setdefault("sem_threshold", network.sem_threshold)  # saved before thresholds were calibrated
            state.setdefault("outside_errors", network.outside_errors)  # saved before that was calibrated
            network.load_state_dict(state)
            members.append(network.eval().to(dev))
        plan = PreprocessingPlan.from_dict(saved["plan"])
    if not members:
        raise CheckpointError(f"{model_dir}: the checkpoint holds no QCResUNet weights")
    return LoadedQcResUNet(members, config, labels, classes, plan, fingerprint, spatial_dims, precision)


def network_inputs(model: LoadedQcResUNet, images: np.ndarray, segs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's ``image`` and one-hot ``query`` for one preprocessed volume (``images``
    ``(n, C, S, S)`` float32, ``segs`` ``(n, S, S)`` label values), on the model's device: 2D
    models take every slice on its own, 3D ones the whole volume with the slice axis zero-padded
    to the network's size multiple. Label values the model does not know raise :class:`InputError`."""
    images = np.asarray(images, dtype=np.float32)
    segs = np.asarray(segs)
    if images.ndim != 4 or segs.ndim != 3 or images.shape[0] != segs.shape[0]:
        raise InputError(f"need images (n, C, H, W) and segs (n, H, W); got {images.shape} and {segs.shape}")
    unknown = sorted(set(np.unique(segs).tolist()) - set(model.labels))
    if unknown:
        raise InputError(f"label values {unknown} were not in the model's training labels {list(model.labels)}")
    n = segs.shape[0]
    first = model.members[0]
    device = next(first.parameters()).device
    if model.spatial_dims == 2:
        image = torch.from_numpy(images).to(device)  # every slice on its own
        seg = torch.from_numpy(segs.astype(np.int64)).to(device)
    else:
        depth = -(-n // first.size_multiple[0]) * first.size_multiple[0]
        image_np = np.zeros((1, images.shape[1], depth, *images.shape[2:]), dtype=np.float32)
        image_np[0, :, :n] = np.moveaxis(images, 0, 1)
        seg_np = np.zeros((1, depth, *segs.shape[1:]), dtype=np.int64)
        seg_np[0, :n] = segs
        image, seg = torch.from_numpy(image_np).to(device), torch.from_numpy(seg_np).to(device)
    return image, query_channels(seg, model.classes)


def assess_volume(model: LoadedQcResUNet, images: np.ndarray, segs: np.ndarray, *,
                  passes: int | None = None) -> dict[str, np.ndarray | None]:
    """Every member's estimates of one preprocessed volume: ``images`` ``(n, C, S, S)`` float32,
    ``segs`` ``(n, S, S)`` label values -> ``dice`` and ``nsd`` ``(M * P, K+1)`` (one row per
    member and pass, member-major; index 0: all classes, then the model's ``classes``),
    ``errors`` ``(M, K, n, S, S)`` error probabilities, each member's mean over its passes (None
    without a decoder), ``error_threshold`` ``(M, K)`` each member's calibrated threshold of
    those probabilities, ``outside_errors`` ``(K,)`` whether each class's voxels outside the
    window are erroneous (most members say so). ``passes`` (P: 1, 2 or 4; default the config's
    ``test_flips``): forward passes per member on the inputs mirrored in-plane (:data:`TEST_FLIPS`),
    their error maps mirrored back; at ``model.precision`` on :func:`network_inputs`, the padded
    slices cropped back."""
    passes = model.config.test_flips if passes is None else passes
    if passes not in TEST_FLIPS:
        raise InputError(f"QCResUNet runs {', '.join(map(str, TEST_FLIPS))} mirrored passes per volume, not {passes}")
    image, query = network_inputs(model, images, segs)
    n = np.asarray(segs).shape[0]
    device = image.device
    dice: list[np.ndarray] = []
    nsd: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    with torch.no_grad(), autocast(device, model.precision):
        for member in model.members:
            probs = []
            for axes in TEST_FLIPS[passes]:
                output = member(_mirror(image, axes), _mirror(query, axes)).float()
                if output.dice is not None and output.nsd is not None:
                    dice.append(output.dice.mean(dim=0).cpu().numpy())
                    nsd.append(output.nsd.mean(dim=0).cpu().numpy())
                if output.sem_logits is not None:
                    probs.append(_mirror(torch.sigmoid(output.sem_logits), axes).cpu().numpy())
            if probs:
                mean = np.mean(probs, axis=0)
                errors.append(np.moveaxis(mean, 0, 1) if model.spatial_dims == 2 else mean[0, :, :n])
    rows, width = len(model.members) * passes, len(model.classes) + 1
    return {"dice": np.stack(dice) if dice else np.full((rows, width), np.nan),
            "nsd": np.stack(nsd) if nsd else np.full((rows, width), np.nan),
            "errors": np.stack(errors) if errors else None,
            "error_threshold": torch.stack([m.sem_threshold for m in model.members]).cpu().numpy(),
            "outside_errors": torch.stack([m.outside_errors for m in model.members]).mean(dim=0).cpu().numpy() > 0.5}


def _mirror(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    return torch.flip(tensor, axes) if axes else tensor


def load_qc_model(model_dir: str | Path, *, device: str = "cpu"):
    """The model (on ``device``) as a quality regressor for the QC driver
    (:class:`segqc.qc.model_api.QcModel` with ``assess``)."""
    from segqc.qc.model_api import Assessment, QcModel

    model = load(model_dir, device=device)

    def assess(images: np.ndarray, segs: np.ndarray, ratios: np.ndarray, samples: int | None) -> Assessment:
        result = assess_volume(model, images, segs, passes=samples)
        return Assessment(dice=np.asarray(result["dice"]), nsd=np.asarray(result["nsd"]), errors=result["errors"],
                          error_threshold=result["error_threshold"], outside_errors=result["outside_errors"],
                          error_fusion=model.config.ensemble_errors)

    metrics = ("dice", "nsd") if model.config.regression else ()
    return QcModel(method=METHOD, plan=model.plan, labels=model.labels, fingerprint=model.fingerprint, assess=assess,
                   metrics=metrics, tolerance_mm=model.config.tolerance_mm, classes=model.classes,
                   default_samples=model.config.test_flips, sample_choices=tuple(TEST_FLIPS),
                   spatial_dims=model.spatial_dims)
