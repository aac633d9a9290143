"""Sampling a few samples per network pass gives what drawing them all at once gave.

Each method's ``predict_slices`` takes at most a few slices per pass (``per_pass``,
``segqc.nn.chunks``) and sums its statistics chunk by chunk. The references here draw every
sample at once the way the code did before chunking (the whole batch through the networks in
one pass, written out in this file, or the chunking forced off with one chunk of every sample)
and take the mean and the population standard deviation with plain torch over all samples. A
counting hook shows the largest network pass stays the same when the samples grow, and running
out of memory inside one chunk still fails the case with one line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

import segqc.seg.ldseg.model as ldseg_model
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.nn.diffusion import ancestral_loop, ddim_loop, ddim_timesteps
from segqc.seg.consensus.config import ConsensusConfig
from segqc.seg.consensus.model import ConsensusDiffusion
from segqc.seg.consensus.predict import LoadedConsensus
from segqc.seg.consensus.predict import predict_slices as consensus_predict
from segqc.seg.inference import class_entropy, predict_folder
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import COMPONENTS, Ldseg
from segqc.seg.ldseg.predict import LoadedLdseg
from segqc.seg.ldseg.predict import predict_slices as ldseg_predict
from segqc.seg.probunet.config import ProbUnetConfig
from segqc.seg.probunet.model import ProbUnet
from segqc.seg.probunet.predict import LoadedProbUnet
from segqc.seg.probunet.predict import predict_slices as probunet_predict
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet, set_mc_dropout
from segqc.seg.unet.predict import LoadedUnet
from segqc.seg.unet.predict import predict_slices as unet_predict
from segqc.training import save_checkpoint

ALL_AT_ONCE = 10**6  # a per_pass no test batch reaches: one chunk of every sample


def _perturbed(model: torch.nn.Module, seed: int) -> None:
    """Move the weights away from their zero-initialised output layers, so every input matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def _ldseg(seed: int = 0, **changes) -> LoadedLdseg:
    config = LdsegConfig.preset("tiny", **changes)
    torch.manual_seed(seed)
    model = Ldseg(config, image_channels=1, classes=3)
    _perturbed(model, seed)
    return LoadedLdseg(model.eval(), config, (0, 1, 2), {}, 1)


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, size, size)).astype(np.float32)


def _statistics(probs: torch.Tensor) -> dict[str, np.ndarray]:
    """Plain torch over every sample ``(N, n, K, ...)`` at once: population std (ddof 0)."""
    mean = probs.mean(dim=0)
    return {"mean": mean.numpy(), "std": probs.std(dim=0, unbiased=False).numpy(),
            "entropy": class_entropy(mean).numpy(), "label": mean.argmax(dim=1).numpy().astype(np.uint8)}


def _assert_same_statistics(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for key in ("mean", "std", "entropy"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-6, rtol=0, err_msg=key)
    top2 = np.sort(want["mean"], axis=1)
    clear = (top2[:, -1] - top2[:, -2]) > 1e-5  # not a tie within float rounding
    np.testing.assert_array_equal(got["label"][clear], want["label"][clear])
    assert clear.mean() > 0.99


def _ldseg_all_at_once(model: Ldseg, image: torch.Tensor, noise: torch.Tensor, samples: int, steps: int,
                       sampler: str, generator: torch.Generator) -> torch.Tensor:
    """LDSeg's sampler as it was before chunking: the image features repeated for every sample
    and every sample's latents through the denoiser and the decoder in one pass."""
    cfg = model.config
    b = image.shape[0]
    z_image, skips = model.encode_image(image)
    z_image = z_image.repeat(samples, 1, 1, 1)
    skips = [None if m is None else m.repeat(samples, 1, 1, 1) for m in skips]

    def predict_clean(z: torch.Tensor, t: int) -> torch.Tensor:
        return model.denoise(z, z_image, torch.full((z.shape[0],), t, dtype=torch.long))[1]

    if sampler == "ddim":
        z = ddim_loop(predict_clean, noise, model.abar, ddim_timesteps(steps, cfg.timesteps), clip=cfg.clip_latent)
    else:
        z = ancestral_loop(predict_clean, noise, model.abar, clip=cfg.clip_latent, generator=generator)
    probs = torch.softmax(model.label_decoder(z, skips), dim=1)
    return probs.view(samples, b, model.classes, cfg.size, cfg.size)


def _ldseg_reference(loaded: LoadedLdseg, images: np.ndarray, *, samples: int, steps: int, seed: int,
                     batch_size: int, sampler: str) -> torch.Tensor:
    """Every sample's probabilities ``(N, n, K, S, S)``, the noise drawn as ``predict_slices`` documents it."""
    cfg = loaded.config
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size]
            noise = torch.stack([torch.randn((samples, cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                                             generator=torch.Generator().manual_seed(seed * 1_000_003 + start + row))
                                 for row in range(batch.shape[0])], dim=1)
            noise = noise.reshape(-1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
            chunks.append(_ldseg_all_at_once(loaded.model, torch.from_numpy(batch), noise, samples, steps, sampler,
                                             torch.Generator().manual_seed(seed + start)))
    return torch.cat(chunks, dim=1)


class _Rows:
    """Records the batch size of every call of a module's forward."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        module.register_forward_pre_hook(lambda _, args: self.sizes.append(int(args[0].shape[0])))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_ldseg_in_chunks_equals_every_sample_at_once(sampler):
    """7 samples of 3 slices in batches of 2 and 1, at most 6 slices per pass: chunks of 3, 3 and 1
    samples, then 6 and 1 (a short last chunk in both)."""
    loaded = _ldseg(1, timesteps=40, decoder_skips=True)
    images = _images(3)
    options = {"samples": 7, "steps": 3, "seed": 5, "batch_size": 2, "sampler": sampler}
    want = _ldseg_reference(loaded, images, **options)
    rows = _Rows(loaded.model.denoiser)
    got = ldseg_predict(loaded, images, **options, per_pass=6, keep_samples=False)
    assert "samples" not in got
    _assert_same_statistics(got, _statistics(want))
    assert max(rows.sizes) == 6 and min(rows.sizes) == 1
    kept = ldseg_predict(loaded, images, **options, per_pass=6)
    np.testing.assert_allclose(kept["samples"], want.numpy(), atol=1e-6, rtol=0)


def test_the_largest_ldseg_pass_does_not_grow_with_the_samples():
    loaded = _ldseg(2)
    images = _images(2, seed=1)
    largest = {}
    for samples in (8, 64):
        rows, decoded = _Rows(loaded.model.denoiser), _Rows(loaded.model.label_decoder)
        ldseg_predict(loaded, images, samples=samples, steps=2, seed=0, keep_samples=False)
        largest[samples] = (max(rows.sizes), max(decoded.sizes))
    assert largest == {8: (8, 8), 64: (8, 8)}  # SLICES_PER_PASS: 4 samples of 2 slices


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_3d_ldseg_in_chunks_equals_one_chunk_of_every_sample(sampler):
    """6 slices in windows of 4 (starts 0 and 2); 5 samples, 2 per pass (8 slices): chunks of 2, 2, 1.
    The ancestral sampler's noise of every step is the whole draw's, so ddpm agrees too."""
    loaded = _ldseg(3, spatial_dims=3, depth=4, thin_levels=1, timesteps=30)
    images = _images(6, seed=2)
    options = {"samples": 5, "steps": 2, "seed": 4, "sampler": sampler}
    whole = ldseg_predict(loaded, images, **options, per_pass=ALL_AT_ONCE)
    got = ldseg_predict(loaded, images, **options, per_pass=8, keep_samples=False)
    _assert_same_statistics(got, _statistics(torch.from_numpy(whole["samples"])))
    assert whole["samples"].shape == (5, 6, 3, 32, 32)


def test_mc_dropout_passes_summed_as_they_come_equal_the_stacked_passes():
    config = dataclasses.replace(UnetConfig.preset("tiny"), dropout=0.3)
    torch.manual_seed(0)
    network = build_unet(config, image_channels=1, classes=2).eval()
    loaded = LoadedUnet(network, config, (0, 1), {}, 1)
    images = _images(3, seed=3)
    set_mc_dropout(network, True)
    with torch.no_grad():  # as before: the passes of each batch of 2 slices stacked, then the statistics
        batches = []
        for start in (0, 2):
            torch.manual_seed(9 * 1_000_003 + start)
            batch = torch.from_numpy(images[start:start + 2])
            batches.append(torch.stack([torch.softmax(network(batch), dim=1) for _ in range(6)]))
    set_mc_dropout(network, False)
    got = unet_predict(loaded, images, samples=6, seed=9, batch_size=2, keep_samples=False)
    _assert_same_statistics(got, _statistics(torch.cat(batches, dim=1)))
    assert float(got["std"].max()) > 0.01


def test_probabilistic_unet_samples_summed_one_by_one_equal_all_samples():
    config = ProbUnetConfig.preset("tiny")
    torch.manual_seed(0)
    model = ProbUnet(config, image_channels=1, classes=2)
    _perturbed(model, 0)
    loaded = LoadedProbUnet(model.eval(), config, (0, 1), {}, 1)
    images = _images(2, seed=4)
    with torch.no_grad():
        want = torch.cat([model.sample(torch.from_numpy(images[row:row + 1]), 9,
                                       generator=torch.Generator().manual_seed(3 * 1_000_003 + row))
                          for row in range(2)], dim=1)
    got = probunet_predict(loaded, images, samples=9, seed=3, keep_samples=False)
    _assert_same_statistics(got, _statistics(want))
    assert float(got["std"].max()) > 1e-3


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_consensus_in_chunks_equals_every_chain_at_once(sampler):
    """3 levels x 5 generations = 15 chains of one slice, at most 4 per pass: chunks 4, 4, 4, 3."""
    config = ConsensusConfig.preset("tiny", steps=5)
    torch.manual_seed(0)
    model = ConsensusDiffusion(config, image_channels=1)
    _perturbed(model, 0)
    loaded = LoadedConsensus(model.eval(), config, (0, 1), {}, 1, 3)
    images = _images(2, seed=5)
    with torch.no_grad():
        maps = torch.stack([model.sample(torch.from_numpy(images[row:row + 1]), loaded.level_indices(),
                                         generations=5, sampler=sampler, steps=5, per_pass=ALL_AT_ONCE,
                                         generator=torch.Generator().manual_seed(2 * 1_000_003 + row))[:, :, 0]
                            for row in range(2)], dim=2)  # (L, G, n, S, S)
    soft, binary = maps.mean(dim=(0, 1)), (maps >= 0.5).float()
    spread = maps.mean(dim=0).std(dim=0, unbiased=False)
    rows = _Rows(model.unet)
    got = consensus_predict(loaded, images, samples=5, steps=5, seed=2, sampler=sampler, per_pass=4)
    assert max(rows.sizes) == 4 and min(rows.sizes) == 3
    np.testing.assert_allclose(got["mean"][:, 1], soft.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["std"][:, 1], spread.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["levels"], binary.mean(dim=1).numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got["samples"][:, :, 1], binary.reshape(15, 2, 32, 32).numpy())
    assert float(spread.max()) > 1e-3


GEOMETRY = Geometry(shape=(32, 32), spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
ALLOCATOR_FAILURE = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                     "tried to allocate 104857600000 bytes. Error code 12 (Cannot allocate memory)")


def _saved_ldseg(tmp_path: Path, *, model_seed: int, image_seed: int) -> tuple[Path, Path]:
    """A tiny LDSeg saved as a model folder, and a folder of one image ``a``."""
    loaded = _ldseg(model_seed)
    weights = {name: loaded.model.component(name).state_dict() for name in COMPONENTS}
    model_dir = save_checkpoint(tmp_path / "model", method="ldseg", weights=weights,
                                config={"ldseg": loaded.config.to_dict(), "labels": [0, 1, 2], "names": {},
                                        "image_channels": 1})
    images = tmp_path / "images"
    write_image(images / "a_0000.nii.gz", _images(1, seed=image_seed)[0, 0], GEOMETRY)
    return model_dir, images


def test_running_out_of_memory_in_one_chunk_fails_the_case_with_one_line(tmp_path, monkeypatch):
    """The second pass of the label decoder (a chunk of 8 of 20 samples) cannot allocate: the case
    fails with the one line naming --samples, and the first chunk did run."""
    model_dir, images = _saved_ldseg(tmp_path, model_seed=4, image_seed=6)
    passes = []
    forward = ldseg_model.LabelDecoder.forward

    def second_pass_fails(self, z, skips=()):
        passes.append(int(z.shape[0]))
        if len(passes) == 2:
            raise RuntimeError(ALLOCATOR_FAILURE)
        return forward(self, z, skips)

    monkeypatch.setattr(ldseg_model.LabelDecoder, "forward", second_pass_fails)
    report = predict_folder(model_dir, images, tmp_path / "out", samples=20)
    assert passes == [8, 8]
    assert report.failed == {
        "a": f"{images / 'a_0000.nii.gz'}: ran out of memory drawing 20 sample(s) per slice; lower --samples"}


def test_keeping_no_sample_writes_the_same_maps_as_keeping_them(tmp_path):
    """``--save samples`` keeps every sample's probabilities; without it none are kept, and the
    probabilities and std written are the same."""
    model_dir, images = _saved_ldseg(tmp_path, model_seed=5, image_seed=7)
    predict_folder(model_dir, images, tmp_path / "kept", samples=11, save=["probabilities", "std", "samples"])
    predict_folder(model_dir, images, tmp_path / "not", samples=11, save=["probabilities", "std"])
    assert len(list((tmp_path / "kept" / "samples").iterdir())) == 11
    assert not (tmp_path / "not" / "samples").exists()
    for name in ("probabilities/a_1.nii.gz", "std/a_2.nii.gz", "a.nii.gz", "uncertainty/a.nii.gz"):
        kept = np.asarray(nibabel.load(str(tmp_path / "kept" / name)).dataobj)
        plain = np.asarray(nibabel.load(str(tmp_path / "not" / name)).dataobj)
        np.testing.assert_array_equal(kept, plain, err_msg=name)
