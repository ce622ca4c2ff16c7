"""The U-Net family: simple, residual and spatial-attention 3D U-Nets returning logits.

Build one with :func:`build_network` (a name and options, or a :class:`NetworkConfig`).
"""

from glioseg.networks.blocks import NORMS, ConvBlock, ResidualBlock, SpatialAttention
from glioseg.networks.unet import (
    HEADS,
    NETWORKS,
    PAPER_FILTERS,
    NetworkConfig,
    UNet,
    build_network,
    count_parameters,
    forward_gflops,
    paper_dropout,
)

__all__ = [
    "HEADS",
    "NETWORKS",
    "NORMS",
    "PAPER_FILTERS",
    "ConvBlock",
    "NetworkConfig",
    "ResidualBlock",
    "SpatialAttention",
    "UNet",
    "build_network",
    "count_parameters",
    "forward_gflops",
    "paper_dropout",
]
