"""Galati & Zuluaga (2021) baseline: a deterministic convolutional autoencoder that reconstructs
a segmentation from the segmentation alone; the reconstruction is the pseudo ground truth."""

from segqc.qc.baselines.cae.config import CaeConfig
from segqc.qc.baselines.cae.predict import load, load_qc_model
from segqc.qc.baselines.cae.train import train

__all__ = ["CaeConfig", "load", "load_qc_model", "train"]
