"""Segmentation methods (``segqc seg``): each a package with the four files of docs/ARCHITECTURE.md."""
