"""QCResUNet: joint subject-level (DSC, NSD) and voxel-level (segmentation error map) quality prediction."""
