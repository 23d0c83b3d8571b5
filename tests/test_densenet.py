"""DenseNet: concatenating connectivity, pre-activation, bottleneck, compression, checkpointing."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import smallnets
from smallnets.arch.densenet import VARIANTS, DenseNetSpec, DenseStage, Layer, imagenet_table
from smallnets.arch.spec import ArchSpec
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
    block = DenseBlock(tuple(Layer(in_chs=5 + 4 * i, bottleneck_chs=16, growth=4) for i in range(3))).eval()
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
    layer = DenseLayer(Layer(in_chs=8, bottleneck_chs=None, growth=4))
    assert isinstance(layer.bottleneck, nn.Identity) and layer.conv.conv.in_channels == 8


# ------------------------------------------------------------------------------------------
# The architecture as a value: the spec


def _stage_shapes(model: nn.Module) -> list:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize(
    "name, knobs",
    [
        ("densenet121", {}),
        ("densenet161", {"cifar": True, "drop_rate": 0.2, "memory_efficient": True}),
        ("densenet_cifar", {}),
        ("densenet_cifar", {"depth": 40, "bottleneck": False, "compression": 1.0}),
    ],
)
def test_spec_round_trips_through_json_and_builds_the_zoo_model(name, knobs):
    spec = smallnets.model_spec(name, **knobs)
    assert isinstance(spec, DenseNetSpec)
    back = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.to_dict() == spec.to_dict()
    with torch.device("meta"):
        built, zoo = smallnets.build_model(back), smallnets.create_model(name, **knobs)
    assert built.spec == spec and zoo.spec == spec
    assert _stage_shapes(built) == _stage_shapes(zoo)
    assert repr(built) == repr(zoo)


def test_spec_holds_every_width():
    spec = smallnets.model_spec("densenet121")
    assert spec.resolution == 224 and spec.stem == "imagenet" and spec.stem_chs == 64
    assert [len(s.layers) for s in spec.stages] == [6, 12, 24, 16]
    assert [s.transition_chs for s in spec.stages] == [None, 128, 256, 512]  # floor(0.5 * m)
    first = spec.stages[0].layers
    assert [layer.in_chs for layer in first] == [64 + 32 * i for i in range(6)]
    assert all(layer.bottleneck_chs == 128 and layer.growth == 32 for layer in spec.layers)  # 4k, k
    assert spec.num_features == 1024 and not spec.memory_efficient and spec.drop_rate == 0.0
    cifar = smallnets.model_spec("densenet_cifar", depth=40, bottleneck=False, compression=1.0)
    assert cifar.resolution == 32 and cifar.stem == "cifar" and cifar.stem_chs == 16
    assert all(layer.bottleneck_chs is None for layer in cifar.layers)
    assert [s.transition_chs for s in cifar.stages] == [None, 160, 304]  # theta = 1 keeps every map
    assert smallnets.model_spec("densenet121", cifar=True).resolution == 32
    for variant in VARIANTS.values():  # the builder's rows for an entry's blocks are Table 1's
        assert imagenet_table(variant.blocks) == variant.stages


def test_hand_edited_widths_build_and_run():
    spec = smallnets.model_spec("densenet_cifar", num_classes=4, depth=16)  # DenseNet-BC, 2 layers per block, k=12
    s0, s1, s2 = spec.stages
    # A pruned-looking network: block 0's second layer narrowed (bottleneck 20, growth 7), block 1's first
    # layer without a bottleneck, the transitions at their own widths, every input carried through.
    l0 = s0.layers[0]
    l1 = dataclasses.replace(s0.layers[1], bottleneck_chs=20, growth=7)
    out0 = l0.in_chs + l0.growth + l1.growth  # 24 + 12 + 7 = 43
    t1 = 30
    m0 = Layer(in_chs=t1, bottleneck_chs=None, growth=12)
    m1 = Layer(in_chs=t1 + 12, bottleneck_chs=48, growth=5)
    t2 = 11
    stages = (
        dataclasses.replace(s0, layers=(l0, l1)),
        DenseStage(transition_chs=t1, layers=(m0, m1)),
        dataclasses.replace(s2, transition_chs=t2, layers=tuple(dataclasses.replace(x, in_chs=t2 + 12 * i) for i, x in enumerate(s2.layers))),
    )
    edited = spec.replace(stages=stages)
    assert ArchSpec.from_dict(json.loads(json.dumps(edited.to_dict()))) == edited
    torch.manual_seed(0)
    model = smallnets.build_model(edited)
    assert model.spec == edited
    state = model.state_dict()
    assert state["stages.0.block.layers.1.bottleneck.conv.weight"].shape == (20, 36, 1, 1)
    assert state["stages.0.block.layers.1.conv.conv.weight"].shape == (7, 20, 3, 3)
    assert state["stages.1.transition.conv.conv.weight"].shape == (t1, out0, 1, 1)
    assert not any(k.startswith("stages.1.block.layers.0.bottleneck") for k in state)
    assert state["stages.1.block.layers.0.conv.conv.weight"].shape == (12, t1, 3, 3)
    assert state["stages.1.block.layers.1.bottleneck.conv.weight"].shape == (48, t1 + 12, 1, 1)
    assert state["stages.2.transition.conv.conv.weight"].shape == (t2, t1 + 12 + 5, 1, 1)
    assert model.num_features == edited.num_features == t2 + 24
    assert state["neck.bn.weight"].shape == (t2 + 24,) and state["classifier.fc.weight"].shape == (4, t2 + 24)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_inconsistent_specs_are_refused_with_the_rule():
    spec = smallnets.model_spec("densenet_cifar", depth=16)  # stem 24, k=12, 2 layers per block
    s0, s1 = spec.stages[:2]
    narrowed = dataclasses.replace(s0, layers=(dataclasses.replace(s0.layers[0], growth=10), s0.layers[1]))
    with pytest.raises(ValueError, match=r"stages\[0\]\.layers\[1\]\.in_chs must be the block input \(the stem's output 24\) \+ the earlier layer's growth 10 = 34 channels, got 36"):
        spec.replace(stages=(narrowed, *spec.stages[1:]))
    with pytest.raises(ValueError, match=r"stages\[1\]\.layers\[0\]\.in_chs must be the block input \(stages\[1\]\.transition_chs 30\) = 30 channels, got 24"):
        spec.replace(stages=(s0, dataclasses.replace(s1, transition_chs=30), *spec.stages[2:]))
    with pytest.raises(ValueError, match=r"stages\[1\]\.layers\[0\]\.in_chs must be the block input \(stages\[0\]'s output 48\) = 48 channels, got 24"):
        spec.replace(stages=(s0, dataclasses.replace(s1, transition_chs=None), *spec.stages[2:]))
    with pytest.raises(ValueError, match=r"stages\[0\]\.layers\[0\]\.in_chs must be the block input \(the stem's output 20\) = 20 channels, got 24"):
        spec.replace(stem_chs=20)
    with pytest.raises(ValueError, match=r"growth must be an integer >= 1, got 0"):
        dataclasses.replace(s0.layers[0], growth=0)
    with pytest.raises(ValueError, match=r"bottleneck_chs must be an integer >= 1, got 0"):
        dataclasses.replace(s0.layers[0], bottleneck_chs=0)
    with pytest.raises(ValueError, match=r"transition_chs must be an integer >= 1, got 0"):
        dataclasses.replace(s1, transition_chs=0)
    with pytest.raises(ValueError, match=r"layers must be a non-empty list of Layer"):
        dataclasses.replace(s1, layers=())
    with pytest.raises(ValueError, match=r"stem must be one of 'imagenet', 'cifar'; got 'tiny'"):
        spec.replace(stem="tiny")
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0.0, 1.0\), got 1.0"):
        spec.replace(drop_rate=1.0)
    with pytest.raises(ValueError, match=r"memory_efficient must be True or False, got 1"):
        spec.replace(memory_efficient=1)
    data = spec.to_dict()
    data["stages"][2]["layers"][1]["in_chs"] = 50
    with pytest.raises(ValueError, match=r"stages\[2\]\.layers\[1\]\.in_chs must be the block input \(stages\[2\]\.transition_chs 24\) \+ the earlier layer's growth 12 = 36 channels, got 50"):
        ArchSpec.from_dict(data)
