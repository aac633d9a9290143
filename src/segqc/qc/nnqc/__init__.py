"""nnQC: diffusion-generated pseudo ground truths for GT-free quality control (Marciandò et al.).

* :mod:`.config` — :class:`NnqcConfig` and its presets (``tiny``, ``small``, ``paper``).
* :mod:`.model` — the networks (mask VAE-GAN, frozen image encoder E2, Team of Experts, latent
  denoiser) and :class:`NnqcModel` with :meth:`~NnqcModel.generate_pgt`.
* :mod:`.train` — :class:`NnqcTrainingData`, :func:`make_training_data`,
  :func:`build_training_data`, :func:`train` (stages ssl -> vae -> ldm, resumable).
* :mod:`.predict` — :func:`load`, :func:`predict_slices`, :func:`load_qc_model` (for the driver).

The API works on preprocessed slices (images ``(B, C, H, W)`` float32, segmentations ``(B, H, W)``
label values, ratios ``(B,)``) and returns pGT label maps ``(samples, B, H, W)``; the dataset-level
driver (preprocessing, restoring, metrics) is :mod:`segqc.qc.inference`.

Where the paper is silent, this implementation chooses (each is a config field unless noted):

* Latent: C = 2 at 1/4 of the slice size in ``small`` (1/3 in ``paper``, reached by resizing inside
  the bottleneck, see :mod:`.config`; ``paper`` uses 264 px since 256 is not divisible by 3).
* VAE loss: KL summed over latent elements and averaged over the batch, weight 1e-6; generalized
  Dice (MONAI, softmax, background included, squared-volume weights) weight 1; least-squares
  patch-GAN weight 0.01, starting after ``adv_start`` steps, discriminator on one-hot ground truths
  (real) vs softmax reconstructions (fake); perceptual loss only with a local network (no pretrained
  network can be downloaded here), then computed on masks rendered as grey images.
* E2 (UniMedCLIP is not available): a small CNN with an 8 x 8 token grid, pre-trained on the
  training images by masked denoising autoencoding (half the token patches blanked, Gaussian noise,
  flips, intensity jitter; target at 1/4 resolution), then frozen. ``image_encoder="file"`` loads a
  local encoder instead; ``"open_clip"`` is an untested hook that raises a clear error when the
  ``open_clip`` package is missing. Fixed 2D sine-cosine position codes are added to the tokens, so
  attention can choose *where* to look.
* E1: MLP (1 -> h -> h -> q x d, SiLU) on the ratio centred to [-1, 1], giving q = 4 query tokens.
* Fusion: single-head attention, d_k = d, no residual path: c = softmax(QK^T/sqrt(d)) V over the 64
  image tokens, shape (B, q, d). Ablations ``conditioning="position"`` (c = linear(o1)) and
  ``"image"`` (c = projected image tokens). The UNet attends to c with its own cross-attention.
* S_d: the one-hot segmentation area-averaged to the latent size (K channels of class shares;
  ``seg_encoding``). The paper's single channel "rescaled to [0, 1]" (class index / (K - 1),
  ``seg_encoding="index"``) is ambiguous after downsampling: a cell half LV (1.0), half background
  reads as myocardium (0.67).
* Latent scale: 1 / std of the posterior means of all training ground truths; the LDM learns the
  posterior means (not samples).
* Noise schedule: scaled-linear betas 0.00085-0.012 (LDM's); half of each batch draws t from the
  noisier half of the schedule (``high_t_fraction``), ε-MSE unchanged.
* DDIM: η = 0, "trailing" timesteps (999, 949, ..., 49 for 20 steps) implemented here — MONAI
  1.6's ``DDIMScheduler`` spaces timesteps with ``linspace`` but steps back by ``T // steps``, so
  its updates jump between noise levels that do not match; no clipping of x0.
* Training data: each ground-truth slice with foreground is degraded 5 times, one per nnQC Dice
  bin (multi-class Dice, :mod:`segqc.degrade`); at each LDM step 10 % of the inputs are the clean
  ground truth and 5 % an empty segmentation. No augmentation in the VAE and LDM stages (the
  latents and image tokens are computed once; flips would also make anatomy implausible).
* Optimisation: Adam; ``small`` lr 5e-4 (SSL 1e-3), batches 8 (SSL 16); ``paper`` lr 1e-4, batch 32.
* Denoiser input (segqc addition, ``image_input="unshuffle"``, default): z_t, S_d and the
  preprocessed slice rearranged space-to-depth to the latent grid (C_img x f^2 channels). The
  paper's input (z_t and S_d only, ``image_input="none"``) let the pGT copy the input
  segmentation: the image reached the denoiser only through the few ToE tokens.
* Inference: ``samples`` pGTs per slice (``small``: 4 of 5 DDIM steps); each is the argmax of the
  decoder; the QC driver fuses them by per-voxel majority.
"""

from __future__ import annotations

from segqc.qc.nnqc.config import PRESETS, NnqcConfig
from segqc.qc.nnqc.model import NnqcModel
from segqc.qc.nnqc.predict import load, load_qc_model, predict_slices
from segqc.qc.nnqc.train import NnqcTrainingData, build_training_data, make_training_data, train

__all__ = [
    "PRESETS",
    "NnqcConfig",
    "NnqcModel",
    "NnqcTrainingData",
    "build_training_data",
    "load",
    "load_qc_model",
    "make_training_data",
    "predict_slices",
    "train",
]
