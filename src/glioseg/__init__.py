"""glioseg: brain glioma segmentation in multi-modal MRI with 3D U-Nets."""

__version__ = "0.1.0"
