"""LDSeg: latent diffusion segmentation (Zaman et al.), 2D slices."""
