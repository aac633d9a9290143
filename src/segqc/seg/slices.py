"""2D training slices of an nnU-Net-style dataset, shared by the segmentation methods (``segqc seg``).

Every case is read through :mod:`segqc.io` (``imagesTr/CASE_XXXX`` channels, ``labelsTr/CASE``);
its arrays are in ITK index order ``(i, j[, k])``, so a 3D volume gives one slice per index of its
last axis ``k`` (the stored slice axis: ACDC's short-axis slices) and a 2D image (e.g. HC18
ultrasound) one slice. Each channel is z-scored over the whole case (mean 0, standard deviation 1);
every slice is resampled in-plane to ``size`` x ``size`` px — images bilinearly (antialiased),
label maps by nearest neighbour — so the aspect ratio and the physical spacing are not kept (the
networks see a fixed grid; :mod:`segqc.seg.inference` resamples the probabilities back to each
input grid). No reorientation. With ``spacing_mm`` > 0 (a config's field of view) each slice is
first cut to the window of ``size * spacing_mm`` mm centred on the slice's centre
(:func:`slice_window`; padded with the channel's minimum, label 0, where the window reaches past
the image), so the network sees ``spacing_mm`` mm per pixel whatever the scanner's field of view;
what lies outside the window is background at inference. Label values are the ``dataset.json`` labels (with
0; the values found in the training maps when it names none), mapped to class indices 0..K-1 in
sorted order; a map holding another value is refused with one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segqc.errors import InputError
from segqc.io.datasets import Dataset
from segqc.metrics.counts import chunked_bincount
from segqc.windows import crop_window

__all__ = ["SliceData", "Window", "add_noise_rows", "build_training_data", "crop_or_pad", "flip_rows", "image_slices",
           "label_slices", "make_batch", "make_stack_batch", "noisy_and_clean", "pad_stack", "slice_window"]

Window = tuple[int, int, int, int]
"""``(top, left, height, width)`` of a slice window in pixels of the slice; top / left may be
negative and top + height / left + width may pass the slice's size (padding)."""


def slice_window(shape: Sequence[int], spacing: Sequence[float] | None, size: int, spacing_mm: float) -> Window | None:
    """The window (pixels) of a ``size * spacing_mm`` mm square centred on a slice of ``shape``
    ``(H, W, ...)`` and ``spacing`` (mm along H and W); None (the whole slice) when ``spacing_mm``
    is 0. Raises ``ValueError`` when a field of view is asked for and no spacing is given."""
    if spacing_mm <= 0:
        return None
    if spacing is None or len(spacing) < 2:
        raise ValueError("a field of view in mm (spacing_mm) needs the image's spacing")
    height, width = (max(1, round(size * spacing_mm / float(spacing[d]))) for d in (0, 1))
    return (int(shape[0]) - height) // 2, (int(shape[1]) - width) // 2, height, width


def crop_or_pad(array: np.ndarray, window: Window | None, fill: float | np.ndarray = 0) -> np.ndarray:
    """``array[..., H, W]`` cut to ``window`` (:data:`Window`); pixels outside the array get
    ``fill`` (a scalar, or one value per entry of the leading axes, broadcast). None: unchanged."""
    if window is None:
        return array
    top, left, height, width = window
    return crop_window(array, (top, left), (height, width), np.reshape(fill, np.shape(fill) + (1, 1)))


def _as_slices(array: np.ndarray) -> np.ndarray:
    """``(n, H, W)``: the slices of a 3D array ``(H, W, n)`` (ITK index order: one slice per
    index of the last axis) or the one 2D image ``(H, W)``."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return np.moveaxis(array, -1, 0)
    raise ValueError(f"need a 2D or 3D array, got shape {array.shape}")


def image_slices(channels: Sequence[np.ndarray], size: int, *, spacing: Sequence[float] | None = None,
                 spacing_mm: float = 0.0) -> np.ndarray:
    """``(n, C, size, size)`` float32: each channel z-scored over the whole case (a constant
    channel becomes 0), sliced along the last axis of a 3D array, cut to the field of view of
    ``spacing_mm`` (:func:`slice_window`; ``spacing``: the case's, mm) when that is > 0 and
    resampled bilinearly (antialiased) to ``size`` x ``size``. Inputs are not modified."""
    stacked = []
    for channel in channels:
        values = np.asarray(channel, dtype=np.float32)
        std = float(values.std(dtype=np.float64))  # float32 squares overflow above about 1.8e19
        mean = float(values.mean(dtype=np.float64))
        stacked.append(_as_slices((values - mean) / std if std > 0 else np.zeros_like(values)))
    slices = np.stack(stacked, axis=1)  # (n, C, H, W)
    window = slice_window(np.shape(channels[0]), spacing, size, spacing_mm)
    if window is not None:  # pad with each channel's minimum
        slices = crop_or_pad(slices, window, np.array([[float(channel.min()) for channel in stacked]], np.float32))
    volume = torch.from_numpy(np.ascontiguousarray(slices))
    resized = F.interpolate(volume, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.numpy().astype(np.float32)


def label_slices(label: np.ndarray, values: Sequence[int], size: int, *, spacing: Sequence[float] | None = None,
                 spacing_mm: float = 0.0) -> np.ndarray:
    """``(n, size, size)`` uint8 class indices (position in ``values``) of a label map, cut to the
    field of view as :func:`image_slices` (outside the map: background) and resampled by nearest
    neighbour. A value not in ``values`` raises ``ValueError``."""
    window = slice_window(np.shape(label), spacing, size, spacing_mm)
    array = _as_slices(np.asarray(label))
    lookup = {int(v): k for k, v in enumerate(values)}
    unknown = sorted(set(np.unique(array).tolist()) - set(lookup))
    if unknown:
        raise ValueError(f"label values {unknown} are not among {list(values)}")
    index = np.zeros(array.shape, dtype=np.uint8)
    for value, k in lookup.items():
        index[array == value] = k
    index = crop_or_pad(index, window, lookup.get(0, 0))
    resized = F.interpolate(torch.from_numpy(index[:, None].astype(np.float32)), size=(size, size), mode="nearest")
    return resized[:, 0].numpy().astype(np.uint8)


@dataclass
class SliceData:
    """Training slices: ``images`` ``(N, C, S, S)`` float16, ``gts`` ``(N, S, S)`` class indices,
    ``cases[i]`` the case of slice i; ``labels``: the label value of each class index."""

    images: np.ndarray
    gts: np.ndarray
    cases: list[str]
    labels: tuple[int, ...]
    names: dict[str, str] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.gts.shape[0])

    @property
    def image_channels(self) -> int:
        return int(self.images.shape[1])

    def case_range(self, index: int) -> tuple[int, int]:
        """``(first, end)``: the slices of the case of slice ``index`` (each case's slices are
        consecutive and in slice order)."""
        case = self.cases[index]
        first = index
        while first > 0 and self.cases[first - 1] == case:
            first -= 1
        end = index + 1
        while end < len(self.cases) and self.cases[end] == case:
            end += 1
        return first, end

    def summary(self) -> dict[str, Any]:
        """What identifies the data in the run record (a rerun on other data is refused)."""
        from segqc.training.stages import arrays_crc32

        counts = chunked_bincount(self.gts, minlength=len(self.labels))
        return {"slices": self.n_slices, "cases": len(set(self.cases)), "labels": list(self.labels),
                "image_channels": self.image_channels, "size": int(self.gts.shape[-1]),
                "class_pixels": [int(c) for c in counts], "crc32": arrays_crc32((self.images, self.gts))}


def _prepare_case(item: tuple[str, list[Path], Path], *, size: int, values: tuple[int, ...],
                  spacing_mm: float = 0.0, ignore: int | None = None) -> dict[str, Any]:
    from segqc.io.images import read_image, read_label_map

    case, image_paths, label_path = item
    channels = [read_image(path, finite=True) for path in image_paths]
    label = read_label_map(label_path)
    if ignore is not None and bool((label.array == ignore).any()):
        raise InputError(f"holds the value {ignore} of dataset.json's \"ignore\" label; segmentation training "
                         "needs every voxel labelled: give these voxels a class or leave the case out", label_path)
    for image in channels:
        if image.array.shape != label.array.shape:
            raise InputError(f"image shape {image.array.shape} differs from its label map's {label.array.shape}",
                             image.path)
    spacing = label.geometry.spacing
    try:
        gts = label_slices(label.array, values, size, spacing=spacing, spacing_mm=spacing_mm)
    except ValueError as error:
        raise InputError(str(error), label_path) from None
    images = image_slices([c.array for c in channels], size, spacing=spacing, spacing_mm=spacing_mm)
    return {"images": images.astype(np.float16), "gts": gts}


def _label_values(dataset: Dataset, cases: Sequence[str]) -> tuple[int, ...]:
    from segqc.io.images import read_label_map

    values = {0} | {int(v) for v in dataset.info.labels}
    if not dataset.info.labels:  # no names: the values the maps hold
        for case in cases:
            values |= {int(v) for v in np.unique(read_label_map(dataset.label_files[case]).array)}
    if dataset.info.ignore is not None:  # never a class (maps that hold it are refused case by case)
        values.discard(int(dataset.info.ignore))
    return tuple(sorted(values))


def build_training_data(dataset_dir: str | Path, cases: Sequence[str] | None, size: int, *, spacing_mm: float = 0.0,
                        jobs: int = 1, progress: bool = False) -> SliceData:
    """The training slices of ``cases`` (default: all) of an nnU-Net folder (module docstring;
    ``spacing_mm`` > 0: the field of view of :func:`slice_window`).
    Raises :class:`InputError` naming the file for an unreadable case or an unexpected label, and
    naming the dataset when no training slice has foreground (in the field of view)."""
    from segqc.execution import map_cases

    dataset = Dataset.open(dataset_dir)
    chosen = dataset.select(cases)
    values = _label_values(dataset, chosen)
    items = [(case, list(dataset.image_files[case]), Path(dataset.label_files[case])) for case in chosen]
    function = partial(_prepare_case, size=size, values=values, spacing_mm=spacing_mm, ignore=dataset.info.ignore)
    results: dict[str, dict[str, Any]] = {}
    for item, result in map_cases(function, items, jobs=jobs, description="prepare", progress=progress):
        if isinstance(result, Exception):
            raise result
        results[item[0]] = result
    ordered = [results[case] for case in chosen]  # case order, whatever the completion order
    if not any(r["gts"].any() for r in ordered):  # a model of background only is useless: say so
        from segqc.training.cases import NO_FOREGROUND

        raise InputError(NO_FOREGROUND, dataset.root)
    names = {str(v): str(n) for v, n in dataset.info.labels.items()}
    return SliceData(np.concatenate([r["images"] for r in ordered]), np.concatenate([r["gts"] for r in ordered]),
                     [case for case, r in zip(chosen, ordered) for _ in range(r["gts"].shape[0])], values, names)


def make_batch(data: SliceData, indices: Sequence[int], *, rng: np.random.Generator | None = None,
               flip: bool = False, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (B, C, S, S) float32 and ``gt`` (B, S, S) int64 of slices ``indices``; with
    ``rng``, ``flip`` flips each slice along each axis with probability 1/2 and ``noise`` > 0
    adds Gaussian noise to half of the slices (:func:`add_noise_rows`)."""
    images = data.images[list(indices)].astype(np.float32)
    gts = data.gts[list(indices)].astype(np.int64)
    if flip and rng is not None:
        flip_rows(images, gts, rng)
    if noise > 0 and rng is not None:
        add_noise_rows(images, rng, noise)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(gts))


def pad_stack(images: np.ndarray, depth: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Consecutive slices ``images`` ``(n, C, S, S)`` (and their class indices ``labels`` ``(n, S,
    S)``) padded after the last slice to ``depth`` slices: images with each channel's minimum over
    the given slices (as beyond a field of view), labels with class 0. ``n >= depth``: unchanged."""
    n = images.shape[0]
    if n >= depth:
        return images, labels
    fill = images.min(axis=(0, 2, 3), keepdims=True)
    padded = np.concatenate([images, np.broadcast_to(fill, (depth - n, *images.shape[1:])).astype(images.dtype)])
    if labels is not None:
        labels = np.concatenate([labels, np.zeros((depth - n, *labels.shape[1:]), dtype=labels.dtype)])
    return padded, labels


def make_stack_batch(data: SliceData, indices: Sequence[int], depth: int, *, rng: np.random.Generator | None = None,
                     flip: bool = False, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3D counterpart of :func:`make_batch`: ``image`` (B, C, depth, S, S) float32 and ``gt``
    (B, depth, S, S) int64, row b the ``depth`` consecutive slices of slice ``indices[b]``'s case
    centred on it as far as the case allows (a case with fewer slices: all of them, padded by
    :func:`pad_stack`); ``flip`` and ``noise`` as :func:`make_batch`, per stack."""
    images, gts = [], []
    for index in indices:
        first, end = data.case_range(int(index))
        start = min(max(int(index) - depth // 2, first), max(first, end - depth))
        stop = min(start + depth, end)
        image, gt = pad_stack(data.images[start:stop].astype(np.float32), depth, data.gts[start:stop].astype(np.int64))
        assert gt is not None
        images.append(np.moveaxis(image, 0, 1))  # (C, depth, S, S)
        gts.append(gt)
    image_batch, gt_batch = np.stack(images), np.stack(gts)
    if flip and rng is not None:
        flip_rows(image_batch, gt_batch, rng)
    if noise > 0 and rng is not None:
        add_noise_rows(image_batch, rng, noise)
    return torch.from_numpy(np.ascontiguousarray(image_batch)), torch.from_numpy(np.ascontiguousarray(gt_batch))


def add_noise_rows(images: np.ndarray, rng: np.random.Generator, max_sigma: float) -> None:
    """In place: each row of ``images`` ``(B, C, S, S)`` (or stacks ``(B, C, D, S, S)``), with
    probability 1/2, gets white Gaussian noise whose standard deviation is ``u`` times each
    channel's intensity range (max - min of that slice; 0 for a constant channel) with ``u`` uniform in
    ``[0, max_sigma]`` — the measure of the noise sweeps (``benchmarks/seg/seg_sweeps.py``),
    applied to the preprocessed slice. ``max_sigma`` 0 leaves the rows unchanged."""
    if max_sigma <= 0:
        return
    for row in range(images.shape[0]):
        if rng.random() >= 0.5:
            continue
        level = rng.uniform(0.0, max_sigma)
        span = (images[row].max(axis=(-2, -1)) - images[row].min(axis=(-2, -1))).astype(np.float32)
        scale = (level * span)[..., None, None]
        images[row] += scale * rng.standard_normal(images[row].shape).astype(np.float32)


def noisy_and_clean(image: torch.Tensor, rng: np.random.Generator,
                    max_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy, clean)`` of a batch built without noise: ``clean`` a copy of ``image``, ``noisy``
    ``image`` itself (a CPU tensor) after :func:`add_noise_rows` in place with ``rng`` — the same
    draws as building the batch with ``noise=max_sigma``, so the noisy rows equal plain noise
    augmentation's."""
    clean = image.clone()
    add_noise_rows(image.numpy(), rng, max_sigma)
    return image, clean


def flip_rows(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> None:
    """In place: each row of ``images`` ``(B, C, S, S)`` and of its ``targets`` ``(B, ..., S, S)``
    flipped along each of the last two axes with probability 1/2 (the same flips for both)."""
    for row in range(images.shape[0]):
        for axis in (-1, -2):
            if rng.random() < 0.5:
                images[row] = np.flip(images[row], axis=axis)
                targets[row] = np.flip(targets[row], axis=axis)
