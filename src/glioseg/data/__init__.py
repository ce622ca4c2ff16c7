"""Data: case discovery for every BraTS layout, NIfTI io, preprocessing, datasets, synthetic cohorts."""
