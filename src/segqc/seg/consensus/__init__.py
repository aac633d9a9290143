"""Consensus diffusion (Amit et al.): soft maps of annotator agreement from consensus-level diffusion."""
