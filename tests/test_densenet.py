"""DenseNet: concatenating connectivity, pre-activation, bottleneck, compression, checkpointing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import smallnets
from smallnets.models.densenet import DenseBlock, DenseLayer, PreActConv, Transition
from smallnets.profiler import saved_activation_bytes


@pytest.mark.parametrize(
    "knobs, params",
    [
        # DenseNet paper Table 2 rounds these to 1.0M / 7.0M / 27.2M / 0.8M / 15.3M / 25.6M; the exact
        # counts follow from its description (10 classes, bias-free convs, 16 or 2k stem maps).
        (dict(depth=40, growth_rate=12, bottleneck=False, compression=1.0), 1_019_722),
        (dict(depth=100, growth_rate=12, bottleneck=False, compression=1.0), 6_979_642),
        (dict(depth=100, growth_rate=24, bottleneck=False, compression=1.0), 27_249_082),
        (dict(depth=100, growth_rate=12), 769_162),
        (dict(depth=250, growth_rate=24), 15_324_406),
        (dict(depth=190, growth_rate=40), 25_624_430),
    ],
)
def test_cifar_params_exact(knobs, params):
    with torch.device("meta"):
        model = smallnets.create_model("densenet_cifar", **knobs)
    assert smallnets.count_params(model) == params


def test_concatenation_and_compression_channels():
    with torch.device("meta"):
        model = smallnets.create_model("densenet_cifar", depth=40, growth_rate=12, bottleneck=False, compression=1.0)
    blocks = [stage.block for stage in model.stages]
    assert [len(b.layers) for b in blocks] == [12, 12, 12]  # (L - 4) / 3
    assert [b.out_chs for b in blocks] == [16 + 144, 160 + 144, 304 + 144]
    # every layer sees the block input plus k maps from each earlier layer
    assert [layer.conv.conv.in_channels for layer in blocks[0].layers] == [16 + 12 * i for i in range(12)]

    with torch.device("meta"):
        bc = smallnets.create_model("densenet_cifar", depth=100, growth_rate=12)  # DenseNet-BC
    assert bc.stem.conv.out_channels == 24  # 2k
    chs = [bc.stages[0].block.out_chs]
    for stage in list(bc.stages)[1:]:
        assert stage.transition.conv.conv.out_channels == chs[-1] // 2  # floor(theta * m)
        chs.append(stage.block.out_chs)
    assert chs == [24 + 16 * 12, 108 + 16 * 12, 150 + 16 * 12]
    assert bc.num_features == chs[-1] == 342


def test_imagenet_structure_densenet121():
    with torch.device("meta"):
        model = smallnets.create_model("densenet121")
    assert [len(s.block.layers) for s in model.stages] == [6, 12, 24, 16]
    assert model.num_features == 1024
    layer = model.stages[0].block.layers[0]
    assert layer.bottleneck.conv.out_channels == 4 * 32 and layer.conv.conv.kernel_size == (3, 3)
    x = torch.empty(1, 3, 224, 224, device="meta")
    sides = []
    y = model.stem(x)
    for stage in model.stages:
        y = stage(y)
        sides.append(y.shape[-1])
    assert sides == [56, 28, 14, 7]


def test_pre_activation_order():
    unit = PreActConv(8, 4, 3)
    assert [type(m) for m in unit] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert unit.conv.bias is None
    assert [type(m) for m in PreActConv(8, 4, 3, drop_rate=0.2)][-1] is nn.Dropout


def test_dense_block_forward_concatenates_input():
    torch.manual_seed(0)
    block = DenseBlock(5, 3, 4, bottleneck=True, drop_rate=0.0, memory_efficient=False).eval()
    x = torch.randn(2, 5, 8, 8)
    y = block(x)
    assert y.shape == (2, 5 + 3 * 4, 8, 8)
    assert torch.equal(y[:, :5], x)  # the input passes through untouched


def test_transition_halves_resolution():
    t = Transition(10, 5).eval()
    assert t(torch.randn(1, 10, 8, 8)).shape == (1, 5, 4, 4)


def test_memory_efficient_same_results_less_memory():
    torch.manual_seed(0)
    plain = smallnets.create_model("densenet_cifar", depth=40, growth_rate=12)
    efficient = smallnets.create_model("densenet_cifar", depth=40, growth_rate=12, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    out_a, out_b = plain(x), efficient(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.sum().backward()
    out_b.sum().backward()
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert saved_activation_bytes(efficient, (3, 32, 32)) < 0.75 * saved_activation_bytes(plain, (3, 32, 32))


def test_state_dict_keys_are_pinned():
    keys = list(smallnets.create_model("densenet121", num_classes=10).state_dict())
    assert keys[:6] == ["stem.conv.weight", "stem.bn.weight", "stem.bn.bias", "stem.bn.running_mean", "stem.bn.running_var", "stem.bn.num_batches_tracked"]
    assert "stages.0.block.layers.0.bottleneck.conv.weight" in keys
    assert "stages.0.block.layers.0.conv.bn.weight" in keys
    assert "stages.1.transition.conv.conv.weight" in keys
    assert keys[-7:] == ["neck.bn.weight", "neck.bn.bias", "neck.bn.running_mean", "neck.bn.running_var", "neck.bn.num_batches_tracked", "classifier.fc.weight", "classifier.fc.bias"]


def test_growth_rate_knob_on_imagenet_model():
    with torch.device("meta"):
        model = smallnets.create_model("densenet121", growth_rate=16)
    assert model.stages[0].block.layers[0].conv.conv.out_channels == 16


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("densenet_cifar", {"depth": 41}, "depth must give whole dense blocks: with bottleneck, (depth - 4) must be divisible by 6, got depth=41"),
        ("densenet_cifar", {"depth": 41, "bottleneck": False}, "divisible by 3, got depth=41"),
        ("densenet_cifar", {"depth": 4}, "depth must be an integer >= 10, got 4"),
        ("densenet_cifar", {"compression": 0}, "compression must be in (0.0, 1.0], got 0"),
        ("densenet_cifar", {"compression": 1.5}, "compression must be in (0.0, 1.0], got 1.5"),
        ("densenet_cifar", {"cifar": False}, "cifar must be True for densenet_cifar"),
        ("densenet121", {"growth_rate": 0}, "growth_rate must be an integer >= 1, got 0"),
        ("densenet121", {"memory_efficient": "yes"}, "memory_efficient must be True or False, got 'yes'"),
        ("densenet169", {"drop_rate": 1.0}, "drop_rate must be in [0.0, 1.0), got 1.0"),
    ],
)
def test_bad_knobs(name, knobs, words):
    with pytest.raises(ValueError) as err:
        smallnets.create_model(name, **knobs)
    assert words in str(err.value)


def test_dense_layer_without_bottleneck_has_identity():
    layer = DenseLayer(8, 4, bottleneck=False, drop_rate=0.0, memory_efficient=False)
    assert isinstance(layer.bottleneck, nn.Identity) and layer.conv.conv.in_channels == 8
