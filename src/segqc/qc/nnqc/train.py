"""Training nnQC: self-supervised image encoder (E2) -> mask VAE-GAN -> latent diffusion + ToE.

Data. :class:`NnqcTrainingData` holds preprocessed 2D slices in memory: images ``(N, C, H, W)``,
ground truths ``(N, H, W)`` (label values), slice ratios ``(N,)``, and imperfect segmentations
``(M, H, W)`` each pointing to its slice. :func:`make_training_data` degrades every ground-truth
slice ``degraded_per_slice`` times with :func:`segqc.degrade.targeting.degrade_to_bin`, spread
evenly over the paper's five Dice bins ([0.05, 0.10), [0.10, 0.25), [0.25, 0.50), [0.50, 0.75),
[0.75, 0.95]; multi-class Dice; holes, erosion, false positives, class collapse and swap, plus the
SegGen moves of :mod:`segqc.degrade`). :func:`build_training_data` does the same from an nnU-Net
folder (fingerprint -> plan -> preprocessing -> slices with foreground). Extra (image, imperfect
segmentation, ground truth) triples, e.g. from a model zoo, join with
:meth:`NnqcTrainingData.with_extra`; :func:`extra_segmentation_slices` makes them from a folder of
segmentations of the training cases, preprocessed as at inference (``extra_seg_dirs`` of
:func:`build_training_data`, ``segqc qc train nnqc --extra-segs``).

Stages (each on its own Adam optimizers; batches and noise of step ``k`` come from generators
seeded by ``(seed, stage, k)``, so a resumed stage draws exactly what an uninterrupted one would):

1. ``ssl`` — E2 (a small CNN with a token-grid output) is pre-trained by masked denoising
   autoencoding of the training images: a random half of the ``token_grid x token_grid`` patches
   is blanked, Gaussian noise (``ssl_noise``) is added, random flips and an intensity jitter
   (x(1+a)+b, a, b ~ U(-0.1, 0.1)) vary the input, and a light decoder must restore the clean
   (jittered) image, area-averaged to 1/4 of the slice size, from the pooled token grid alone
   (MSE). E2 is then frozen. Skipped with
   ``image_encoder`` = "file" / "open_clip" (pre-trained weights).
2. ``vae`` — the mask autoencoder on one-hot ground truths: ``dice_weight`` x generalized Dice
   (MONAI, softmax of the logits, background included) + ``kl_weight`` x KL (summed over latent
   elements, mean over the batch) + from step ``adv_start`` on ``adv_weight`` x least-squares
   patch-GAN loss (MONAI ``PatchDiscriminator`` sees one-hot ground truths as real and softmax
   reconstructions as fake) + ``perceptual_weight`` x a perceptual loss if
   ``perceptual_network_path`` is given (default none: no pre-trained perceptual network can be
   downloaded here). The perceptual network is any segqc ``ConvTokenEncoder`` saved as safetensors
   (e.g. the ``image_encoder.safetensors`` of a trained nnQC model): both masks are rendered as
   grey images (sum of class probability x class index / (K - 1)) and the LPIPS-style distance of
   its channel-normalised feature maps is used.
3. ``ldm`` — the latent scale is set to 1 / std of the ground-truth latents (posterior means of
   all training slices), latents, image tokens and S_d are computed once (the encoders are
   frozen and there is no augmentation), then the denoiser and the ToE (E1 and the fusion) learn
   ε-prediction (MSE) with DDPM noise at t ~ U{0..T-1}. The input segmentation is a degraded one
   (uniform over all degraded maps, hence balanced over the bins), the clean ground truth with
   ``clean_fraction`` (so that a correct segmentation is reproduced) or an empty map with
   ``empty_fraction`` (the paper's "completely missing" segmentations).

Output folder: ``stages/<stage>/`` (resumable state: weights, optimizers, step, loss history;
saved every ``checkpoint_every`` steps and when the stage ends), ``run.json`` (settings and a
summary of the data; a rerun with other settings is refused), and the final model ``model/``
(:func:`segqc.training.save_checkpoint`, method ``"nnqc"``: ``autoencoder``, ``image_encoder``,
``toe``, ``denoiser``, ``discriminator`` safetensors; ``config.json`` holds the nnQC config, the
labels, image channels, latent scale and the preprocessing plan; ``metrics.json`` the per-step
losses and times). Rerunning ``train`` on the same folder continues where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segqc.errors import InputError
from segqc.execution import map_cases
from segqc.fingerprint import DatasetFingerprint, PreprocessingPlan, compute_fingerprint, plan_from_fingerprint
from segqc.fingerprint.preprocessing import (
    OUTSIDE_WINDOW_SHARE,
    outside_window_share,
    preprocess_images,
    read_case_images,
    read_case_label,
    transform_label,
    window_extent_mm,
    window_mask,
)
from segqc.io.datasets import Dataset
from segqc.io.geometry import check_same_geometry
from segqc.io.images import read_label_map
from segqc.nn import ConvTokenEncoder, TokenGridDecoder
from segqc.nn.losses import gaussian_kl
from segqc.qc.nnqc.config import NnqcConfig
from segqc.qc.nnqc.model import NnqcModel, build_discriminator, make_scheduler
from segqc.training import save_checkpoint
from segqc.training.cases import NO_FOREGROUND, extra_segmentation_files
from segqc.training.stages import Stage, arrays_crc32, run_stage, start_run, step_generators

__all__ = [
    "METHOD",
    "STAGES",
    "NnqcTrainingData",
    "build_training_data",
    "extra_segmentation_slices",
    "make_training_data",
    "train",
]

#: ``method`` of nnQC checkpoints (:func:`segqc.training.load_checkpoint`).
METHOD = "nnqc"
STAGES = ("ssl", "vae", "ldm")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class NnqcTrainingData:
    """Preprocessed training slices (module docstring). Arrays are not copied.

    ``images`` ``(N, C, H, W)`` float32; ``gt`` ``(N, H, W)`` integer label values; ``ratios``
    ``(N,)`` in [0, 1]; ``segs`` ``(M, H, W)`` imperfect segmentations (label values) of slice
    ``seg_source[m]`` with multi-class Dice ``seg_dice[m]`` (NaN if unknown); ``labels``: the label
    values, background 0 first; ``spacing``: in-plane spacing (mm) of the slices; ``plan`` and
    ``fingerprint``: how the slices were made (saved with the model; the QC driver needs the plan).
    """

    images: np.ndarray
    gt: np.ndarray
    ratios: np.ndarray
    segs: np.ndarray
    seg_source: np.ndarray
    labels: tuple[int, ...]
    spacing: tuple[float, float] = (1.0, 1.0)
    seg_dice: np.ndarray | None = None
    plan: PreprocessingPlan | None = None
    fingerprint: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.gt = np.asarray(self.gt)
        self.ratios = np.asarray(self.ratios, dtype=np.float64).reshape(-1)
        self.segs = np.asarray(self.segs)
        self.seg_source = np.asarray(self.seg_source, dtype=np.int64).reshape(-1)
        self.labels = tuple(int(v) for v in self.labels)
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        if self.seg_dice is None:
            self.seg_dice = np.full(self.seg_source.shape, np.nan)
        self.seg_dice = np.asarray(self.seg_dice, dtype=np.float64).reshape(-1)
        n = self.images.shape[0] if self.images.ndim == 4 else -1
        if self.images.ndim != 4 or self.images.shape[2] != self.images.shape[3]:
            raise InputError(f"images must be (N, C, H, H) slices, got shape {self.images.shape}")
        size = self.images.shape[-1]
        if n < 1:
            raise InputError("the training data holds no slice")
        if self.gt.shape != (n, size, size) or self.gt.dtype.kind not in "iub":
            raise InputError(f"gt must be integer label maps of shape {(n, size, size)}, "
                             f"got {self.gt.shape} {self.gt.dtype}")
        if self.ratios.shape != (n,) or not np.all((self.ratios >= 0) & (self.ratios <= 1)):
            raise InputError(f"ratios must be {n} values in [0, 1]")
        if self.segs.ndim != 3 or self.segs.shape[1:] != (size, size) or self.segs.dtype.kind not in "iub":
            raise InputError(f"segs must be integer label maps (M, {size}, {size}), "
                             f"got {self.segs.shape} {self.segs.dtype}")
        if self.seg_source.shape != (self.segs.shape[0],) or self.seg_dice.shape != self.seg_source.shape:
            raise InputError("seg_source and seg_dice need one entry per imperfect segmentation")
        if self.seg_source.size and (self.seg_source.min() < 0 or self.seg_source.max() >= n):
            raise InputError("seg_source points outside the slices")
        if len(self.labels) < 2 or self.labels[0] != 0 or len(set(self.labels)) != len(self.labels):
            raise InputError("labels must list background 0 first and at least one foreground label, "
                             f"got {self.labels}")
        for name, array in (("gt", self.gt), ("segs", self.segs)):
            unknown = sorted(set(np.unique(array).tolist()) - set(self.labels))
            if unknown:
                raise InputError(f"{name} holds label value(s) {unknown} outside labels {list(self.labels)}")
        if not np.isfinite(self.images).all():
            raise InputError("images contain NaN or infinite values")
        if self.plan is not None and self.plan.size != size:
            raise InputError(f"the plan makes {self.plan.size} px slices but the slices have {size} px")

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_segs(self) -> int:
        return int(self.segs.shape[0])

    @property
    def image_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def with_extra(self, images: np.ndarray, segs: np.ndarray, gt: np.ndarray, ratios: np.ndarray) -> NnqcTrainingData:
        """A copy with extra (image, imperfect segmentation, ground truth) triples appended, e.g.
        predictions of a model zoo: each becomes a slice (for all stages) with its segmentation."""
        images = np.asarray(images, dtype=np.float32)
        segs, gt = np.asarray(segs), np.asarray(gt)
        ratios = np.asarray(ratios, dtype=np.float64).reshape(-1)
        k = images.shape[0]
        if segs.shape[0] != k or gt.shape[0] != k or ratios.shape[0] != k:
            raise InputError(f"extra triples need as many segmentations, ground truths and ratios as images ({k})")
        from segqc.metrics.multiclass import multiclass_dice

        dice = np.array([multiclass_dice(s, g).value for s, g in zip(segs, gt)], dtype=np.float64)
        return NnqcTrainingData(
            images=np.concatenate([self.images, images]), gt=np.concatenate([self.gt, gt.astype(self.gt.dtype)]),
            ratios=np.concatenate([self.ratios, ratios]),
            segs=np.concatenate([self.segs, segs.astype(self.segs.dtype)]),
            seg_source=np.concatenate([self.seg_source, self.n_slices + np.arange(k)]), labels=self.labels,
            spacing=self.spacing, seg_dice=np.concatenate([self.seg_dice, dice]), plan=self.plan,
            fingerprint=self.fingerprint)

    def summary(self) -> dict[str, Any]:
        """Sizes, labels and a checksum of the arrays (recorded in ``run.json``)."""
        crc = arrays_crc32((self.images, self.gt, self.ratios, self.segs, self.seg_source))
        assert self.seg_dice is not None, "__post_init__ fills seg_dice"
        finite = self.seg_dice[np.isfinite(self.seg_dice)]
        return {"n_slices": self.n_slices, "n_segs": self.n_segs, "size": self.size,
                "image_channels": self.image_channels, "labels": list(self.labels), "spacing": list(self.spacing),
                "seg_dice_mean": float(finite.mean()) if finite.size else None, "crc32": crc}


def _degrade_slice(item: tuple[int, np.ndarray], *, n: int, spacing: tuple[float, float], labels: tuple[int, ...],
                   seed: int) -> list[tuple[np.ndarray, float]]:
    from segqc.degrade.targeting import NNQC_BINS, assign_bins, degrade_to_bin

    index, gt = item
    if not gt.any():
        return []
    rng = np.random.default_rng([seed, 7, index])
    out = []
    for b in assign_bins(n, len(NNQC_BINS), rng):
        result = degrade_to_bin(gt, spacing, NNQC_BINS[b], rng, labels=labels[1:])
        out.append((result.label.astype(gt.dtype), result.achieved_dice))
    return out


def make_training_data(images: np.ndarray, gt: np.ndarray, ratios: np.ndarray, *, labels: Sequence[int],
                       spacing: Sequence[float], config: NnqcConfig, seed: int = 0,
                       plan: PreprocessingPlan | None = None, fingerprint: Mapping[str, Any] | None = None,
                       jobs: int = 1, progress: bool = False) -> NnqcTrainingData:
    """Training data from preprocessed slices: every slice with foreground is degraded
    ``config.degraded_per_slice`` times, evenly over the five nnQC Dice bins (deterministic given
    ``seed``, whatever ``jobs``). ``labels``: the dataset's label values (0 first)."""
    gt = np.asarray(gt)
    labels = tuple(int(v) for v in labels)
    spacing2 = (float(spacing[0]), float(spacing[1]))
    function = partial(_degrade_slice, n=config.degraded_per_slice, spacing=spacing2, labels=labels, seed=seed)
    results: dict[int, list] = {}
    for (index, _), result in map_cases(function, list(enumerate(gt)), jobs=jobs, description="degrade",
                                        progress=progress):
        if isinstance(result, Exception):
            raise result
        results[index] = result
    segs, source, dice = [], [], []
    for index in range(len(gt)):
        for label, value in results[index]:
            segs.append(label)
            source.append(index)
            dice.append(value)
    segs_array = np.stack(segs) if segs else np.zeros((0, *gt.shape[1:]), dtype=gt.dtype)
    return NnqcTrainingData(images=images, gt=gt, ratios=ratios, segs=segs_array, seg_source=np.array(source),
                            labels=labels, spacing=spacing2, seg_dice=np.array(dice), plan=plan,
                            fingerprint=fingerprint)


def build_training_data(dataset_dir: str | Path, cases: Sequence[str] | None, config: NnqcConfig, seed: int = 0, *,
                        fingerprint: DatasetFingerprint | None = None, plan: PreprocessingPlan | None = None,
                        extra_seg_dirs: Sequence[str | Path] = (), jobs: int = 1,
                        progress: bool = False, log: Callable[[str], None] | None = None) -> NnqcTrainingData:
    """Preprocess ``cases`` (default: all) of an nnU-Net folder and make training data.

    The fingerprint (default: computed on ``cases``) gives the plan (``plan_from_fingerprint``
    with ``size = config.size``) and the labels (named in ``dataset.json`` or present). Every
    axial slice whose ground truth has foreground is kept with its slice ratio, then degraded
    (:func:`make_training_data`). ``extra_seg_dirs``: folders of real imperfect segmentations
    of these cases (e.g. ``segqc zoo predict`` or ``segqc degrade`` outputs:
    :func:`segqc.training.cases.extra_segmentation_files`) added with
    :func:`extra_segmentation_slices`. Raises :class:`InputError` for unknown cases, unreadable
    files, an extra folder without a segmentation of ``cases`` (before anything is degraded) or
    ground truths without foreground. ``log``: told, when more than 1 % of some ground truths'
    foreground lies beyond the plan's window (:func:`window_cut_note`), how many and how much.
    """
    dataset = Dataset.open(dataset_dir)
    root, image_files, label_files = dataset.root, dataset.image_files, dataset.label_files
    cases = dataset.select(cases)
    # every extra folder must add segmentations of training cases (checked before the minutes of degradation below)
    extras = [(folder, extra_segmentation_files(folder, cases, file_ending=dataset.info.file_ending))
              for folder in extra_seg_dirs]
    if fingerprint is None:
        fingerprint = compute_fingerprint(root, cases=cases)
    if plan is None:
        plan = plan_from_fingerprint(fingerprint, size=config.size, field_of_view=config.field_of_view)
    if plan.size != config.size:
        raise InputError(f"the plan makes {plan.size} px slices but the config needs {config.size}")
    labels = tuple(sorted(set(fingerprint.labels) | set(fingerprint.label_values_present) | {0}))
    images, gts, ratios = [], [], []
    shares: dict[str, float] = {}
    for case in cases:
        case_images = read_case_images(list(image_files[case]))
        truth = read_case_label(label_files[case], case_images[0])
        prepared = preprocess_images(case_images, plan, label=truth)
        assert prepared.label is not None
        if log is not None:
            shares[case] = outside_window_share(truth.array, window_mask(prepared.transform))
        for image, label, ratio in prepared.slices():
            if label is not None and label.any():
                images.append(image)
                gts.append(label)
                ratios.append(ratio)
    if not images:
        raise InputError(NO_FOREGROUND, root)
    note = window_cut_note(shares, plan, config.field_of_view) if log is not None else None
    if log is not None and note:
        log(note)
    data = make_training_data(np.stack(images), np.stack(gts), np.array(ratios), labels=labels,
                              spacing=plan.target_spacing, config=config, seed=seed, plan=plan,
                              fingerprint=fingerprint.to_dict(), jobs=jobs, progress=progress)
    for folder, files in extras:
        data = data.with_extra(*_extra_slices(dataset, files, folder, plan, labels=labels))
    return data


def window_cut_note(shares: Mapping[str, float], plan: PreprocessingPlan,
                    field_of_view: str = "spacing") -> str | None:
    """A warning line when more than :data:`~segqc.fingerprint.preprocessing.OUTSIDE_WINDOW_SHARE` of some
    ground truths' foreground lies beyond the plan's window (``shares``: case -> share,
    :func:`~segqc.fingerprint.preprocessing.outside_window_share`), else None: the model then
    learns cut shapes and its pGTs are background there at prediction. The line names the wider
    setting: ``field_of_view=foreground`` where the config's ``field_of_view`` is ``spacing``,
    else a width in mm (either at the same cost; a larger ``size`` widens it at more)."""
    cut = {case: share for case, share in shares.items() if share > OUTSIDE_WINDOW_SHARE}
    if not cut:
        return None
    worst = max(cut, key=lambda case: cut[case])
    wider = ("--set field_of_view=foreground (or a width in mm)" if field_of_view == "spacing"
             else "a wider --set field_of_view (a width in mm)")
    return (f"warning: {len(cut)} of {len(shares)} training ground truths have more than "
            f"{100 * OUTSIDE_WINDOW_SHARE:g} % of their foreground outside the {window_extent_mm(plan)} mm window the "
            f"model sees (most: {100 * cut[worst]:.2g} % of {worst}); their pGTs will be cut there: {wider} sees the "
            "whole structure")


def extra_segmentation_slices(dataset_dir: str | Path, cases: Sequence[str], seg_dir: str | Path,
                              plan: PreprocessingPlan, *, labels: Sequence[int]
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training slices from real imperfect segmentations: ``(images (K, C, H, W), segs (K, H, W),
    ground truths (K, H, W), slice ratios (K,))`` for :meth:`NnqcTrainingData.with_extra`.

    ``seg_dir`` holds segmentations of some of ``cases``, read as every QC training reads its
    extra folders (:func:`segqc.training.cases.extra_segmentation_files`: any ending, the
    dataset's ``file_ending`` where a case has two files, a ``segqc degrade`` manifest with
    several per case; files of other cases, e.g. held-out patients, are ignored; cases without
    a file are skipped). Each segmentation is preprocessed
    as the QC driver does at inference — the crop window centred on the segmentation's largest
    component — and its ground truth is put through the same transform. Slices where the
    segmentation or the ground truth has foreground are kept (so false positives on slices
    without the organ are learnt too). Raises :class:`InputError` naming the file for unreadable
    files, other grids than the image, label values outside ``labels``, or a folder holding no
    segmentation of ``cases``.
    """
    dataset = Dataset.open(dataset_dir)
    files = extra_segmentation_files(seg_dir, cases, file_ending=dataset.info.file_ending)
    return _extra_slices(dataset, files, seg_dir, plan, labels=labels)


def _extra_slices(dataset: Dataset, files: Sequence[tuple[str, Path]], folder: str | Path, plan: PreprocessingPlan,
                  *, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`extra_segmentation_slices` of the ``(case, file)`` pairs of ``folder``."""
    image_files, label_files = dataset.image_files, dataset.label_files
    allowed = set(int(v) for v in labels)
    images, segs, gts, ratios = [], [], [], []
    truth, truth_case, case_images = None, None, None
    for case, seg_file in files:
        if truth is None or case != truth_case:  # a case's files are adjacent: its images and truth are read once
            truth, truth_case = read_label_map(label_files[case]), case
            case_images = read_case_images(list(image_files[case]))
        assert case_images is not None
        prepared = preprocess_images(case_images, plan, label_path=seg_file)
        check_same_geometry(prepared.transform.original_geometry, truth.geometry, pred_path=seg_file,
                            gt_path=truth.path)
        seg = prepared.required_label()
        unknown = sorted(set(np.unique(seg).tolist()) - allowed)  # ground truths made `labels`
        if unknown:
            raise InputError(f"label value(s) {unknown} outside the dataset's labels {sorted(allowed)}", seg_file)
        gt = transform_label(truth.array, prepared.transform)
        for k in range(prepared.n_slices):
            if gt[..., k].any() or seg[..., k].any():
                images.append(prepared.image[..., k])
                segs.append(seg[..., k])
                gts.append(gt[..., k])
                ratios.append(prepared.slice_ratios[k])
    if not images:
        raise InputError("no slice with foreground in these segmentations or their ground truths", folder)
    return np.stack(images), np.stack(segs), np.stack(gts), np.array(ratios)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _generator(seed: int, stage: str, step: int) -> tuple[np.random.Generator, torch.Generator]:
    return step_generators(seed, STAGES.index(stage) + 1, step)


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Perceptual(nn.Module):
    """LPIPS-style distance of a frozen segqc ConvTokenEncoder's feature maps between two masks
    rendered as grey images (class probability x class index / (K - 1), summed)."""

    ramp: torch.Tensor  # buffer

    def __init__(self, path: str, n_classes: int) -> None:
        super().__init__()
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            weights = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise InputError(f"cannot read the perceptual network ({str(error).splitlines()[0]})", path) from None
        convs = sorted((k for k in weights if k.startswith("stages.") and k.endswith(".0.weight")),
                       key=lambda k: int(k.split(".")[1]))
        if not convs:
            raise InputError("not a segqc ConvTokenEncoder (no stages.*.0.weight tensors)", path)
        channels = [int(weights[k].shape[0]) for k in convs]
        in_channels = int(weights[convs[0]].shape[1])
        grid = 1
        self.net = ConvTokenEncoder(in_channels, channels, grid=grid, norm_groups=8)
        try:
            self.net.load_state_dict(weights)
        except RuntimeError as error:
            raise InputError(f"perceptual network does not match a ConvTokenEncoder ({str(error).splitlines()[0]})",
                             path) from None
        self.net.requires_grad_(False).eval()
        self.register_buffer("ramp", torch.arange(n_classes, dtype=torch.float32).view(1, -1, 1, 1) / (n_classes - 1))
        self.in_channels = in_channels

    def forward(self, probs: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        a = (probs * self.ramp).sum(1, keepdim=True).repeat(1, self.in_channels, 1, 1)
        b = (one_hot * self.ramp).sum(1, keepdim=True).repeat(1, self.in_channels, 1, 1)
        loss = probs.new_zeros(())
        for fa, fb in zip(self.net.feature_maps(a), self.net.feature_maps(b)):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            loss = loss + (fa - fb).pow(2).sum(1).mean()
        return loss


def _ssl_target_size(config: NnqcConfig) -> int:
    """The SSL decoder restores the image at 1/4 of the slice size (at least the token grid): the
    8 x 8 tokens cannot hold full-resolution detail, and the full-size decoder would cost most of
    the stage's time."""
    return max(config.token_grid, config.size // 4)


def _ssl_inputs(x: torch.Tensor, config: NnqcConfig, rng: np.random.Generator, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked noisy input, target) of masked denoising autoencoding (module docstring)."""
    b, _, h, w = x.shape
    if rng.random() < 0.5:
        x = x.flip(-1)
    if rng.random() < 0.5:
        x = x.flip(-2)
    a = torch.from_numpy(rng.uniform(-0.1, 0.1, size=(b, 1, 1, 1)).astype(np.float32))
    c = torch.from_numpy(rng.uniform(-0.1, 0.1, size=(b, 1, 1, 1)).astype(np.float32))
    target = x * (1 + a) + c
    g = config.token_grid
    keep = torch.from_numpy((rng.random((b, 1, g, g)) >= config.ssl_mask_ratio).astype(np.float32))
    keep = F.interpolate(keep, size=(h, w), mode="nearest")
    noisy = target * keep + config.ssl_noise * torch.randn(target.shape, generator=generator)
    return noisy, target


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(config: NnqcConfig, data: NnqcTrainingData, out_dir: str | Path, *, device: str = "auto",
          threads: int | None = None, log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Train nnQC (module docstring) into ``out_dir``; return the model directory ``out_dir/model``.

    ``device``: "auto" (CUDA if available), "cpu", "cuda:0"...; ``threads``: torch CPU threads
    during training (restored afterwards; default: leave as is). ``log`` gets a line every tenth
    of a stage; ``progress`` shows Rich progress bars. Resumes an interrupted run in the same
    folder; a folder holding a run with other settings or data raises :class:`InputError`.
    """
    if data.size != config.size:
        raise InputError(f"the slices have {data.size} px but the config needs {config.size}")
    if data.n_segs == 0:
        raise InputError("the training data holds no imperfect segmentation")
    say = log or (lambda _line: None)
    summary = data.summary()  # once: it checksums every training array
    out, dev = start_run(out_dir, method=METHOD, settings=config.resume_key(), data=summary, seed=config.seed,
                         device=device, may_change="checkpoint_every")
    with _threads(threads), torch.enable_grad():
        torch.manual_seed(config.seed)
        model = NnqcModel(config, data.labels, data.image_channels, pretrained=True).to(dev)
        discriminator = build_discriminator(config, model.n_classes).to(dev)
        images = torch.from_numpy(np.ascontiguousarray(data.images))
        gt_idx = model.class_indices(torch.from_numpy(data.gt.astype(np.int64))).to(torch.uint8).cpu()
        metrics: dict[str, Any] = {"data": summary, "device": str(dev), "threads": torch.get_num_threads()}
        run = partial(run_stage, out_dir=out, checkpoint_every=config.checkpoint_every, log=say, progress=progress,
                      prefix="nnqc ")

        if config.image_encoder == "ssl" and config.ssl_steps > 0:
            metrics["ssl"] = run(_ssl_stage(config, model, images, dev))
        model.image_encoder.requires_grad_(False).eval()

        metrics["vae"] = run(_vae_stage(config, model, discriminator, gt_idx, dev))
        model.autoencoder.requires_grad_(False).eval()

        ldm_stage, scale = _ldm_stage(config, model, data, images, gt_idx, dev)
        metrics["latent_scale"] = scale
        metrics["ldm"] = run(ldm_stage)

    model_dir = out / "model"
    save_checkpoint(
        model_dir, method=METHOD,
        config={"nnqc": config.to_dict(), "labels": list(data.labels), "image_channels": data.image_channels,
                "latent_scale": scale, "plan": data.plan.to_dict() if data.plan is not None else None,
                "spacing": list(data.spacing)},
        weights={"autoencoder": model.autoencoder.state_dict(), "image_encoder": model.image_encoder.state_dict(),
                 "toe": model.toe.state_dict(), "denoiser": model.denoiser.state_dict(),
                 "discriminator": discriminator.state_dict()},
        fingerprint=dict(data.fingerprint) if data.fingerprint is not None else None,
        metrics=metrics, seed=config.seed)
    say(f"model saved to {model_dir}")
    return model_dir


def _ssl_stage(config: NnqcConfig, model: NnqcModel, images: torch.Tensor, dev: torch.device) -> Stage:
    encoder = model.image_encoder
    if not isinstance(encoder, ConvTokenEncoder):
        raise ValueError("SSL pre-training needs image_encoder 'ssl' (a ConvTokenEncoder), "
                         f"got {config.image_encoder!r}")
    encoder.requires_grad_(True)
    target_size = _ssl_target_size(config)
    decoder = TokenGridDecoder(encoder.token_dim, model.image_channels, grid=config.token_grid,
                               size=target_size).to(dev)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=config.ssl_lr)
    n = images.shape[0]

    def step(k: int) -> dict[str, float]:
        rng, generator = _generator(config.seed, "ssl", k)
        batch = images[rng.integers(n, size=config.ssl_batch_size)]
        noisy, target = _ssl_inputs(batch, config, rng, generator)
        target = F.adaptive_avg_pool2d(target, target_size)
        loss = F.mse_loss(decoder(encoder.grid_features(noisy.to(dev))), target.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"mse": loss.item()}

    return Stage("ssl", config.ssl_steps, {"image_encoder": encoder, "decoder": decoder}, {"adam": optimizer}, step)


def _vae_stage(config: NnqcConfig, model: NnqcModel, discriminator: nn.Module, gt_idx: torch.Tensor,
               dev: torch.device) -> Stage:
    from monai.losses import GeneralizedDiceLoss, PatchAdversarialLoss

    autoencoder = model.autoencoder
    autoencoder.requires_grad_(True)
    dice_loss = GeneralizedDiceLoss(softmax=True, include_background=True)
    adversarial = PatchAdversarialLoss(criterion="least_squares")
    perceptual = (_Perceptual(config.perceptual_network_path, model.n_classes).to(dev)
                  if config.perceptual_network_path else None)
    opt_g = torch.optim.Adam(autoencoder.parameters(), lr=config.vae_lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.disc_lr)
    n = gt_idx.shape[0]

    def step(k: int) -> dict[str, float]:
        rng, generator = _generator(config.seed, "vae", k)
        one_hot = model.one_hot(gt_idx[rng.integers(n, size=config.vae_batch_size)].long().to(dev))
        logits, mu, log_var = autoencoder(one_hot, generator)
        dice = dice_loss(logits, one_hot)
        kl = gaussian_kl(mu, log_var)
        loss = config.dice_weight * dice + config.kl_weight * kl
        out = {"dice": dice.item(), "kl": kl.item()}
        adversarial_on = k >= config.adv_start and config.adv_weight > 0
        probs = logits.softmax(dim=1)
        if perceptual is not None and config.perceptual_weight > 0:
            p = perceptual(probs, one_hot)
            loss = loss + config.perceptual_weight * p
            out["perceptual"] = p.item()
        if adversarial_on:
            discriminator.requires_grad_(False)
            g = adversarial(discriminator(probs)[-1], target_is_real=True, for_discriminator=False)
            discriminator.requires_grad_(True)
            loss = loss + config.adv_weight * g
            out["adv"] = g.item()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if adversarial_on:
            d = 0.5 * (adversarial(discriminator(probs.detach())[-1], target_is_real=False, for_discriminator=True)
                       + adversarial(discriminator(one_hot)[-1], target_is_real=True, for_discriminator=True))
            opt_d.zero_grad(set_to_none=True)
            d.backward()
            opt_d.step()
            out["disc"] = d.item()
        out["total"] = loss.item()
        return out

    return Stage("vae", config.vae_steps, {"autoencoder": autoencoder, "discriminator": discriminator},
                  {"generator": opt_g, "discriminator": opt_d}, step)


@torch.no_grad()
def _chunked(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dev: torch.device,
             chunk: int = 64) -> torch.Tensor:
    return torch.cat([function(x[i:i + chunk].to(dev)).cpu() for i in range(0, x.shape[0], chunk)])


def _ldm_stage(config: NnqcConfig, model: NnqcModel, data: NnqcTrainingData, images: torch.Tensor,
               gt_idx: torch.Tensor, dev: torch.device) -> tuple[Stage, float]:
    # latents (posterior means) of all ground truths -> scale factor; frozen encoders: compute once
    mu = _chunked(lambda g: model.autoencoder.encode(model.one_hot(g.long()))[0], gt_idx, dev)
    std = float(mu.std())
    scale = float(np.float32(1.0 / std)) if std > 0 and math.isfinite(std) else 1.0
    model.latent_scale.fill_(scale)
    latents = mu * scale
    tokens = _chunked(model.image_tokens, images, dev)
    seg_idx = model.class_indices(torch.from_numpy(data.segs.astype(np.int64))).to(torch.uint8).cpu()
    s_degraded = _chunked(lambda s: model.seg_condition(s.long()), seg_idx, dev)
    s_clean = _chunked(lambda s: model.seg_condition(s.long()), gt_idx, dev)
    s_empty = _chunked(lambda s: model.seg_condition(s.long()), torch.zeros_like(gt_idx[:1]), dev)[0]
    image_condition = model.image_condition(images)
    ratios = torch.from_numpy(data.ratios.astype(np.float32))
    source = torch.from_numpy(data.seg_source)
    scheduler = make_scheduler(config)
    modules = {"toe": model.toe, "denoiser": model.denoiser}
    for module in modules.values():
        module.requires_grad_(True)
    optimizer = torch.optim.Adam(list(model.toe.parameters()) + list(model.denoiser.parameters()), lr=config.ldm_lr)
    n, m, b = latents.shape[0], data.n_segs, config.ldm_batch_size

    def step(k: int) -> dict[str, float]:
        rng, generator = _generator(config.seed, "ldm", k)
        u = rng.random(b)
        pick = rng.integers(m, size=b)
        slices = torch.from_numpy(rng.integers(n, size=b))
        degraded = u >= config.clean_fraction + config.empty_fraction
        slices[torch.from_numpy(degraded)] = source[torch.from_numpy(pick[degraded])]
        s_d = s_clean[slices].clone()
        s_d[torch.from_numpy(degraded)] = s_degraded[torch.from_numpy(pick[degraded])]
        empty = (u >= config.clean_fraction) & ~degraded
        s_d[torch.from_numpy(empty)] = s_empty
        if image_condition is not None:  # S_d then the image, as in NnqcModel.spatial_condition
            s_d = torch.cat([s_d, image_condition[slices]], dim=1)
        z0 = latents[slices]
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(0, config.train_timesteps, (b,), generator=generator)
        high = torch.rand(b, generator=generator) < config.high_t_fraction
        t = torch.where(high, config.train_timesteps // 2 + t // 2, t)
        z_t = scheduler.add_noise(original_samples=z0, noise=noise, timesteps=t)
        c = model.toe(ratios[slices].to(dev), tokens[slices].to(dev))
        eps = model.denoiser(z_t.to(dev), s_d.to(dev), t.to(dev), c)
        loss = F.mse_loss(eps, noise.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"mse": loss.item()}

    return Stage("ldm", config.ldm_steps, modules, {"adam": optimizer}, step), scale


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: NnqcConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       extra_seg_dirs: Sequence[str | Path] = (), progress: bool = False) -> Path:
    """The registry's training entry point (:mod:`segqc.methods`): build the training data of
    ``cases`` of an nnU-Net folder (:func:`build_training_data`) and :func:`train`; returns the
    model directory."""
    data = build_training_data(dataset_dir, cases, config, config.seed, extra_seg_dirs=extra_seg_dirs, jobs=jobs,
                               progress=progress, log=log)
    log(f"training data: {data.n_slices} slices, {data.n_segs} imperfect segmentations")
    return train(config, data, out_dir, threads=None, log=log, progress=progress)
