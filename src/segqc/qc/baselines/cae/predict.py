"""Loading the autoencoder baseline and generating its (deterministic) pseudo ground truths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segqc.fingerprint.preprocessing import PreprocessingPlan
from segqc.qc.baselines.cae.config import CaeConfig
from segqc.qc.baselines.cae.model import ConvAutoencoder
from segqc.qc.model_api import QcModel
from segqc.training import checkpoint_fits, load_checkpoint


def load(model_dir: str | Path) -> tuple[ConvAutoencoder, dict]:
    """The trained autoencoder (eval mode) and its checkpoint config (``cae``, ``plan``, ``labels``)."""
    config, weights, fingerprint = load_checkpoint(model_dir, method="cae")
    with checkpoint_fits(model_dir, "CAE model"):
        cae_config = CaeConfig.from_dict(config["cae"])
        model = ConvAutoencoder(len(config["labels"]), cae_config)
        model.load_state_dict(weights["autoencoder"])
    model.eval()
    return model, dict(config, fingerprint=fingerprint)


def reconstruct(model: ConvAutoencoder, segs: np.ndarray) -> np.ndarray:
    """Reconstructed label maps ``(B, H, W)`` of segmentations ``(B, H, W)``."""
    n_classes = model.n_classes
    with torch.no_grad():
        target = torch.from_numpy(np.asarray(segs, dtype=np.int64))
        one_hot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).float()
        return model(one_hot).argmax(dim=1).numpy().astype(np.int64)


def load_qc_model(model_dir: str | Path, *, device: str = "cpu") -> QcModel:
    """The CAE as a :class:`QcModel` (samples are identical: the method is deterministic; it
    always runs on the CPU, ``device`` is accepted for the common loader signature)."""
    model, config = load(model_dir)

    def generate(images, segs, ratios, samples, steps, seed):
        pgt = reconstruct(model, segs)
        return np.repeat(pgt[None], samples, axis=0)

    return QcModel(method="cae", plan=PreprocessingPlan.from_dict(config["plan"]),
                   labels=tuple(int(v) for v in config["labels"]), fingerprint=config.get("fingerprint"),
                   generate=generate, batch_size=32)
