"""Baseline QC methods, compared with nnQC through the same train/predict/benchmark driver."""
