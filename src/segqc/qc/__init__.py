"""GT-free quality control: pseudo-ground-truth methods (nnQC, CAE baseline) and their driver."""
