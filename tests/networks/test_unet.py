"""Tests of the U-Net family: shapes, gradients, parameter counts, attention, padding, dropout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from glioseg.heads import HEADS
from glioseg.networks import (
    NETWORKS,
    NORMS,
    ModelConfig,
    ResidualBlock,
    SpatialAttention,
    UNet,
    build_network,
    count_parameters,
    dropout_schedule,
    forward_gflops,
)
from glioseg.networks.unet import pad_to_multiple

# Three poolings (stride 8): 65 x 70 x 75 is padded on every axis, to 72 x 72 x 80. (With
# two poolings the 4-channel batch-1 convolutions fall onto PyTorch's much slower native
# conv3d path on CPU, and the file takes three times as long.)
SMALL = (4, 8, 16, 32)
ODD_SHAPE = (65, 70, 75)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Run this file's networks on one thread.

    On a shared 2-core machine, two OpenMP threads slow down about ten-fold as soon as
    another process takes a core; one thread costs at most a third more when it is idle.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def net(name: str, in_channels: int = 3, **options: object) -> UNet:
    """Build a network from a ModelConfig of ``name`` and ``options`` (norm ``none`` unless given)."""
    options.setdefault("norm", "none")
    return build_network(ModelConfig(name=name, **options), in_channels=in_channels)  # type: ignore[arg-type]


def _forward_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a training step's forward and backward; return the logits."""
    model.train()
    logits = model(x)
    weights = torch.randn_like(logits)  # a loss whose gradient is not uniform
    (logits * weights).mean().backward()
    return logits


# Every variant with every head and every norm: the full product, as the acceptance asks.
CASES = [(name, head, norm) for name in NETWORKS for head in HEADS for norm in NORMS]


@pytest.mark.parametrize(("name", "head", "norm"), CASES)
def test_every_variant_head_and_norm_trains_on_odd_shapes(name: str, head: str, norm: str) -> None:
    torch.manual_seed(0)
    model = net(name, in_channels=4, head=head, filters=SMALL, norm=norm)
    logits = _forward_backward(model, torch.randn(1, 4, *ODD_SHAPE))

    assert logits.shape == (1, 4 if head == "classes" else 3, *ODD_SHAPE)
    grad = model.stem.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_paper_filters_at_depth_five_train_on_odd_shapes() -> None:
    torch.manual_seed(0)
    model = net("sa_unet", in_channels=4, norm="batch")
    logits = _forward_backward(model, torch.randn(1, 4, *ODD_SHAPE))

    assert model.depth == 4 and model.stride == 16
    assert logits.shape == (1, 4, *ODD_SHAPE)
    for parameter in (model.stem.conv1.weight, model.down4.attention.conv.weight, model.head.weight):
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


def test_unet_in_the_paper_configuration_has_the_tutorials_parameter_count() -> None:
    model = net("unet", in_channels=3, head="classes", norm="none")
    assert count_parameters(model) == 5_645_828


def test_spatial_attention_gates_with_sigmoid_of_conv_of_channel_mean_and_max() -> None:
    attention = SpatialAttention(kernel_size=3)
    with torch.no_grad():
        attention.conv.weight.zero_()
        attention.conv.weight[0, 0, 1, 1, 1] = 1.0  # centre tap on the channel mean
        attention.conv.weight[0, 1, 1, 1, 1] = 2.0  # centre tap on the channel max
        attention.conv.bias.fill_(-0.5)
    v = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    channels = [v, 2 * v, torch.full_like(v, -1.0)]
    x = torch.stack(channels).unsqueeze(1).expand(3, 2, 2, 2).unsqueeze(0)  # (1, 3, 2, 2, 2), depth-constant
    mean = (v + 2 * v - 1.0) / 3
    maximum = torch.maximum(torch.maximum(v, 2 * v), torch.tensor(-1.0))
    expected_gate = torch.sigmoid(mean + 2 * maximum - 0.5)

    with torch.no_grad():
        gate, output = attention.gate(x), attention(x)
    assert gate.shape == (1, 1, 2, 2, 2)
    torch.testing.assert_close(gate[0, 0], expected_gate.expand(2, 2, 2))
    torch.testing.assert_close(output, x * expected_gate)


def test_spatial_attention_gate_sees_neighbours_within_its_kernel() -> None:
    attention = SpatialAttention(kernel_size=7)
    with torch.no_grad():
        attention.conv.weight.fill_(1.0)
        attention.conv.bias.zero_()
    x = torch.zeros(1, 2, 9, 9, 9)
    x[0, 0, 4, 4, 4] = 2.0  # mean 1, max 2 at the centre, zero elsewhere
    with torch.no_grad():
        gate = attention.gate(x)[0, 0]
    assert gate[4, 4, 1] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())  # 3 voxels away: inside
    assert gate[4, 4, 0] == pytest.approx(0.5)  # 4 voxels away: outside the 7-kernel


def test_sa_unet_concatenates_attended_features_at_the_matching_resolution() -> None:
    model = net("sa_unet", in_channels=4, filters=(4, 8, 16, 32)).eval()
    seen: dict[str, torch.Tensor] = {}
    model.down1.attention.register_forward_hook(lambda m, i, o: seen.update(attended1=o))
    model.down2.attention.register_forward_hook(lambda m, i, o: seen.update(attended2=o))
    model.up2.register_forward_pre_hook(lambda m, args: seen.update(up2=args[2]))
    model.up3.register_forward_pre_hook(lambda m, args: seen.update(up3=args[2]))
    model.up1.register_forward_pre_hook(lambda m, args: seen.update(up1=args[2]))
    with torch.no_grad():
        model(torch.randn(1, 4, 16, 16, 16))

    assert seen["up2"] is seen["attended1"] and seen["attended1"].shape == (1, 4, 8, 8, 8)
    assert seen["up3"] is seen["attended2"] and seen["attended2"].shape == (1, 8, 4, 4, 4)
    assert seen["up1"] is None
    assert model.up2.block.conv1.in_channels == 8 + 8 + 4  # upsampled, skip, attended
    assert model.up1.block.conv1.in_channels == 4 + 4
    assert net("resunet", filters=(4, 8, 16, 32)).up2.block.conv1.in_channels == 8 + 8


def test_residual_block_projects_the_shortcut_only_when_channels_change() -> None:
    assert isinstance(ResidualBlock(8, 8, norm="batch", dropout=0.0).shortcut, nn.Identity)
    projection = ResidualBlock(4, 8, norm="batch", dropout=0.0).shortcut
    assert isinstance(projection, nn.Conv3d) and projection.kernel_size == (1, 1, 1)

    block = ResidualBlock(3, 3, norm="none", dropout=0.0)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    x = torch.randn(1, 3, 5, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(x))  # zero residual: relu(identity)


@pytest.mark.parametrize("name", NETWORKS)
def test_padding_then_cropping_equals_running_on_a_padded_input(name: str) -> None:
    torch.manual_seed(0)
    model = net(name, in_channels=4, filters=SMALL, norm="instance").eval()
    x = torch.randn(1, 4, 13, 14, 15)
    padded = F.pad(x, (0, 1, 0, 2, 0, 3))  # to 16^3, the next multiple of the stride 8

    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :13, :14, :15])
    assert pad_to_multiple(padded, 8) is padded  # divisible inputs are not copied


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    x = torch.randn(1, 4, 16, 16, 16)
    model = net("unet", in_channels=4, filters=SMALL, dropout=(0.5,) * 7)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(x), model(x))
        without_dropout = net("unet", in_channels=4, filters=SMALL).train()  # no rates: no dropout
        torch.testing.assert_close(without_dropout(x), without_dropout(x), rtol=0, atol=0)


def test_dropout_schedules_are_placed_level_by_level() -> None:
    tutorial = net("unet", dropout=dropout_schedule("tutorial", 4))
    table2 = net("unet", dropout=dropout_schedule("table2", 4))
    for model, bottleneck in ((tutorial, 0.3), (table2, 0.2)):
        encoder = [model.stem, model.down1.block, model.down2.block, model.down3.block, model.down4.block]
        decoder = [model.up4.block, model.up3.block, model.up2.block, model.up1.block]
        assert [b.dropout.p for b in encoder] == [0.1, 0.1, 0.2, 0.2, bottleneck]
        assert [b.dropout.p for b in decoder] == [0.2, 0.2, 0.1, 0.1]
    assert dropout_schedule("tutorial", 2) == (0.1, 0.2, 0.3, 0.2, 0.1)
    assert dropout_schedule("table2", 3) == (0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1)
    assert dropout_schedule("none", 1) == (0.0, 0.0, 0.0)
    assert all(b.dropout.p == 0 for b in (net("unet").stem, net("unet").up1.block))


def test_norm_options_build_the_named_layers() -> None:
    def first_norm(norm: str) -> nn.Module:
        return net("unet", filters=(12, 24), norm=norm).stem.norm1

    assert isinstance(first_norm("none"), nn.Identity)
    assert isinstance(first_norm("batch"), nn.BatchNorm3d)
    instance = first_norm("instance")
    assert isinstance(instance, nn.InstanceNorm3d) and instance.affine
    group = first_norm("group")
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 6  # 12 channels: 8 does not divide


def test_unknown_options_raise_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unet, resunet, sa_unet"):
        net("vnet")
    with pytest.raises(ValueError, match="none, batch, instance, group"):
        net("unet", norm="layer")
    with pytest.raises(ValueError, match="classes, regions"):
        net("unet", head="labels")
    with pytest.raises(ValueError, match="dropout needs 7 rates"):
        ModelConfig(name="unet", filters=(4, 8, 16, 32), dropout=(0.1, 0.2))
    with pytest.raises(ValueError, match="none, tutorial, table2"):
        dropout_schedule("paper", 4)
    with pytest.raises(ValueError, match="in_channels"):
        build_network(ModelConfig(), in_channels=0)


def test_config_from_yaml_lists_is_stored_as_tuples() -> None:
    config = ModelConfig(
        name="resunet",
        head="regions",
        filters=[4, 8, 16],
        norm="group",
        dropout=[0.1, 0.2, 0.3, 0.2, 0.1],
    )
    assert config.filters == (4, 8, 16) and config.dropout == (0.1, 0.2, 0.3, 0.2, 0.1) and config.out_channels == 3
    model = build_network(config, in_channels=4)
    assert model.in_channels == 4 and model.out_channels == 3 and model.down2.block.dropout.p == 0.3


def test_forward_gflops_of_single_convolutions_by_hand() -> None:
    conv = nn.Conv3d(2, 3, kernel_size=3, padding=1)
    # 3 x 4^3 outputs, each 2 x 27 multiply-accumulates: 10,368 MACs = 20,736 FLOPs.
    assert forward_gflops(conv, (1, 2, 4, 4, 4)) == pytest.approx(2 * 3 * 64 * 2 * 27 / 1e9)
    upconv = nn.ConvTranspose3d(4, 2, kernel_size=2, stride=2)
    # 4 x 2^3 inputs, each spread over 2 x 8 outputs: 512 MACs.
    assert forward_gflops(upconv, (1, 4, 2, 2, 2)) == pytest.approx(2 * 4 * 8 * 2 * 8 / 1e9)


def test_forward_gflops_matches_torch_flop_counter_on_a_whole_network() -> None:
    model = net("sa_unet", in_channels=4, filters=SMALL, norm="batch").eval()
    x = torch.randn(2, 4, 12, 16, 20)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    assert forward_gflops(model, x.shape) == pytest.approx(counter.get_total_flops() / 1e9)
    assert forward_gflops(model) == pytest.approx(forward_gflops(model, (1, 4, 128, 128, 128)))
