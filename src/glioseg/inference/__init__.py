"""Inference: sliding-window prediction, test-time augmentation, post-processing, writing NIfTI."""
