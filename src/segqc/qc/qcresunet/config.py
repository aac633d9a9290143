"""Settings of QCResUNet (Qiu et al., joint subject-level and voxel-level quality prediction).

:class:`QcResUNetConfig` is a frozen dataclass saved as JSON with every checkpoint. Presets
(``QcResUNetConfig.preset(name)``):

* ``tiny`` — for tests: 32 px slices, widths (4, 8, 16, 32) with one residual block per stage, a
  few dozen steps. Learns little; checks that everything runs.
* ``small`` (the default) — 2 CPU cores: 96 px slices over a window sized by the training
  foreground (``field_of_view="foreground"``, every preset's; all 180 ACDC volumes: 153 mm, 1.60 mm pixels),
  the ResNet-34 layout (3, 4, 6, 3 residual blocks) at widths (16, 32, 64, 128) (4.0 M
  parameters), kernels from the data's spacing (``kernels="auto"``: ACDC's thick slices get
  ``(1, 3, 3)`` at the two finest levels, :func:`resolve_kernels`), batch 4, 10 degraded
  segmentations per training volume over QCResUNet's 10 equal Dice bins, 20 epochs of 680
  segmentations re-drawn evenly over the bins (3400 steps), the error maps weighted λ = 3 in the
  loss with their Dice taken per segmentation (``loss_lambda=3``, ``sem_dice="sample"``: at
  this budget better error maps and estimates than the paper's λ = 1 and batch Dice, two seeds
  on held-out ACDC patients, docs/evidence.md "The error maps' weight in the loss"), in bfloat16
  where the CPU has it (``precision="auto"``: about 0.4 s per step on 2 cores with AMX, 1.1 s
  in float32; about 0.8 s on a CPU with AVX-512 BF16 but no AMX, docs/evidence.md, "Thin
  kernels across thick slices"), then the read-out (below) on 40 fresh degraded segmentations
  per training volume, the ground truths and the real segmentations, those counting eight times,
  its correction the mean of eight (``readout_per_case=40``, ``readout_real_weight=8``,
  ``readout_corrections=8``: held out on ACDC, one network's multi-class Dice r 0.971–0.979 and
  NSD r 0.905–0.917 over three seeds; with one correction 0.970–0.974 and 0.889–0.906,
  docs/evidence.md "Averaged corrections"; with 20 samples and weight 4, about 9 minutes less on
  2 cores, 0.964–0.967 and 0.892–0.900 with one correction; with 10 and 2, about 16 minutes
  less, 0.957 and 0.873 — docs/evidence.md "Forty read-out samples per volume").
* ``paper`` — for a GPU, the paper's method (its regression heads, no read-out): widths (32,
  64, 128, 256) — 16.3 M parameters, the size the paper's Table F.3 gives for QCResUNet
  (ResNet-34's own widths 64..512 would make 65 M) —, batch 4, 100 epochs, Adam with the
  learning rate decayed by 0.9 per epoch down to 1e-6, weight decay 1e-4, spatial dropout 0.3,
  λ = 1, an ensemble of 3 seeds; 128 px slices (the paper crops ACDC volumes; the size is our
  choice). On one H200 GPU about 0.08 s per step in float32 (bfloat16 is no faster: the step is
  bound by per-step overheads) and 3.2 GiB of GPU memory: about 35 min per seed on ACDC
  (docs/evidence.md, "The paper preset on a GPU").

Down-sampling. ``strides="auto"`` picks the paper's rates from the training data: thick slices
(slice spacing at least twice the in-plane spacing, e.g. ACDC's 10 mm vs 1.56 mm) get
``[1,2,2]`` three times, then ``[2,2,2]`` (depth, height, width); other 3D data ``[2,2,2]`` four
times; 2D data the 2D network with 2 × 2 four times. Any other value is a JSON list of four
per-axis rates.

NSD targets use ``tolerance_mm`` (the model predicts NSD at this tolerance only: the QC driver
uses it when no tolerance is given and refuses another one with ``nsd``). Only ``epochs`` may
grow when a stopped run is continued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from segqc.config import ConfigBase, register_presets
from segqc.fingerprint.preprocessing import check_field_of_view
from segqc.training.precision import PRECISIONS

__all__ = ["ENSEMBLE_ERRORS", "LOSS_WEIGHTINGS", "PRESETS", "QcResUNetConfig", "resolve_kernels", "resolve_strides"]

THICK_SLICE_RATIO = 2.0
"""Slice spacing / in-plane spacing from which the depth axis is not down-sampled early."""


@dataclass(frozen=True)
class QcResUNetConfig(ConfigBase):
    """Every setting of the QCResUNet model and its training (defaults: the ``small`` preset's, but
    ``kernels`` is ``cube``, ``loss_lambda`` 1 and ``sem_dice`` ``batch``, the paper's, and
    ``field_of_view`` ``spacing``, as in every model saved before the presets changed them).

    Network: ``size`` (in-plane slice size, px; divisible by 16), ``field_of_view`` (the slices'
    in-plane width: ``spacing``, ``foreground`` or mm, as nnQC's,
    :func:`~segqc.fingerprint.preprocessing.plan_from_fingerprint`), ``widths`` / ``blocks`` per
    ResNet stage, ``strides`` ("auto" or four per-axis rates), ``kernels`` (the convolutions'
    kernel sizes per resolution level: ``cube``, ``auto`` or five per-axis sizes,
    :func:`resolve_kernels`), ``dropout`` (spatial dropout in
    every residual block); ablations ``attention`` (ECA aggregation of the error maps),
    ``decoder`` (error maps at all; False = regression-only ResNet-34) and ``regression`` (Dice /
    NSD heads; False = error maps only). ``classes``: what the model assesses — ``labels`` (every
    label value), ``regions`` (the ``regions`` of ``dataset.json``, e.g. BraTS whole tumour /
    tumour core / enhancing tumour: overlapping unions of labels, also as the query's channels)
    or ``auto`` (regions when the dataset defines them).

    Data: ``degraded_per_case`` segmentations made from every training ground truth with
    ``segqc degrade`` (nnQC error types and SegGen) spread over ``bins`` equal Dice bins, and
    with ``ground_truth_samples`` the ground truth itself (the degraded maps stop below Dice 1;
    without perfect examples a model does not recognise a perfect segmentation);
    ``tolerance_mm`` for the NSD targets; ``max_depth``: volumes with more slices are cropped to
    this many around the segmentation's centre during training.

    Read-out: with ``readout_per_case`` > 0 (and the decoder), each trained network gets a
    linear read-out of its error-map branch, fitted in closed form on ``readout_per_case`` fresh
    degraded segmentations of every training ground truth (another seed than the training data,
    so none the network was trained on) plus the ground truths; its Dice and NSD replace the
    regression heads' when it predicts those samples better (:mod:`segqc.qc.qcresunet.model`;
    on held-out ACDC patients it lifts the multi-class Dice correlation of a network by about
    0.08, docs/evidence.md). 0: the paper's heads alone. ``readout_fourier``: random Fourier
    features of a smooth non-linear correction fitted to the linear read-out's residuals (kept
    only where it lowers the cross-validated error; 0: linear only). ``readout_corrections``:
    how many such corrections, each on its own random features, are fitted and averaged (the
    read-out then holds ``readout_corrections * readout_fourier`` features; one draw of features
    alone moved a network's held-out NSD correlation by up to 0.025, docs/evidence.md "Averaged
    corrections"). ``readout_surface``: the
    read-out also reads how much of each class's boundary the error map marks (for the NSD).
    ``readout_real_weight``: how many times each real segmentation (the training's
    ``--extra-segs``) counts in the read-out's fit against one degraded segmentation or ground
    truth (they are few, and they are the kind of segmentation a user checks). The same samples
    calibrate each class's error-map threshold (the one with the best mean Dice between
    predicted and true error maps).

    Optimisation: ``epochs`` of ``samples_per_epoch`` segmentations drawn evenly over the Dice
    bins (re-drawn every epoch), ``batch_size``, Adam ``lr`` decayed by ``lr_decay`` per epoch
    down to ``min_lr``, ``weight_decay``, ``loss_lambda`` (λ: error-map weight), ``sem_dice`` (the
    error maps' Dice loss over the ``batch`` or per ``sample``, :data:`SEM_DICE_MODES`),
    ``loss_weighting`` (:data:`LOSS_WEIGHTINGS`: ``mean``, or the ``paper`` preset's ``paper``); ``precision`` of
    the training steps (``auto``, the default: bfloat16 autocast where the hardware has native
    bfloat16, :mod:`segqc.training.precision`, about 2.5x faster on such a CPU, with the 3D
    convolutions that PyTorch's CPU kernels get wrong in bfloat16 shielded, float32 elsewhere;
    ``fp32``: the ``tiny`` and ``paper`` presets, reproducible across machines; ``bf16``); ``members``:
    models trained with seeds ``seed`` .. ``seed + members - 1`` (an ensemble: the estimate is
    their mean, the spread their standard deviation, the error map their majority vote or mean
    probability, ``ensemble_errors``, :data:`ENSEMBLE_ERRORS`); ``keep_members`` (with a read-out; 0: all):
    keep only that many members, those whose read-out estimates its fresh samples of the training
    volumes best (lowest cross-validated squared error, or the heads' error where the heads stay in
    charge) — the error ranks separately trained networks as held-out data do, so a weak seed is
    dropped without looking at held-out data; ``checkpoint_every`` steps.

    Prediction: ``test_flips`` forward passes per member, averaged (estimates, and the error
    probabilities mirrored back): 1 the volume as it is, 2 also mirrored along the last in-plane
    axis, 4 also along the other and along both (the training's own flips, so every pass is in
    distribution; the time of a prediction's network part grows with it).
    """

    KIND: ClassVar[str] = "qcresunet"
    LABEL: ClassVar[str] = "QCResUNet"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("epochs", "checkpoint_every", "keep_members", "ensemble_errors")

    size: int = 96
    field_of_view: str = "spacing"
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    strides: Any = "auto"
    kernels: Any = "cube"
    dropout: float = 0.3
    attention: bool = True
    decoder: bool = True
    regression: bool = True
    readout_per_case: int = 10
    readout_fourier: int = 1024
    readout_corrections: int = 1
    readout_surface: bool = True
    readout_real_weight: float = 2.0
    classes: str = "auto"
    degraded_per_case: int = 10
    ground_truth_samples: bool = True
    bins: int = 10
    tolerance_mm: float = 1.0
    max_depth: int = 24
    epochs: int = 20
    samples_per_epoch: int = 800
    batch_size: int = 4
    lr: float = 1e-3
    lr_decay: float = 0.9
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    loss_lambda: float = 1.0
    sem_dice: str = "batch"
    loss_weighting: str = "mean"
    members: int = 1
    keep_members: int = 0
    ensemble_errors: str = "vote"
    checkpoint_every: int = 50
    precision: str = "auto"
    test_flips: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_of_view", check_field_of_view(self.field_of_view))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.strides != "auto":
            object.__setattr__(self, "strides", _as_strides(self.strides))
        if self.kernels not in KERNEL_CHOICES:
            object.__setattr__(self, "kernels", _as_kernels(self.kernels))
        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise ValueError(f"widths and blocks need one entry per ResNet stage (4); got {self.widths}, {self.blocks}")
        if self.size % 16:
            raise ValueError(f"size {self.size} must be divisible by 16 (four stride-2 stages in-plane)")
        if not (self.decoder or self.regression):
            raise ValueError("decoder=False and regression=False leave the network nothing to predict")
        for name in ("epochs", "samples_per_epoch", "batch_size", "members", "degraded_per_case", "bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.readout_fourier) < 0:
            raise ValueError(f"readout_fourier must be >= 0, got {self.readout_fourier}")
        if int(self.readout_corrections) < 1:
            raise ValueError(f"readout_corrections must be >= 1, got {self.readout_corrections}")
        if int(self.readout_per_case) < 0:
            raise ValueError(f"readout_per_case must be >= 0, got {self.readout_per_case}")
        if not float(self.readout_real_weight) > 0:
            raise ValueError(f"readout_real_weight must be > 0, got {self.readout_real_weight}")
        if self.classes not in ("auto", "labels", "regions"):
            raise ValueError(f"classes must be auto, labels or regions, got {self.classes!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.test_flips not in TEST_FLIPS:
            raise ValueError(f"test_flips must be one of {', '.join(map(str, TEST_FLIPS))}, got {self.test_flips}")
        if self.sem_dice not in SEM_DICE_MODES:
            raise ValueError(f"sem_dice must be one of {', '.join(SEM_DICE_MODES)}, got {self.sem_dice!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, "
                             f"got {self.loss_weighting!r}")
        if self.ensemble_errors not in ENSEMBLE_ERRORS:
            raise ValueError(f"ensemble_errors must be one of {', '.join(ENSEMBLE_ERRORS)}, "
                             f"got {self.ensemble_errors!r}")
        if not 0 <= int(self.keep_members) <= int(self.members):
            raise ValueError(f"keep_members must be between 0 (all) and members ({self.members}), "
                             f"got {self.keep_members}")
        if self.keep_members and not (self.decoder and self.readout_per_case > 0):
            raise ValueError("keep_members chooses members by their read-out's error: it needs the decoder "
                             "and readout_per_case > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (``samples_per_epoch / batch_size``, rounded up)."""
        return -(-self.samples_per_epoch // self.batch_size)


SEM_DICE_MODES = ("batch", "sample")
"""How the error maps' Dice loss pools voxels: ``batch`` over the whole batch (the paper's), ``sample``
per segmentation, then averaged (weighs the thin error maps of good segmentations like the large ones
of bad segmentations, as DSC_SEM does)."""

LOSS_WEIGHTINGS = ("mean", "paper")
"""How the loss weighs the C + 1 estimates and the C error maps (:func:`~segqc.qc.qcresunet.model.qcresunet_loss`):
``mean`` averages the absolute errors over the whole segmentation's estimate and the classes', and the
error maps' Dice over the classes; ``paper`` gives the whole segmentation's estimate the paper's weight
(its absolute error at weight 1, the classes' mean absolute error beside it) and sums the error maps'
Dice over the classes as section 2.3.3 does."""

ENSEMBLE_ERRORS = ("vote", "mean")
"""How an ensemble's error maps are fused: ``vote``, the paper's majority vote of the members' maps
(each member's probability against its own threshold; an even split falls to ``mean``); ``mean``,
the members' mean probability against their mean threshold."""

TEST_FLIPS = {1: ((),), 2: ((), (-1,)), 4: ((), (-1,), (-2,), (-1, -2))}
"""The in-plane axes each test-time pass mirrors, per ``test_flips`` value."""


def _as_strides(value: Any) -> tuple[tuple[int, ...], ...]:
    stages = tuple(tuple(int(s) for s in (stage if isinstance(stage, (list, tuple)) else [stage]))
                   for stage in value)
    if len(stages) != 4 or len({len(s) for s in stages}) != 1 or any(s < 1 for st in stages for s in st):
        raise ValueError(f"strides must be 'auto' or four per-axis rates like [[1,2,2],[1,2,2],[1,2,2],[2,2,2]]; "
                         f"got {value}")
    return stages


KERNEL_CHOICES = ("cube", "auto")
"""``kernels`` by name: ``cube`` 3 along every axis at every level (the paper's); ``auto`` from the
data's spacing (:func:`resolve_kernels`)."""


def _as_kernels(value: Any) -> tuple[tuple[int, ...], ...]:
    levels: tuple[tuple[int, ...], ...] = ()
    if not isinstance(value, str):
        try:
            levels = tuple(tuple(int(k) for k in (level if isinstance(level, (list, tuple)) else [level]))
                           for level in value)
        except (TypeError, ValueError):
            pass
    axes = {len(k) for k in levels} - {1}  # a single size stands for every axis
    if len(levels) != 5 or len(axes) > 1 or any(k < 1 or k % 2 == 0 for level in levels for k in level):
        raise ValueError(f"kernels must be 'cube', 'auto' or five per-axis odd kernel sizes (one per resolution "
                         f"level) like [[1,3,3],[1,3,3],[3,3,3],[3,3,3],[3,3,3]]; got {value}")
    return levels


def resolve_kernels(config: QcResUNetConfig, *, ndim: int, slice_spacing: float, inplane_spacing: float,
                    strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """The convolution kernel sizes at the network's five resolution levels (the input's and after
    each of the four down-samplings ``strides``) for data of ``ndim`` dimensions with the given
    slice and in-plane spacings (mm): the config's own (a single size: along every axis);
    ``cube``: 3 along every axis; ``auto``: 3, but 1 along the slice axis (3D data, the first
    axis) at every level where the slice spacing there is at least :data:`THICK_SLICE_RATIO`
    times the in-plane spacing there (nnU-Net's rule; ACDC, 10 mm slices and 1.56 mm pixels:
    ``(1, 3, 3)`` at the input's level and the stem's, where the pixels are 1.56 and 3.1 mm; 3
    from 6.25 mm pixels on)."""
    if config.kernels == "cube" or (config.kernels == "auto" and ndim == 2):
        return ((3,) * ndim,) * 5
    if config.kernels != "auto":  # one size stands for every axis
        kernels = tuple(k * ndim if len(k) == 1 else k for k in config.kernels)
        if any(len(k) != ndim for k in kernels):
            raise ValueError(f"kernels {config.kernels} do not have {ndim} axes, as the data")
        return kernels
    levels = []
    slice_mm, pixel_mm = float(slice_spacing), float(inplane_spacing)
    for level in range(5):
        if level:
            slice_mm *= strides[level - 1][0]
            pixel_mm *= strides[level - 1][-1]
        levels.append((1 if slice_mm >= THICK_SLICE_RATIO * pixel_mm else 3, 3, 3))
    return tuple(levels)


def resolve_strides(config: QcResUNetConfig, *, ndim: int, slice_spacing: float,
                    inplane_spacing: float) -> tuple[tuple[int, ...], ...]:
    """The four per-stage rates for data of ``ndim`` (2 or 3) dimensions with the given slice and
    in-plane spacings (mm): the config's own, or the paper's choice (module docstring)."""
    if config.strides != "auto":
        strides: tuple[tuple[int, ...], ...] = config.strides
        if len(strides[0]) != ndim:
            raise ValueError(f"strides {strides} have {len(strides[0])} axes; the data have {ndim}")
        return strides
    if ndim == 2:
        return ((2, 2),) * 4
    if slice_spacing >= THICK_SLICE_RATIO * inplane_spacing:
        return ((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2))
    return ((2, 2, 2),) * 4


PRESETS = {
    "tiny": QcResUNetConfig(size=32, widths=(4, 8, 16, 32), blocks=(1, 1, 1, 1), degraded_per_case=3, epochs=3,
                            samples_per_epoch=8, batch_size=2, max_depth=8, checkpoint_every=1000,
                            readout_per_case=2, readout_fourier=64, readout_corrections=2, precision="fp32",
                            field_of_view="foreground"),
    "small": QcResUNetConfig(kernels="auto", samples_per_epoch=680, loss_lambda=3.0, sem_dice="sample",
                             readout_per_case=40, readout_real_weight=8.0, readout_corrections=8,
                             field_of_view="foreground"),
    "paper": QcResUNetConfig(size=128, widths=(32, 64, 128, 256), epochs=100, samples_per_epoch=1000,
                             degraded_per_case=20, members=3, max_depth=32, readout_per_case=0,
                             precision="fp32", loss_weighting="paper", field_of_view="foreground"),
}
register_presets(QcResUNetConfig, PRESETS)
