"""The QCResUNet network and its multi-task loss (Qiu et al., "QCResUNet: Joint Subject-level and
Voxel-level Segmentation Quality Prediction", sections 2.3.1-2.3.3 and Appendix A).

* :class:`QcResUNet` — image(s) and a one-hot query segmentation -> subject-level DSC and NSD
  (from the last encoder block) and one segmentation-error-map logit per foreground class (from a
  decoder that starts at the *middle* encoder block, followed by ECA-based aggregation with the
  query). Output: :class:`QcResUNetOutput`.
* :func:`qcresunet_loss` — ``MAE(DSC) + MAE(NSD) + lam * (Dice loss + BCE)`` on the error maps.
* :func:`one_hot_query`, :func:`size_multiple`, :func:`eca_kernel_size` — helpers.

Conventions (``D`` = 2 or 3 spatial dimensions, ``C`` = number of foreground classes):

* ``image``: ``(B, image_channels, *spatial)`` float32, preprocessed intensities (e.g. z-scored, no
  unit); ``query_onehot``: ``(B, C + 1, *spatial)`` float32 in {0, 1}, channel 0 = background.
  ``spatial`` is ``(D, H, W)`` in 3D, ``(H, W)`` in 2D, in voxels; every axis must be a multiple of
  :func:`size_multiple` (the product of the four down-sampling rates along that axis).
* ``dice`` and ``nsd``: ``(B, C + 1)`` in [0, 1] (sigmoid). Index 0 is the subject-level value over
  all classes — for DSC the multi-class Dice of Appendix A (a foreground voxel is a true positive
  only if its label matches the ground truth's; summed TP, FP, FN over the classes), for NSD the
  mean of the per-class NSDs — and indices 1..C are the per-class values. The network only
  *predicts* these; whoever builds the training targets must follow the same convention.
* ``sem_logits``: ``(B, C, *spatial)`` logits; ``sigmoid(sem_logits[:, c - 1])`` is the predicted
  probability that class ``c``'s query mask disagrees with the ground truth at that voxel
  (``SEM_c = (query == c) XOR (truth == c)``). Maps of different classes may overlap.

Choices where the paper is silent or cannot be followed literally:

* Encoder: hand-written (MONAI's ``ResNet`` has one stride per stage for all axes, no dropout inside
  the blocks and no access to intermediate features). Basic residual blocks ``conv3 -> IN -> ReLU
  -> Dropout -> conv3 -> IN (+ shortcut) -> ReLU``; the spatial dropout sits between the two
  convolutions (as in wide ResNets). The shortcut is a 1x1 convolution + IN wherever the stride or
  width changes (ResNet "option B"). Convolutions followed by InstanceNorm (affine) have no bias.
* The paper lists four down-sampling rates where a ResNet-34 has five (stem conv, max-pool, stages
  2-4). They are mapped to: stem convolution (``strides[0]``), stage 2, 3, 4 (``strides[1..3]``);
  stage 1 keeps the stem's resolution and there is no max-pool. The stem kernel is 7 along axes
  the stem down-samples and 3 along the others (e.g. ``(3, 7, 7)`` for ACDC's thick-slice axis, a
  7-slice kernel would mix far-apart slices of a 16-slice volume).
* Kernels (``kernels``; our option, the paper's are 3 along every axis): per resolution level,
  e.g. ``(1, 3, 3)`` at the levels where the slices are still much further apart than the
  pixels (nnU-Net's rule for thick-slice data; :func:`segqc.qc.qcresunet.config.resolve_kernels`):
  a slice-axis kernel there mixes structures 10 mm apart and costs three times the arithmetic
  of the in-plane one. The stem's kernel is 7 along the axes it down-samples and the level's
  kernel along the others.
* Regression heads: global average pooling of stage 4, then one linear layer per measure (DSC,
  NSD), each ``widths[3] -> C + 1``, then sigmoid. No hidden layer, no dropout.
* Read-out (``readout=True``; our addition, needs the decoder): after training, a linear map
  fitted in closed form (:func:`segqc.training.ridge.fit_ridge`, on segmentations the network has
  not been trained on) from :func:`query_pooled_features` — what the error-map branch sees at
  full resolution — and the regression heads' own estimates to DSC and NSD, plus (with
  ``readout_fourier`` > 0) a smooth correction of its residuals, a ridge fit on random Fourier
  features of the standardised inputs (:mod:`segqc.training.fourier`, an approximate Gaussian-kernel
  regression that vanishes far from the fitted samples), clipped to [0, 1].
  Once fitted it replaces the heads' estimates; until then (during training) the heads give
  them, and they still train the encoder as in the paper. Per class c, with ``d`` the last decoder level's features,
  ``q_c`` the query's class-c mask and ``p_c`` the predicted error probability: the mean of
  ``d`` over ``q_c``, the ``p_c``-weighted mean of ``d``, the predicted false positives
  ``FP = sum(p_c q_c)`` as a fraction of ``|q_c|``, the predicted false negatives
  ``FN = sum(p_c (1 - q_c))`` as a fraction of ``|q_c| + FN``, the soft Dice those imply
  ``2 TP / (|q_c| + TP + FN)`` with ``TP = |q_c| - FP``, and the class's share of the volume
  (``|q_c|`` / voxels); an empty query class contributes zeros; with ``readout_surface`` also
  the errors predicted along the mask's boundary (:func:`boundary_error_numbers`). Reason: the
  instance-normalised stage-4 features, averaged over the whole volume, carry little of *how
  much* is wrong, and within a CPU budget the heads under-fit; a read-out of these pooled
  features tracks the true Dice far better (docs/evidence.md). Training a head on these features
  end to end was tried and is not better (docs/evidence.md).
* Error-map threshold: a voxel is marked erroneous for class c where its probability reaches
  ``sem_threshold[c]`` — 0.5 as trained, or the threshold that maximised the mean per-sample
  Dice of the error maps on the read-out's samples (fitted with the read-out).
* Outside the window: the network sees a ``size`` x ``size`` window centred on the
  segmentation's largest component; segmentation voxels beyond it (stray false positives far
  from the structure) are invisible to it. ``outside_errors[c]`` = 1 marks every class-c voxel
  outside the window as erroneous in the error map — set by the read-out's fit when most such
  voxels of its samples are wrong (ACDC: 92-98 % of the read-out samples' such voxels), 0 until then.
* Decoder: three levels that undo stage 3, stage 2 and the stem (rates ``strides[2]``,
  ``strides[1]``, ``strides[0]``). Each level: nearest-neighbour up-sampling, 1x1 convolution to
  the skip's width, concatenation with the skip, two conv blocks (``conv3 -> IN -> LeakyReLU(0.01)``)
  back to the skip's width. Skips: output of stage 2, of stage 1, and a full-resolution skip — one
  conv block on the network input with ``max(1, widths[0] // 2)`` channels (the encoder has no
  full-resolution feature map because the stem already down-samples).
* Input: the image and the one-hot query are concatenated for the encoder (``image_channels + C +
  1`` channels), and the query goes again to the SEM aggregation; :meth:`QcResUNet.forward` takes
  both separately.
* Ablations: ``attention=False`` replaces ECA by nothing (plain concatenation + 1x1 conv);
  ``decoder=False`` builds a plain ResNet-34 regressor (no full-resolution skip, decoder or SEM
  head); ``regression=False`` builds neither stage 4 nor the heads (stage 4 would only feed them).
  The required input size multiple is the same for all variants.
* Size: with ResNet-34's widths (64..512), 1 image channel and 3 classes the 3D network has 65.3 M
  parameters (63.5 M without the decoder). The paper's Table F.3 lists 8.36 M (ResNet-34) and
  16.59 M (QCResUNet), so its widths must have been smaller than ResNet-34's; ``widths`` is a
  constructor argument for that reason (16..128: 4.1 M, 32..256: 16.3 M here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segqc.qc.qcresunet.config import LOSS_WEIGHTINGS

__all__ = [
    "ACDC_STRIDES",
    "BRAIN_STRIDES",
    "DecoderLevel",
    "EfficientChannelAttention",
    "QcResUNet",
    "QcResUNetOutput",
    "ResidualBlock",
    "Readout",
    "SURFACE_NUMBERS",
    "eca_kernel_size",
    "one_hot_query",
    "qcresunet_loss",
    "boundary_error_numbers",
    "query_head_features",
    "query_pooled_features",
    "size_multiple",
]

Stride = int | Sequence[int]

RESNET34_WIDTHS = (64, 128, 256, 512)
RESNET34_BLOCKS = (3, 4, 6, 3)
ACDC_STRIDES = ((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2))
BRAIN_STRIDES = ((2, 2, 2),) * 4


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _axis_strides(strides: Sequence[Stride], spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """Four per-axis rates ``((s_1, ..., s_D), ...)`` from ints or per-axis sequences."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(strides) != 4:
        raise ValueError(f"need one down-sampling rate per stage (4), got {len(strides)}: {strides}")
    out = []
    for s in strides:
        axes = (int(s),) * spatial_dims if isinstance(s, int) else tuple(int(v) for v in s)
        if len(axes) != spatial_dims or min(axes) < 1:
            raise ValueError(f"each rate must be a positive int or {spatial_dims} positive ints, got {s}")
        out.append(axes)
    return tuple(out)


def _axis_kernels(kernels: Sequence[Stride] | None, spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """Five per-axis convolution kernel sizes (resolution levels 0..4) from ints or per-axis
    sequences; None: 3 along every axis at every level."""
    if kernels is None:
        return ((3,) * spatial_dims,) * 5
    if len(kernels) != 5:
        raise ValueError(f"need one kernel per resolution level (5: the input and after each of the four "
                         f"down-samplings), got {len(kernels)}: {kernels}")
    out = []
    for k in kernels:
        axes = (int(k),) * spatial_dims if isinstance(k, int) else tuple(int(v) for v in k)
        if len(axes) != spatial_dims or min(axes) < 1 or any(v % 2 == 0 for v in axes):
            raise ValueError(f"each kernel must be an odd positive int or {spatial_dims} of them, got {k}")
        out.append(axes)
    return tuple(out)


def size_multiple(strides: Sequence[Stride], spatial_dims: int = 3) -> tuple[int, ...]:
    """The multiple every spatial axis of the input must have: the product of the four rates along
    that axis, e.g. ``(2, 16, 16)`` for ACDC's rates and ``(16, 16, 16)`` for the brain rates."""
    axes = _axis_strides(strides, spatial_dims)
    return tuple(math.prod(s[a] for s in axes) for a in range(spatial_dims))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive 1D kernel size (Wang et al. 2020): the odd number nearest to
    ``|log2(channels) / gamma + b / gamma|``, ties (an even value) going up, as in ECA-Net's
    reference implementation (``floor``, then ``+1`` if even). E.g. 16 -> 3, 64 -> 3, 128 -> 5."""
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def one_hot_query(seg: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class-index map ``(B, *spatial)`` (integers 0..C, 0 = background) -> one-hot float32
    ``(B, C + 1, *spatial)``; ValueError for indices outside 0..C."""
    if seg.dtype.is_floating_point or seg.dtype == torch.bool:
        raise ValueError(f"seg must hold integer class indices, got dtype {seg.dtype}")
    if seg.numel() and (int(seg.min()) < 0 or int(seg.max()) > n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes}, got {int(seg.min())}..{int(seg.max())}")
    return F.one_hot(seg.long(), n_classes + 1).movedim(-1, 1).float()


def _conv(dims: int) -> Callable[..., nn.Module]:
    """``nn.Conv3d`` or ``nn.Conv2d`` (typed loosely: kernel, stride and padding are per-axis tuples
    of run-time length)."""
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(dims: int, channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, affine=True) if dims == 3 else nn.InstanceNorm2d(channels, affine=True)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """Basic ResNet block with InstanceNorm and spatial dropout: ``(B, c_in, *s) -> (B, c_out, *s /
    stride)`` (module docstring for the layer order)."""

    def __init__(self, dims: int, c_in: int, c_out: int, stride: tuple[int, ...], dropout: float,
                 kernel: tuple[int, ...] | None = None) -> None:
        super().__init__()
        conv = _conv(dims)
        kernel = kernel or (3,) * dims
        padding = tuple(k // 2 for k in kernel)
        self.conv1 = conv(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.norm1 = _norm(dims, c_out)
        self.dropout = nn.Dropout3d(dropout) if dims == 3 else nn.Dropout2d(dropout)
        self.conv2 = conv(c_out, c_out, kernel, padding=padding, bias=False)
        self.norm2 = _norm(dims, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if c_in != c_out or max(stride) > 1:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), _norm(dims, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.norm1(self.conv1(x))))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


def _conv_block(dims: int, c_in: int, c_out: int, kernel: tuple[int, ...] | None = None) -> nn.Sequential:
    """Decoder conv block: 3x3(x3) convolution (or ``kernel``), InstanceNorm (affine), LeakyReLU(0.01)."""
    kernel = kernel or (3,) * dims
    return nn.Sequential(_conv(dims)(c_in, c_out, kernel, padding=tuple(k // 2 for k in kernel), bias=False),
                         _norm(dims, c_out), nn.LeakyReLU(0.01))


class DecoderLevel(nn.Module):
    """``x (B, c_in, *s)``, ``skip (B, c_skip, *s * rate)`` -> ``(B, c_skip, *s * rate)``:
    nearest up-sampling by ``rate``, 1x1 conv to ``c_skip``, concatenation with the skip, two conv
    blocks ``2 c_skip -> c_skip -> c_skip``."""

    def __init__(self, dims: int, c_in: int, c_skip: int, rate: tuple[int, ...],
                 kernel: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.rate = tuple(float(r) for r in rate)
        self.project = _conv(dims)(c_in, c_skip, 1)
        self.blocks = nn.Sequential(_conv_block(dims, 2 * c_skip, c_skip, kernel),
                                    _conv_block(dims, c_skip, c_skip, kernel))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if max(self.rate) > 1:
            x = F.interpolate(x, scale_factor=self.rate, mode="nearest")
        return self.blocks(torch.cat([self.project(x), skip], dim=1))


class EfficientChannelAttention(nn.Module):
    """ECA (Wang et al. 2020): ``(B, K, *s) -> (B, K, *s)``, each channel scaled by
    ``sigmoid(conv1d_k(GAP(x)))`` where the 1D convolution (no bias) runs across the K pooled
    channel values with ``k = eca_kernel_size(K)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(dim=2)  # (B, K)
        weights = torch.sigmoid(self.conv(pooled.unsqueeze(1))).squeeze(1)  # (B, K)
        return x * weights.reshape(*weights.shape, *([1] * (x.ndim - 2)))


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

SURFACE_NUMBERS = 5
"""Read-out numbers per class from the errors predicted along the query's boundary
(:func:`boundary_error_numbers`)."""


def query_head_features(decoder_width: int, *, surface: bool = False) -> int:
    """Read-out features per class: two pooled decoder vectors of ``decoder_width``, four
    numbers, and with ``surface`` the :data:`SURFACE_NUMBERS` boundary numbers."""
    return 2 * decoder_width + 4 + (SURFACE_NUMBERS if surface else 0)


def boundary_error_numbers(query: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """How much of the query's boundary the error map marks, float32 ``(B, C, 5)`` in [0, 1],
    from the class masks ``query`` ``(B, C, *spatial)`` in {0, 1} and the error probabilities
    ``probs`` of the same shape. Shells use the full 3^D voxel neighbourhood (face, edge and
    corner neighbours; the volume's edge counts as inside): the *inner* shell is the mask's
    voxels with a neighbour outside it, the *outer* shell the outside voxels with a neighbour
    inside. Per class: mean error probability over the inner shell, over the outer shell, the
    fractions of each shell with probability > 0.5, and the inner shell's share of the mask
    (surface-to-volume, in voxels). An empty mask or shell gives zeros. Reason: the normalised
    surface Dice counts boundary elements displaced by more than the tolerance, which at
    tolerances below a voxel is any boundary voxel next to an error; the volume fractions of
    :func:`query_pooled_features` weigh a thin error along the whole boundary like a compact
    blob of the same volume."""
    spatial = query.ndim - 2
    if spatial not in (2, 3):
        raise ValueError(f"need (B, C, H, W) or (B, C, D, H, W) masks, got shape {tuple(query.shape)}")
    pool = F.max_pool3d if spatial == 3 else F.max_pool2d
    q = query.float()
    inner = (q - -pool(-q, 3, stride=1, padding=1)).flatten(2)  # q minus its erosion
    outer = (pool(q, 3, stride=1, padding=1) - q).flatten(2)  # the dilation minus q
    p = probs.float().flatten(2)
    n_inner, n_outer = inner.sum(dim=2).clamp(min=1.0), outer.sum(dim=2).clamp(min=1.0)
    hard = (p > 0.5).float()
    return torch.stack([(inner * p).sum(dim=2) / n_inner, (outer * p).sum(dim=2) / n_outer,
                        (inner * hard).sum(dim=2) / n_inner, (outer * hard).sum(dim=2) / n_outer,
                        inner.sum(dim=2) / q.flatten(2).sum(dim=2).clamp(min=1.0)], dim=-1)


def query_pooled_features(decoder: torch.Tensor, query_onehot: torch.Tensor, sem_logits: torch.Tensor, *,
                          surface: bool = False) -> torch.Tensor:
    """The read-out's per-class features, float32 ``(B, C * query_head_features(F))``, from
    the last decoder level ``(B, F, *spatial)``, the query ``(B, C + 1, *spatial)`` and the error
    logits ``(B, C, *spatial)`` (module docstring; both inputs detached). Per
    class, in this order: mean of the features over the class mask (zeros if the mask is empty),
    error-probability-weighted mean of the features, the predicted false positives as a fraction
    of the mask, the predicted false negatives as a fraction of mask + false negatives, the
    implied soft Dice, the mask's share of all voxels (the four numbers lie in [0, 1]); with
    ``surface`` then :func:`boundary_error_numbers`."""
    with torch.autocast(device_type=decoder.device.type, enabled=False):  # sums over all voxels: float32
        d = decoder.detach().float().flatten(2)  # (B, F, N)
        q = query_onehot[:, 1:].float().flatten(2)  # (B, C, N)
        p = torch.sigmoid(sem_logits.detach().float()).flatten(2)  # (B, C, N)
        volume = q.sum(dim=2)  # (B, C)
        mask_mean = torch.einsum("bfn,bcn->bcf", d, q) / volume.clamp(min=1.0).unsqueeze(-1)
        error_mean = torch.einsum("bfn,bcn->bcf", d, p) / p.sum(dim=2).clamp(min=1e-3).unsqueeze(-1)
        fp = (p * q).sum(dim=2)
        fn = (p * (1.0 - q)).sum(dim=2)
        tp = (volume - fp).clamp(min=0.0)
        implied = 2.0 * tp / (volume + tp + fn).clamp(min=1.0)
        numbers = torch.stack([fp / volume.clamp(min=1.0), fn / (volume + fn).clamp(min=1.0), implied,
                               volume / q.shape[2]], dim=-1)  # (B, C, 4), each in [0, 1]
        parts = [mask_mean, error_mean, numbers]
        if surface:
            parts.append(boundary_error_numbers(query_onehot[:, 1:].detach(), p.reshape(sem_logits.shape)))
        return torch.cat(parts, dim=-1).flatten(1)


@dataclass(frozen=True)
class QcResUNetOutput:
    """``dice``, ``nsd``: ``(B, C + 1)`` in [0, 1], index 0 over all classes, 1..C per class;
    ``sem_logits``: ``(B, C, *spatial)`` error-map logits. None where an ablation removes the part."""

    dice: torch.Tensor | None
    nsd: torch.Tensor | None
    sem_logits: torch.Tensor | None

    def float(self) -> QcResUNetOutput:
        """The same outputs as float32 (a loss after a bfloat16 forward pass is computed on these)."""
        return QcResUNetOutput(*(None if t is None else t.float() for t in (self.dice, self.nsd, self.sem_logits)))


class Readout(nn.Module):
    """A fitted map ``(B, P) -> (B, T)``, all buffers (saved with the weights, not trained by
    gradient): ``z = (x - mean) / scale``, the linear part ``z @ weight.T + bias``, plus — with
    ``fourier`` > 0 — a smooth correction, a linear map of ``fourier`` random Fourier features
    of ``z`` (:mod:`segqc.training.fourier`; ``phi = sqrt(2 / D) cos(z @ frequencies.T +
    phases)``, standardised by ``fourier_mean`` / ``fourier_scale``, then ``@
    fourier_weight.T + fourier_bias``); the sum is clipped to [0, 1]. Unfitted until :meth:`set`
    is called (``is_fitted`` False); an unset correction adds zero."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    fitted: torch.Tensor
    frequencies: torch.Tensor  # the correction's buffers exist only with fourier > 0
    phases: torch.Tensor
    fourier_mean: torch.Tensor
    fourier_scale: torch.Tensor
    fourier_weight: torch.Tensor
    fourier_bias: torch.Tensor

    def __init__(self, features: int, targets: int, fourier: int = 0) -> None:
        super().__init__()
        if fourier < 0:
            raise ValueError(f"fourier must be >= 0, got {fourier}")
        self.fourier = int(fourier)
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.register_buffer("weight", torch.zeros(targets, features))
        self.register_buffer("bias", torch.zeros(targets))
        if self.fourier:
            self.register_buffer("frequencies", torch.zeros(self.fourier, features))
            self.register_buffer("phases", torch.zeros(self.fourier))
            self.register_buffer("fourier_mean", torch.zeros(self.fourier))
            self.register_buffer("fourier_scale", torch.ones(self.fourier))
            self.register_buffer("fourier_weight", torch.zeros(targets, self.fourier))
            self.register_buffer("fourier_bias", torch.zeros(targets))
        self.register_buffer("fitted", torch.zeros(()))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item())

    def _copy(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            buffer = getattr(self, name)
            if tuple(value.shape) != tuple(buffer.shape):
                raise ValueError(f"read-out {name}: need shape {tuple(buffer.shape)}, got {tuple(value.shape)}")
        for name, value in values.items():
            getattr(self, name).copy_(value.to(self.mean.dtype))

    def set(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Install the linear fit (shapes as the buffers; ValueError otherwise); the correction,
        if any, is reset to zero."""
        self._copy({"mean": mean, "scale": scale, "weight": weight, "bias": bias})
        if self.fourier:
            self.fourier_weight.zero_()
            self.fourier_bias.zero_()
        self.fitted.fill_(1.0)

    def set_correction(self, frequencies: torch.Tensor, phases: torch.Tensor, mean: torch.Tensor,
                       scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Install the Fourier correction (after :meth:`set`; ValueError without ``fourier``
        features or on a shape mismatch)."""
        if not self.fourier:
            raise ValueError("this read-out has no Fourier correction (fourier=0)")
        self._copy({"frequencies": frequencies, "phases": phases, "fourier_mean": mean, "fourier_scale": scale,
                    "fourier_weight": weight, "fourier_bias": bias})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = (x.float() - self.mean) / self.scale
            out = z @ self.weight.T + self.bias
            if self.fourier:
                phi = math.sqrt(2.0 / self.fourier) * torch.cos(z @ self.frequencies.T + self.phases)
                out = out + ((phi - self.fourier_mean) / self.fourier_scale) @ self.fourier_weight.T + self.fourier_bias
            return out.clamp(0.0, 1.0)


class QcResUNet(nn.Module):
    """QCResUNet (module docstring for the architecture and the choices made).

    ``spatial_dims``: 2 or 3. ``image_channels``: imaging modalities m. ``n_classes``: foreground
    classes C (the query has C + 1 one-hot channels). ``widths`` / ``blocks``: channels and residual
    blocks of the four stages (default ResNet-34). ``strides``: the four down-sampling rates (stem,
    stages 2, 3, 4), each an int or one int per axis (default 2 everywhere, the paper's brain
    rates; :data:`ACDC_STRIDES` for the cardiac volumes). ``kernels``: the convolutions' kernel
    sizes at the five resolution levels (0: the input's, 1..4: after each down-sampling; an int or
    one odd int per axis; a convolution takes its output level's; default None: 3 everywhere, the
    paper's), e.g. 1 along the slice axis where slices are far apart (module docstring).
    ``dropout``: spatial-dropout probability in every residual block. ``attention``: ECA before
    the SEM head (False: plain concat + 1x1 conv). ``decoder``: False gives a plain ResNet-34
    regressor (no error maps). ``regression``: False gives error maps only (no DSC/NSD heads and
    no stage 4). ``readout``: hold a read-out of the error-map branch that, once fitted, gives DSC
    and NSD (module docstring); ``readout_fourier``: the number of random Fourier features of its
    non-linear correction (0: linear only);
    ``readout_surface``: add :func:`boundary_error_numbers` to its features. The buffer
    ``sem_threshold`` ``(C,)`` holds each class's error-probability threshold (0.5 until
    :func:`segqc.qc.qcresunet.train.fit_readout` calibrates it), ``outside_errors`` ``(C,)``
    whether a class's voxels outside the window are marked erroneous (0 until then).
    """

    sem_threshold: torch.Tensor
    outside_errors: torch.Tensor

    def __init__(
        self,
        spatial_dims: int,
        image_channels: int,
        n_classes: int,
        widths: Sequence[int] = RESNET34_WIDTHS,
        blocks: Sequence[int] = RESNET34_BLOCKS,
        strides: Sequence[Stride] = (2, 2, 2, 2),
        dropout: float = 0.3,
        *,
        kernels: Sequence[Stride] | None = None,
        attention: bool = True,
        decoder: bool = True,
        regression: bool = True,
        readout: bool = False,
        readout_fourier: int = 0,
        readout_surface: bool = False,
    ) -> None:
        super().__init__()
        if readout and not decoder:
            raise ValueError("the read-out reads the error-map branch: it needs decoder=True")
        self.strides = _axis_strides(strides, spatial_dims)
        self.kernels = _axis_kernels(kernels, spatial_dims)
        widths, blocks = tuple(int(w) for w in widths), tuple(int(n) for n in blocks)
        if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"widths and blocks need 4 positive entries each, got {widths}, {blocks}")
        if image_channels < 1 or n_classes < 1:
            raise ValueError(f"need image_channels >= 1 and n_classes >= 1, got {image_channels}, {n_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if not (decoder or regression):
            raise ValueError("decoder=False and regression=False leave the network without outputs")
        self.spatial_dims, self.image_channels, self.n_classes = int(spatial_dims), int(image_channels), int(n_classes)
        self.widths, self.blocks = widths, blocks
        self.use_attention, self.use_decoder, self.use_regression = bool(attention), bool(decoder), bool(regression)
        dims, c_in = self.spatial_dims, self.image_channels + self.n_classes + 1
        conv = _conv(dims)

        kernels = self.kernels  # a convolution takes the kernel of the level it outputs
        kernel = tuple(7 if s > 1 else k for s, k in zip(self.strides[0], kernels[1]))
        self.stem = nn.Sequential(
            conv(c_in, widths[0], kernel, stride=self.strides[0], padding=tuple(k // 2 for k in kernel), bias=False),
            _norm(dims, widths[0]), nn.ReLU(),
        )
        self.stages = nn.ModuleList()
        previous = widths[0]
        for i in range(4 if regression else 3):
            stride = (1,) * dims if i == 0 else self.strides[i]
            stage = [ResidualBlock(dims, previous, widths[i], stride, dropout, kernels[i + 1])]
            stage += [ResidualBlock(dims, widths[i], widths[i], (1,) * dims, dropout, kernels[i + 1])
                      for _ in range(blocks[i] - 1)]
            self.stages.append(nn.Sequential(*stage))
            previous = widths[i]

        full = max(1, widths[0] // 2)
        if regression:
            self.dice_head = nn.Linear(widths[3], n_classes + 1)
            self.nsd_head = nn.Linear(widths[3], n_classes + 1)
        self.readout_surface = bool(readout_surface)
        # Per-class probability above which a voxel is marked erroneous (fitted with the read-out).
        self.register_buffer("sem_threshold", torch.full((n_classes,), 0.5))
        # Per class 1: mark the segmentation's voxels outside the window erroneous (fitted with the read-out).
        self.register_buffer("outside_errors", torch.zeros(n_classes))
        self.readout: Readout | None = None
        if readout:
            readout_width = (n_classes * query_head_features(full, surface=readout_surface)
                             + (2 * (n_classes + 1) if regression else 0))
            self.readout = Readout(readout_width, 2 * (n_classes + 1), readout_fourier)
        if decoder:
            self.full_res_skip = _conv_block(dims, c_in, full, kernels[0])
            # Level 0 starts from stage 3 ("Block 3"), not from stage 4.
            self.decoder_levels = nn.ModuleList([
                DecoderLevel(dims, widths[2], widths[1], self.strides[2], kernels[2]),
                DecoderLevel(dims, widths[1], widths[0], self.strides[1], kernels[1]),
                DecoderLevel(dims, widths[0], full, self.strides[0], kernels[0]),
            ])
            head_in = full + n_classes + 1
            self.eca: nn.Module = EfficientChannelAttention(head_in) if attention else nn.Identity()
            self.sem_head = conv(head_in, n_classes, 1)

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Every spatial axis of the input must be a multiple of this (per axis)."""
        return size_multiple(self.strides, self.spatial_dims)

    def check_input(self, image: torch.Tensor, query_onehot: torch.Tensor) -> None:
        """ValueError unless ``image`` is ``(B, image_channels, *spatial)`` and ``query_onehot`` is
        ``(B, C + 1, *spatial)`` with every axis a multiple of :attr:`size_multiple`."""
        n = self.spatial_dims + 2
        if image.ndim != n or query_onehot.ndim != n:
            raise ValueError(f"image and query must have {n} dimensions (B, channels, *spatial), got "
                             f"{tuple(image.shape)} and {tuple(query_onehot.shape)}")
        if image.shape[1] != self.image_channels or query_onehot.shape[1] != self.n_classes + 1:
            raise ValueError(f"need {self.image_channels} image channel(s) and {self.n_classes + 1} query channels, "
                             f"got {image.shape[1]} and {query_onehot.shape[1]}")
        if image.shape[0] != query_onehot.shape[0] or image.shape[2:] != query_onehot.shape[2:]:
            raise ValueError(f"image {tuple(image.shape)} and query {tuple(query_onehot.shape)} differ in batch "
                             "size or spatial shape")
        spatial, multiple = tuple(image.shape[2:]), self.size_multiple
        if any(s % m for s, m in zip(spatial, multiple)):
            raise ValueError(f"spatial shape {spatial} must be a multiple of {multiple} per axis (the product of the "
                             f"down-sampling rates {self.strides}); pad or crop the input")

    def forward(self, image: torch.Tensor, query_onehot: torch.Tensor) -> QcResUNetOutput:
        """``image (B, image_channels, *spatial)``, ``query_onehot (B, C + 1, *spatial)`` ->
        :class:`QcResUNetOutput` (see the module docstring for the shapes and meaning)."""
        d, sem_logits, dice, nsd = self._branches(image, query_onehot)
        if self.readout is not None and self.readout.is_fitted:
            assert d is not None and sem_logits is not None
            with torch.autocast(device_type=d.device.type, enabled=False):  # a fitted map: float32
                estimate = self.readout(self._readout_input(d, query_onehot, sem_logits, dice, nsd))
            dice, nsd = estimate[:, : self.n_classes + 1], estimate[:, self.n_classes + 1:]
        return QcResUNetOutput(dice=dice, nsd=nsd, sem_logits=sem_logits)

    def readout_features(self, image: torch.Tensor, query_onehot: torch.Tensor) -> torch.Tensor:
        """What the read-out reads, float32 ``(B, readout width)``: :func:`query_pooled_features`
        of the error-map branch, then (with the regression heads) the heads' own DSC and NSD
        estimates; no gradient."""
        return self.readout_inputs(image, query_onehot)[0]

    def readout_inputs(self, image: torch.Tensor, query_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`readout_features` and the error probabilities ``(B, C, *spatial)`` of one pass."""
        if not self.use_decoder:
            raise ValueError("a network without the decoder has no read-out features")
        with torch.no_grad():
            d, sem_logits, dice, nsd = self._branches(image, query_onehot)
            assert d is not None and sem_logits is not None
            return self._readout_input(d, query_onehot, sem_logits, dice, nsd), torch.sigmoid(sem_logits.float())

    def _branches(self, image: torch.Tensor, query_onehot: torch.Tensor) -> tuple[
            torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The last decoder level's features, the error logits and the heads' DSC and NSD (None
        where the network has no such part)."""
        self.check_input(image, query_onehot)
        x = torch.cat([image, query_onehot.to(image.dtype)], dim=1)
        features = []
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
            features.append(h)

        sem_logits = d = None
        if self.use_decoder:
            d = features[2]
            for level, skip in zip(self.decoder_levels, (features[1], features[0], self.full_res_skip(x))):
                d = level(d, skip)
            aggregated = self.eca(torch.cat([d, query_onehot.to(d.dtype)], dim=1))
            sem_logits = self.sem_head(aggregated)

        dice = nsd = None
        if self.use_regression:
            pooled = features[3].flatten(2).mean(dim=2)  # global average pooling of Block 4: (B, widths[3])
            dice = torch.sigmoid(self.dice_head(pooled))
            nsd = torch.sigmoid(self.nsd_head(pooled))
        return d, sem_logits, dice, nsd

    def _readout_input(self, d: torch.Tensor, query_onehot: torch.Tensor, sem_logits: torch.Tensor,
                       dice: torch.Tensor | None, nsd: torch.Tensor | None) -> torch.Tensor:
        pooled = query_pooled_features(d, query_onehot, sem_logits, surface=self.readout_surface)
        if dice is None or nsd is None:
            return pooled
        return torch.cat([pooled, dice.detach().float(), nsd.detach().float()], dim=1)


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def _sem_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float, *,
                   per_sample: bool = False) -> torch.Tensor:
    """``1 -`` the mean over classes of the soft Dice of ``sigmoid(logits)``, TP and volumes summed
    over the batch and the voxels (Drozdzal et al. 2016, as in section 2.3.3); ``per_sample``: summed
    over each sample's voxels only, the mean taken over samples and classes."""
    # segqc.nn.losses.soft_dice_loss does not fit: it takes a softmax over mutually exclusive
    # classes, integer targets, skips channel 0 and assumes 2D; the error maps are independent
    # (possibly overlapping) binary maps under a sigmoid, and every channel is a foreground class.
    # Same smoothing convention as soft_dice_loss, though.
    probs = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim)) if per_sample else (0, *range(2, logits.ndim))
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()


def qcresunet_loss(
    output: QcResUNetOutput,
    dice_true: torch.Tensor | None,
    nsd_true: torch.Tensor | None,
    sem_true: torch.Tensor | None,
    *,
    lam: float = 1.0,
    smooth: float = 1e-5,
    per_sample_dice: bool = False,
    weighting: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``L = L_MAE + lam * (L_Dice + L_BCE)`` (section 2.3.3) and its parts.

    ``dice_true``, ``nsd_true``: ``(B, C + 1)`` in [0, 1] (same layout as the outputs: entry 0 the
    whole segmentation, the paper's one estimate; 1..C the classes, segqc's addition);
    ``sem_true``: ``(B, C, *spatial)`` in {0, 1}. A target may be None only where the output part
    is None (ablations); a missing part contributes 0. ``weighting`` (:data:`LOSS_WEIGHTINGS`)
    says how the C + 1 estimates and the C error maps are weighed:

    * ``mae`` = mae_dice + mae_nsd. ``mean``: each the absolute error averaged over the batch and
      all C + 1 entries (the whole segmentation's estimate weighs 1 / (C + 1)). ``paper``: the
      whole segmentation's absolute error averaged over the batch — the paper's term, at its
      weight 1 — plus the per-class entries' absolute error averaged over the batch and classes.
    * ``sem_dice`` = 1 - the batch soft Dice ``(2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)``,
      ``p = sigmoid(sem_logits)``, averaged over the C classes (``mean``) or summed over them as
      the paper does (``paper``: C - the sum of the classes' Dice). The paper writes the negative
      Dice; shifting by a constant changes no gradient and keeps the loss non-negative. A class
      without any error voxel in the whole batch scores ``smooth / (sum(p) + smooth)``: 1 (no loss)
      only if nothing is predicted, close to 0 (loss close to 1) otherwise; never NaN.
      ``per_sample_dice``: the soft Dice of each sample and class, averaged over samples (``smooth``
      1 instead of ``smooth``, so that a sample without error voxels gives a loss that falls as its
      predicted error volume falls).
    * ``sem_bce`` = binary cross-entropy of ``sigmoid(sem_logits)`` against ``sem_true``, averaged
      over batch, classes and voxels (both terms, computed from the logits for stability; the
      paper's formula shows only the positive term).

    Returns ``(total, {"mae", "mae_dice", "mae_nsd", "sem_dice", "sem_bce", "total"})``, scalar
    tensors (detached copies in the dict).
    """
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {weighting!r}")
    parts: dict[str, torch.Tensor] = {}
    present = [t for t in (output.dice, output.nsd, output.sem_logits) if t is not None]
    if not present:
        raise ValueError("the output has neither DSC/NSD predictions nor error maps")
    zero = present[0].new_zeros(())
    for name, pred, true in (("mae_dice", output.dice, dice_true), ("mae_nsd", output.nsd, nsd_true)):
        if pred is None:
            parts[name] = zero
            continue
        if true is None or true.shape != pred.shape:
            raise ValueError(f"{name}: target of shape {tuple(pred.shape)} needed, got "
                             f"{None if true is None else tuple(true.shape)}")
        error = (pred - true.to(pred.dtype)).abs()
        parts[name] = error.mean() if weighting == "mean" else error[:, 0].mean() + error[:, 1:].mean()
    parts["mae"] = parts["mae_dice"] + parts["mae_nsd"]

    logits = output.sem_logits
    if logits is None:
        parts["sem_dice"] = parts["sem_bce"] = zero
    else:
        if sem_true is None or sem_true.shape != logits.shape:
            raise ValueError(f"sem_true of shape {tuple(logits.shape)} needed, got "
                             f"{None if sem_true is None else tuple(sem_true.shape)}")
        target = sem_true.to(logits.dtype)
        parts["sem_dice"] = _sem_dice_loss(logits, target, 1.0 if per_sample_dice else smooth,
                                           per_sample=per_sample_dice)
        if weighting == "paper":
            parts["sem_dice"] = parts["sem_dice"] * logits.shape[1]
        parts["sem_bce"] = F.binary_cross_entropy_with_logits(logits, target)
    total = parts["mae"] + lam * (parts["sem_dice"] + parts["sem_bce"])
    parts["total"] = total
    return total, {k: v.detach() for k, v in parts.items()}
