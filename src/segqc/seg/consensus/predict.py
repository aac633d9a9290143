"""Loading a trained consensus diffusion model and sampling slices (arrays to arrays).

:func:`predict_slices` runs, for every slice, all consensus levels of ``C`` raters (``C`` = the
config's ``inference_raters``, default the most raters of a training slice) times ``generations``
chains together, a few per network pass (paper Algorithm 2, with the generations of §3
"Employing multiple generations") and returns:

* ``mean`` ``(n, 2, S, S)``: background / foreground probability; the foreground is the soft map,
  the mean over levels and generations of the sampled maps (each in [0, 1]) — the fraction of
  raters expected to mark the pixel;
* ``std`` ``(n, 2, S, S)``: the standard deviation over the generations of each generation's soft
  map (the mean over its levels) — how much the soft map itself varies between runs;
* ``entropy`` (binary, nats) of the soft map and ``label`` (soft map ≥ 0.5: the majority);
* ``samples`` ``(C · G, n, 2, S, S)``: every level map of every generation, binarised at 0.5
  (level-major), as one-hot probabilities — a set of rater-like masks for GED and HM-IoU;
* ``levels`` ``(C, n, S, S)``: per level, the fraction of generations that mark the pixel
  (``segqc seg predict --save levels`` writes it thresholded at 0.5: the map at consensus level c).

The noise of a slice comes from a CPU generator seeded by ``seed`` and the slice's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segqc.errors import InputError
from segqc.nn.chunks import SLICES_PER_PASS
from segqc.seg.consensus.config import ConsensusConfig
from segqc.seg.consensus.model import ConsensusDiffusion, level_index
from segqc.seg.consensus.train import COMPONENTS, METHOD
from segqc.seg.inference import LoadedSegModel, class_entropy, model_directory
from segqc.training import checkpoint_fits, load_checkpoint, select_device

__all__ = ["LoadedConsensus", "load", "predict_slices"]


@dataclass
class LoadedConsensus(LoadedSegModel):
    """A trained consensus model (eval mode), its config, labels (0, 1), names, image channels and
    the most raters of a training slice."""

    model: ConsensusDiffusion
    config: ConsensusConfig
    labels: tuple[int, ...]
    names: dict[str, str]
    image_channels: int
    max_raters: int
    rater_names: tuple[str, ...] = ()

    @property
    def samples(self) -> int:
        """Generations per level (the ``--samples`` of ``segqc seg predict``)."""
        return int(self.config.generations)

    @property
    def steps(self) -> int:
        return int(self.config.steps if self.config.sampler == "ddim" else self.config.timesteps)

    @property
    def raters(self) -> int:
        """C: the number of consensus levels sampled per slice (``annotator``: every rater of
        the training data)."""
        if self.config.mode == "annotator":
            return max(len(self.rater_names), self.max_raters)
        return int(self.config.inference_raters or self.max_raters)

    def level_indices(self) -> list[int]:
        """The lookup indices of the C levels, of every annotator, or C unconditioned draws."""
        if self.config.mode == "annotator":
            return list(range(1, self.raters + 1))
        return [level_index(self.config, c, self.raters) if self.config.mode == "consensus" else 0
                for c in range(1, self.raters + 1)]


def load(model_dir: str | Path, *, device: str = "cpu") -> LoadedConsensus:
    """The trained model of a model directory (or of a training run folder), on ``device``."""
    directory = model_directory(model_dir)
    saved, weights, _ = load_checkpoint(directory, method=METHOD)
    with checkpoint_fits(directory, "consensus model"):
        config = ConsensusConfig.from_dict(saved["consensus"])
        channels = int(saved["image_channels"])
        model = ConsensusDiffusion(config, image_channels=channels)
        missing = [name for name in COMPONENTS if name not in weights]
        if missing:
            raise KeyError(f"no weights for {', '.join(missing)}")
        for name in COMPONENTS:
            getattr(model, name).load_state_dict(weights[name])
        max_raters = int(saved["max_raters"])
        rater_names = tuple(str(n) for n in saved.get("rater_names", []))
    return LoadedConsensus(model.eval().to(select_device(device)), config, (0, 1),
                           {str(k): str(v) for k, v in dict(saved.get("names", {})).items()}, channels, max_raters,
                           rater_names)


def predict_slices(model: LoadedConsensus, images: np.ndarray, *, samples: int | None = None,
                   steps: int | None = None, seed: int = 0, sampler: str | None = None,
                   keep_samples: bool = True, per_pass: int = SLICES_PER_PASS) -> dict[str, np.ndarray]:
    """Soft maps and more of ``images`` ``(n, C, S, S)`` (module docstring); ``samples`` =
    generations per level, ``steps`` = DDIM steps, both defaulting to the config. Giving ``steps``
    to a model whose sampler is ancestral (``ddpm``) samples with DDIM over that many steps (the
    ancestral sampler always takes all T steps). Slice by slice: the network takes ``per_pass``
    chains per pass (:meth:`~segqc.seg.consensus.model.ConsensusDiffusion.sample`) and only a slice's own
    maps are held, so memory grows with the generations by one slice's maps (the size of its
    noise) only; ``keep_samples`` also returns ``samples``, every level map of every slice (linear
    in the generations)."""
    cfg = model.config
    generations = int(cfg.generations if samples is None else samples)
    sampler = sampler or ("ddim" if steps is not None else cfg.sampler)
    steps = int(cfg.steps if steps is None else steps)
    if generations < 1 or not 1 <= steps <= cfg.timesteps:
        raise InputError(f"need samples >= 1 and 1 <= steps <= {cfg.timesteps}; got {generations}, {steps}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != model.image_channels or images.shape[2:] != (cfg.size, cfg.size):
        raise InputError(f"need slices (n, {model.image_channels}, {cfg.size}, {cfg.size}); got {images.shape}")
    device = next(model.model.parameters()).device
    indices = model.level_indices()
    per_slice = []
    with torch.no_grad():
        for row in range(images.shape[0]):
            generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + row)
            maps = model.model.sample(torch.from_numpy(images[row:row + 1]).to(device), indices,
                                      generations=generations, sampler=sampler, steps=steps, generator=generator,
                                      per_pass=per_pass)
            per_slice.append(_slice_outputs(maps[:, :, 0].cpu(), keep_samples))  # (L, G, S, S)
    return {key: np.stack([part[key] for part in per_slice], axis=1 if key in ("samples", "levels") else 0)
            for key in per_slice[0]}


def _slice_outputs(maps: torch.Tensor, keep_samples: bool) -> dict[str, np.ndarray]:
    """One slice's outputs (module docstring, without the slice axis) from its maps ``(L, G, S,
    S)``: ``mean`` ``(2, S, S)``, ``std`` (population, over the generations), ``entropy``,
    ``label``, ``levels`` ``(L, S, S)`` and, with ``keep_samples``, ``samples`` ``(L G, 2, S, S)``."""
    soft = maps.mean(dim=(0, 1))
    spread = maps.mean(dim=0).std(dim=0, unbiased=False)  # over the generations' soft maps
    binary = (maps >= 0.5).float()
    mean = torch.stack([1 - soft, soft], dim=0)
    out = {"mean": mean.numpy(), "std": torch.stack([spread, spread], dim=0).numpy(),
           "entropy": class_entropy(mean[None])[0].numpy(), "label": (soft >= 0.5).numpy().astype(np.uint8),
           "levels": binary.mean(dim=1).numpy()}
    if keep_samples:
        flat = binary.reshape(-1, *binary.shape[2:])  # (L * G, S, S), level-major
        out["samples"] = torch.stack([1 - flat, flat], dim=1).numpy()
    return out
