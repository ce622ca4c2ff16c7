"""One 3D U-Net family in three variants, its configuration, and size measures.

The variants differ only in the blocks passed to the one :class:`UNet`:

=========  ========================  ==========================================
name       block at each level       extra
=========  ========================  ==========================================
unet       :class:`ConvBlock`        -- (the paper's simple 3D U-Net)
resunet    :class:`ResidualBlock`    -- (the paper's "modified" U-Net)
sa_unet    :class:`ResidualBlock`    :class:`SpatialAttention` after each pooling
=========  ========================  ==========================================

Topology for ``filters = (f0, ..., fL)`` (depth ``L`` poolings; the paper: 16-32-64-128-256)::

    stem     block(in_channels -> f0)                                   full resolution
    down_i   max-pool 2 -> [attention] -> block(f_{i-1} -> f_i)         i = 1..L, 1/2**i
    up_i     transposed conv 2x2x2 stride 2 (f_i -> f_{i-1}),           i = L..1
             concatenate [upsampled, skip, attended], block(-> f_{i-1})
    head     1x1x1 convolution (f0 -> 4 class or 3 region logits)

The submodules are named ``stem``, ``down1`` ... ``downL``, ``upL`` ... ``up1`` and
``head``; ``downL`` is the bottleneck. ``up_i`` undoes ``down_i``: it upsamples the
output of ``up_{i+1}`` (of the bottleneck for ``i = L``) and joins the skip, the output
of ``down_{i-1}`` (of the stem for ``i = 1``).

Spatial attention (``sa_unet``), our reading of the paper (section V, Figs. 3-5), which
does not pin these details down:

* After the max-pooling of ``down_i`` the pooled features (``f_{i-1}`` channels, at
  resolution ``1/2**i``) are gated by :class:`SpatialAttention`; the gated features are
  the input of ``down_i``'s block, so the contracting path runs through the attention.
* The same gated features are concatenated into the decoder level that works at the
  same resolution, ``1/2**i``, which is ``up_{i+1}`` (its output resolution). The shapes
  match exactly, so nothing is resampled: ``up_{i+1}`` concatenates
  ``[upsampled (f_i), skip = down_i's output (f_i), attended of down_i (f_{i-1})]``.
* The full-resolution level ``up_1`` has no attended features (no pooling precedes the
  stem), and the attended features of the bottleneck ``down_L`` have no decoder level at
  their resolution, so they only feed the bottleneck block.
* The gate is a sigmoid, not the paper's softmax, which over one channel is always 1.

Networks return logits for inputs of any spatial size: the input is zero-padded at the
end of each spatial axis to a multiple of ``2**L`` (only when needed) and the logits are
cropped back, so the output has the input's spatial shape.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glioseg.config.sections import DROPOUT_SCHEDULES, NETWORKS, PAPER_FILTERS, ModelConfig, dropout_schedule  # noqa: F401  (re-exported: defined with the settings)
from glioseg.networks.blocks import BlockType, ConvBlock, ResidualBlock, SpatialAttention

logger = logging.getLogger(__name__)

BLOCKS: dict[str, BlockType] = {"unet": ConvBlock, "resunet": ResidualBlock, "sa_unet": ResidualBlock}

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
"""The layers :func:`forward_gflops` counts."""

def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the spatial axes of ``x`` at their end up to a multiple of ``multiple``.

    Args:
        x: tensor of shape ``(N, C, D, H, W)``.
        multiple: the network's stride ``2**depth``.

    Returns:
        ``x`` itself if every spatial size is already a multiple, else a padded copy of
        shape ``(N, C, D', H', W')`` with ``D' = ceil(D / multiple) * multiple`` etc.
    """
    extra = [-size % multiple for size in x.shape[2:]]
    if not any(extra):
        return x
    # F.pad takes (before, after) pairs starting from the last axis.
    return F.pad(x, [amount for e in reversed(extra) for amount in (0, e)])


class Down(nn.Module):
    """One level of the contracting path: max-pool 2, optional spatial attention, block.

    Args:
        in_channels: channels ``f_{i-1}`` of the level above.
        out_channels: channels ``f_i`` of this level.
        block: the block class.
        norm: normalisation of the block.
        dropout: dropout of the block.
        attention_kernel: kernel of the :class:`SpatialAttention`; ``None`` for no attention.

    Shape:
        ``(N, f_{i-1}, D, H, W) -> (N, f_i, D/2, H/2, W/2)`` and, with attention, the
        attended features ``(N, f_{i-1}, D/2, H/2, W/2)`` (else ``None``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        block: BlockType,
        norm: str,
        dropout: float,
        attention_kernel: int | None,
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(kernel_size=2)
        self.attention = None if attention_kernel is None else SpatialAttention(attention_kernel)
        self.block = block(in_channels, out_channels, norm=norm, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(features, attended)`` for ``x`` of shape ``(N, f_{i-1}, D, H, W)``."""
        x = self.pool(x)
        attended = None if self.attention is None else self.attention(x)
        return self.block(x if attended is None else attended), attended


class Up(nn.Module):
    """One level of the expanding path: up-convolution, concatenation, block.

    Args:
        in_channels: channels ``f_i`` of the level below.
        out_channels: channels ``f_{i-1}`` of this level (also of the skip).
        attended_channels: channels of the attended features concatenated here
            (``f_{i-2}``), or 0 for none.
        block: the block class.
        norm: normalisation of the block.
        dropout: dropout of the block.

    Shape:
        ``x (N, f_i, D, H, W)``, ``skip (N, f_{i-1}, 2D, 2H, 2W)``, ``attended
        (N, f_{i-2}, 2D, 2H, 2W)`` or ``None`` -> ``(N, f_{i-1}, 2D, 2H, 2W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        attended_channels: int,
        block: BlockType,
        norm: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.upconv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.block = block(2 * out_channels + attended_channels, out_channels, norm=norm, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, attended: torch.Tensor | None) -> torch.Tensor:
        """Upsample ``x``, concatenate ``[x, skip, attended]`` on channels, apply the block."""
        parts = [self.upconv(x), skip] if attended is None else [self.upconv(x), skip, attended]
        return self.block(torch.cat(parts, dim=1))


class UNet(nn.Module):
    """The 3D U-Net that all three variants are built from.

    Use :func:`build_network` to make the named variants; see the module docstring for
    the topology and the placement of spatial attention.

    Args:
        in_channels: input channels (MRI sequences, 3 or 4).
        out_channels: logits per voxel (4 classes or 3 regions).
        filters: channels per level ``(f0, ..., fL)``; ``L = len(filters) - 1`` poolings.
        block: block class of every level (:class:`ConvBlock` or :class:`ResidualBlock`).
        norm: normalisation in the blocks, one of :data:`~glioseg.networks.blocks.NORMS`.
        dropout: ``2L + 1`` dropout rates, block by block in forward order: ``stem, down_1,
            ..., down_L`` (the bottleneck), then ``up_L, ..., up_1`` (see :func:`dropout_schedule`).
        attention_kernel: kernel of the spatial attention after each pooling; ``None``
            for no attention.

    Shape:
        ``(N, in_channels, D, H, W) -> (N, out_channels, D, H, W)`` logits, any ``D, H, W``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: Sequence[int],
        *,
        block: BlockType,
        norm: str,
        dropout: Sequence[float],
        attention_kernel: int | None,
    ) -> None:
        super().__init__()
        self.depth = len(filters) - 1
        self.in_channels = in_channels
        self.out_channels = out_channels
        if len(dropout) != 2 * self.depth + 1:
            raise ValueError(f"dropout needs {2 * self.depth + 1} rates for {self.depth} poolings, got {len(dropout)}")
        f = list(filters)
        encoder_dropout = list(dropout[: self.depth + 1])  # stem, down_1, ..., down_L
        decoder_dropout = list(dropout[self.depth + 1 :])  # up_L, ..., up_1
        self.stem = block(in_channels, f[0], norm=norm, dropout=encoder_dropout[0])
        for i in range(1, self.depth + 1):
            down = Down(
                f[i - 1],
                f[i],
                block=block,
                norm=norm,
                dropout=encoder_dropout[i],
                attention_kernel=attention_kernel,
            )
            self.add_module(f"down{i}", down)
        for i in range(self.depth, 0, -1):
            attended_channels = f[i - 2] if attention_kernel is not None and i >= 2 else 0
            up = Up(
                f[i],
                f[i - 1],
                attended_channels=attended_channels,
                block=block,
                norm=norm,
                dropout=decoder_dropout[self.depth - i],
            )
            self.add_module(f"up{i}", up)
        self.head = nn.Conv3d(f[0], out_channels, kernel_size=1)

    @property
    def stride(self) -> int:
        """Total down-sampling factor ``2**depth``; inputs are padded to a multiple of it."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits for ``x`` of shape ``(N, in_channels, D, H, W)``.

        Returns:
            Logits of shape ``(N, out_channels, D, H, W)``; no softmax or sigmoid.
        """
        spatial = x.shape[2:]
        x = pad_to_multiple(x, self.stride)

        # Contracting path: the stem, then pool -> [attention] -> block at each level.
        skips: list[torch.Tensor] = [self.stem(x)]
        attended: list[torch.Tensor | None] = [None]
        for i in range(1, self.depth + 1):
            features, gated = self.get_submodule(f"down{i}")(skips[-1])
            skips.append(features)
            attended.append(gated)

        # Expanding path: up_i joins its input with the skip (and attended features)
        # at resolution 1/2**(i-1). The bottleneck's attended features have no level here.
        x = skips.pop()
        attended.pop()
        for i in range(self.depth, 0, -1):
            x = self.get_submodule(f"up{i}")(x, skips.pop(), attended.pop())

        logits = self.head(x)
        if logits.shape[2:] != spatial:
            logits = logits[..., : spatial[0], : spatial[1], : spatial[2]]
        return logits




def build_network(config: ModelConfig, in_channels: int) -> UNet:
    """Build the network a :class:`ModelConfig` describes, with fresh weights.

    Args:
        config: the network (name, filters, norm, head, dropout, attention kernel).
        in_channels: input channels (one per MRI sequence: 3 in the paper, 4 with T1).

    Returns:
        A :class:`UNet` mapping ``(N, in_channels, D, H, W)`` to logits
        ``(N, out_channels, D, H, W)``.

    Raises:
        ValueError: ``in_channels`` below 1.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    model = UNet(
        in_channels,
        config.out_channels,
        config.filters,
        block=BLOCKS[config.name],
        norm=config.norm,
        dropout=config.dropout,
        attention_kernel=config.attention_kernel if config.name == "sa_unet" else None,
    )
    logger.debug("built %s with %d parameters: %s", config.name, count_parameters(model), config)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _conv_macs(module: nn.modules.conv._ConvNd, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a (transposed) convolution, bias excluded."""
    kernel = math.prod(module.kernel_size)
    if module.transposed:  # every input value is spread over a kernel of every output channel
        return inputs[0].numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def forward_gflops(model: nn.Module, shape: Sequence[int] | None = None) -> float:
    """GFLOPs of one forward pass, counting the convolutions analytically.

    Forward hooks on every convolution and transposed convolution record their
    multiply-accumulates (MACs) while a copy of ``model`` runs on the ``meta`` device, so
    nothing is computed and any input size is free. ``GFLOPs = 2 * MACs / 1e9``. Bias
    additions, normalisation, activations, pooling and interpolation are not counted
    (they add well under 1% for these networks).

    Args:
        model: any network built from ``torch.nn`` convolutions.
        shape: input shape ``(N, C, D, H, W)``; default ``(1, C, 128, 128, 128)`` with ``C``
            the input channels of the first convolution.

    Returns:
        Forward GFLOPs for one input of ``shape``.
    """
    if shape is None:
        first = next(m for m in model.modules() if isinstance(m, CONVOLUTIONS))
        shape = (1, first.in_channels, 128, 128, 128)
    meta_model = copy.deepcopy(model).to("meta").eval()
    macs = 0

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        macs += _conv_macs(module, inputs, output)  # type: ignore[arg-type]

    for module in meta_model.modules():
        if isinstance(module, CONVOLUTIONS):
            module.register_forward_hook(record)
    with torch.no_grad():
        meta_model(torch.empty(tuple(shape), device="meta"))
    return 2 * macs / 1e9
