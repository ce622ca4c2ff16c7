"""Building blocks of the U-Net family: normalisation, convolution blocks, spatial attention.

Every block keeps the spatial size of its input (3x3x3 convolutions with padding 1);
only the U-Net's pooling and up-convolutions change resolution. Shapes below use
``N`` for the batch, ``C`` for channels and ``D, H, W`` for the spatial axes.

The two convolution blocks share one constructor signature, ``block(in_channels,
out_channels, *, norm, dropout)``, so the U-Net can take either as an argument
(:class:`BlockType`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from glioseg.config.sections import NORMS

MAX_GROUPS = 8
"""Group norm uses this many groups, or the largest divisor of the channels below it."""


def group_count(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The number of groups for group norm: ``max_groups`` or fewer if it does not divide.

    Args:
        channels: number of channels to normalise.
        max_groups: the preferred number of groups.

    Returns:
        The largest ``g <= max_groups`` that divides ``channels`` (at least 1).
    """
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def make_norm(norm: str, channels: int) -> nn.Module:
    """Build the normalisation layer named ``norm`` for ``channels`` channels.

    Args:
        norm: one of :data:`NORMS`. ``"instance"`` is affine (learned scale and shift),
            like batch and group norm; ``"none"`` gives an identity.
        channels: number of channels ``C`` of the ``(N, C, D, H, W)`` input.

    Returns:
        A module mapping ``(N, C, D, H, W)`` to the same shape.

    Raises:
        ValueError: if ``norm`` is not one of :data:`NORMS`.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def conv3x3x3(in_channels: int, out_channels: int) -> nn.Conv3d:
    """A 3x3x3 convolution with 'same' padding and a bias (Keras ``Conv3D`` defaults)."""
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)


class BlockType(Protocol):
    """What the U-Net needs from a block class: this constructor, shape-preserving forward."""

    def __call__(self, in_channels: int, out_channels: int, *, norm: str, dropout: float) -> nn.Module: ...


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions, each followed by norm and ReLU, dropout between them.

    This is one level of the simple 3D U-Net of the paper's origin (Keras) tutorial::

        conv -> norm -> ReLU -> dropout -> conv -> norm -> ReLU

    With ``norm="none"`` the norms are identities and the block is exactly the tutorial's.

    Args:
        in_channels: channels of the input.
        out_channels: channels of both convolutions' outputs.
        norm: one of :data:`NORMS`.
        dropout: drop probability between the two convolutions (0 disables it).

    Shape:
        ``(N, in_channels, D, H, W) -> (N, out_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm: str, dropout: float) -> None:
        super().__init__()
        self.conv1 = conv3x3x3(in_channels, out_channels)
        self.norm1 = make_norm(norm, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3x3(out_channels, out_channels)
        self.norm2 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(N, in_channels, D, H, W)``."""
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.dropout(x)
        return self.relu(self.norm2(self.conv2(x)))


class ResidualBlock(ConvBlock):
    """A residual block: two 3x3x3 convolutions with norm and ReLU, plus a shortcut.

    ::

        x ──> conv -> norm -> ReLU -> dropout -> conv -> norm ──(+)──> ReLU
        └────────────── shortcut (1x1x1 conv if channels change) ──┘

    The shortcut is an identity when ``in_channels == out_channels`` and a 1x1x1
    convolution (with bias, no norm) otherwise.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        norm: one of :data:`NORMS`.
        dropout: drop probability between the two convolutions (0 disables it).

    Shape:
        ``(N, in_channels, D, H, W) -> (N, out_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm: str, dropout: float) -> None:
        super().__init__(in_channels, out_channels, norm=norm, dropout=dropout)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(N, in_channels, D, H, W)``."""
        residual = self.relu(self.norm1(self.conv1(x)))
        residual = self.norm2(self.conv2(self.dropout(residual)))
        return self.relu(residual + self.shortcut(x))


class SpatialAttention(nn.Module):
    """Spatial attention: a voxel-wise gate computed from channel statistics.

    ::

        gate = sigmoid(conv([mean over channels, max over channels]))
        output = x * gate

    The convolution maps the 2 statistics channels (mean first, then max) to 1 channel
    with a ``kernel_size``-cube kernel and 'same' padding, so the gate has the input's
    spatial size and is broadcast over all channels.

    The paper (section V) says the gate uses a *softmax*; over a single channel softmax
    is identically 1, so we use a sigmoid, as in CBAM's spatial attention (Woo et al. 2018),
    which this module otherwise follows.

    Args:
        kernel_size: odd edge length of the gate convolution (paper: 7, padding 3).

    Shape:
        ``(N, C, D, H, W) -> (N, C, D, H, W)``.

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd number.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"attention kernel_size must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv3d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map of ``x`` (shape ``(N, C, D, H, W)``), shape ``(N, 1, D, H, W)`` in (0, 1)."""
        statistics = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(statistics))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multiply ``x`` (shape ``(N, C, D, H, W)``) voxel-wise by its gate."""
        return x * self.gate(x)
