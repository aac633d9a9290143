"""Probabilistic U-Net (Kohl et al. 2018): a baseline that samples plausible segmentations from a latent space."""
