"""The U-Net family: simple, residual and spatial-attention 3D U-Nets returning logits.

Build one from the ``model`` section of a preset: ``build_network(ModelConfig(...), in_channels)``.
"""

from glioseg.networks.blocks import NORMS, ConvBlock, ResidualBlock, SpatialAttention
from glioseg.networks.unet import (
    DROPOUT_SCHEDULES,
    NETWORKS,
    PAPER_FILTERS,
    ModelConfig,
    UNet,
    build_network,
    count_parameters,
    dropout_schedule,
    forward_gflops,
)

__all__ = [
    "DROPOUT_SCHEDULES",
    "NETWORKS",
    "NORMS",
    "PAPER_FILTERS",
    "ConvBlock",
    "ModelConfig",
    "ResidualBlock",
    "SpatialAttention",
    "UNet",
    "build_network",
    "count_parameters",
    "dropout_schedule",
    "forward_gflops",
]
