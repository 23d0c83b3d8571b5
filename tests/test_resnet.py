"""ResNet / ResNeXt: torchvision's counts and layout (V1.5), blocks and shortcuts, knobs and scaling, the
CIFAR networks of Section 4.2, specs as values, torchvision keys and the resnet18 reference logits."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import load_facts, shared_path
from torch import nn

import smallnets
from smallnets.arch.resnet import Bottleneck, ResNetSpec
from smallnets.arch.spec import ArchSpec, make_divisible
from smallnets.models.resnet import BasicBlock, BottleneckBlock, PadShortcut
from smallnets.pretrained import convert_state_dict, detect_format, read_checkpoint

TV_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d")


def _meta(name: str = "resnet50", **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _counts(model: nn.Module, side: int = 224) -> tuple[int, int]:
    return smallnets.count_params(model), smallnets.count_macs(model, (3, side, side))


# ------------------------------------------------------------------------------------------
# Counts: torchvision's (conv + FC mult-adds, batch 1, 224 px)


@pytest.mark.parametrize(
    "name, params, macs",
    [
        ("resnet18", 11_689_512, 1_814_073_344),
        ("resnet34", 21_797_672, 3_663_761_408),
        ("resnet50", 25_557_032, 4_089_184_256),
        ("resnet101", 44_549_160, 7_801_405_440),
        ("resnet152", 60_192_808, 11_513_626_624),
        ("resnext50_32x4d", 25_028_904, 4_230_479_872),
        ("resnext101_32x8d", 88_791_336, 16_414_015_488),
    ],
)
def test_counts_match_torchvision(name, params, macs):
    assert _counts(_meta(name)) == (params, macs)


def test_counts_match_the_shared_tables():
    entries = [e for e in load_facts("classic_tables.json")["entries"] if e["model"] in TV_NAMES]
    assert {e["model"] for e in entries} >= {"resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d"}
    for e in entries:
        model = _meta(e["model"], num_classes=e["num_classes"], **e["kwargs"])
        assert _counts(model, e["input_size"][1]) == (e["params"]["value"], e["macs"]["value"]), e["id"]


@pytest.mark.parametrize("name", TV_NAMES)
def test_manifest_param_count(name):
    manifest = load_facts("classic/manifests.json")[f"torchvision:{name}"]
    assert smallnets.count_params(_meta(name)) == manifest["num_params"]


# ------------------------------------------------------------------------------------------
# Layout


def test_stem_and_stage_sides_at_224():
    model = _meta("resnet50")
    stem = model.stem
    assert [n for n, _ in stem.named_children()] == ["conv", "bn", "act", "pool"]
    assert (stem.conv.kernel_size, stem.conv.stride, stem.conv.padding, stem.conv.bias) == ((7, 7), (2, 2), (3, 3), None)
    assert (stem.pool.kernel_size, stem.pool.stride, stem.pool.padding) == (3, 2, 1)
    y = stem(torch.empty(1, 3, 224, 224, device="meta"))
    assert y.shape == (1, 64, 56, 56)
    shapes = []
    for stage in model.stages:
        y = stage(y)
        shapes.append(tuple(y.shape[1:]))
    assert shapes == [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert isinstance(model.neck, nn.Identity) and model.num_features == 2048 and model.classifier.fc.in_features == 2048
    assert [len(s) for s in model.stages] == [3, 4, 6, 3]


@pytest.mark.parametrize("name, repeats", [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3]), ("resnet101", [3, 4, 23, 3]), ("resnet152", [3, 8, 36, 3])])
def test_table_1_repeats(name, repeats):
    assert [len(s) for s in _meta(name).stages] == repeats


def test_bottleneck_strides_on_the_3x3_conv_and_projects_where_the_shape_changes():
    model = _meta("resnet50")
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            assert isinstance(block, BottleneckBlock)
            stride = 2 if (i > 0 and j == 0) else 1
            assert block.conv1.conv.stride == (1, 1) and block.conv1.conv.kernel_size == (1, 1)
            assert block.conv2.conv.stride == (stride, stride) and block.conv2.conv.kernel_size == (3, 3)  # V1.5
            assert block.conv3.conv.kernel_size == (1, 1) and not hasattr(block.conv3, "act")  # BN, no ReLU, before the add
            if j == 0:  # layer1's first block too: 64 -> 256
                sc = block.shortcut
                assert isinstance(sc, nn.Sequential) and sc.conv.kernel_size == (1, 1) and sc.conv.stride == (stride, stride)
                assert sc.conv.bias is None and isinstance(sc.bn, nn.BatchNorm2d) and not hasattr(sc, "act")
            else:
                assert isinstance(block.shortcut, nn.Identity)


def test_resnet18_basic_blocks():
    model = _meta("resnet18")
    assert all(isinstance(b, BasicBlock) for s in model.stages for b in s)
    assert isinstance(model.stages[0][0].shortcut, nn.Identity)  # 64 -> 64 at stride 1
    for stage in model.stages[1:]:
        first = stage[0]
        assert first.conv1.conv.stride == (2, 2) and first.shortcut.conv.stride == (2, 2)
    assert [s[-1].conv2.conv.out_channels for s in model.stages] == [64, 128, 256, 512]


@pytest.mark.parametrize("name, groups, widths", [("resnext50_32x4d", 32, [128, 256, 512, 1024]), ("resnext101_32x8d", 32, [256, 512, 1024, 2048])])
def test_resnext_grouped_bottleneck_widths(name, groups, widths):
    model = _meta(name)
    for stage, width in zip(model.stages, widths):
        for block in stage:
            assert block.conv1.conv.out_channels == width and block.conv2.conv.groups == groups
            assert block.conv2.conv.weight.shape == (width, width // groups, 3, 3)
    assert [s[0].conv3.conv.out_channels for s in model.stages] == [256, 512, 1024, 2048]  # 4x the ResNet base width


# ------------------------------------------------------------------------------------------
# Blocks


def test_bottleneck_adds_projection_then_relu():
    torch.manual_seed(0)
    block = BottleneckBlock(Bottleneck(in_chs=8, reduce_chs=8, spatial_chs=8, out_chs=16, groups=4, stride=2, shortcut="conv")).eval()
    x = torch.randn(2, 8, 9, 9)
    main = block.conv3(block.conv2(block.conv1(x)))
    torch.testing.assert_close(block(x), F.relu(main + block.shortcut(x)))
    assert block(x).shape == (2, 16, 5, 5)


def test_identity_block_with_zeroed_residual_is_relu_of_its_input():
    model = smallnets.create_model("resnet18", num_classes=3, cifar=True, zero_init_residual=True).eval()
    block = model.stages[0][1]
    assert torch.count_nonzero(block.conv2.bn.weight) == 0
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(block(x), F.relu(x))
    plain = smallnets.create_model("resnet18", num_classes=3, cifar=True)
    assert torch.count_nonzero(plain.stages[0][1].conv2.bn.weight) == 64
    bottleneck = smallnets.create_model("resnet50", num_classes=3, cifar=True, zero_init_residual=True, width_mult=0.25, depth_mult=0.34)
    assert all(torch.count_nonzero(b.conv3.bn.weight) == 0 for s in bottleneck.stages for b in s)


def test_option_a_shortcut_subsamples_and_pads_zero_channels():
    x = torch.randn(2, 4, 6, 6)
    out = PadShortcut(2, 4)(x)
    assert out.shape == (2, 8, 3, 3)
    torch.testing.assert_close(out[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 4:]) == 0
    assert torch.equal(PadShortcut(1, 0)(x), x)


# ------------------------------------------------------------------------------------------
# Knobs and scaling


def test_width_and_depth_multipliers_scale_the_table():
    spec = smallnets.model_spec("resnet50", width_mult=0.5, depth_mult=1.5)
    assert spec.stem_chs == 32
    assert [len(s) for s in spec.stages] == [5, 6, 9, 5]  # ceil(1.5 * (3, 4, 6, 3))
    assert [s[0].reduce_chs for s in spec.stages] == [32, 64, 128, 256]
    assert [s[0].out_chs for s in spec.stages] == [128, 256, 512, 1024]
    odd = smallnets.model_spec("resnet18", width_mult=0.3)
    assert odd.stem_chs == make_divisible(64 * 0.3) == 24 and [s[0].mid_chs for s in odd.stages] == [24, 40, 80, 152]
    s = smallnets.compound_scaling(1)
    scaled = _meta("resnet50", width_mult=s.width, depth_mult=s.depth)
    assert smallnets.count_params(scaled) > smallnets.count_params(_meta("resnet50"))


def test_groups_and_width_per_group_on_the_generic_entry():
    spec = smallnets.model_spec("resnet", groups=32, width_per_group=4)
    assert spec == smallnets.model_spec("resnext50_32x4d")
    wide = smallnets.model_spec("resnet", width_per_group=128)  # torchvision's wide_resnet50_2 layout
    assert [s[0].reduce_chs for s in wide.stages] == [128, 256, 512, 1024] and wide.num_features == 2048
    assert smallnets.count_params(_meta("resnet", width_per_group=128)) == 68_883_240  # torchvision wide_resnet50_2
    assert smallnets.model_spec("resnet", depth=101, groups=32, width_per_group=8) == smallnets.model_spec("resnext101_32x8d")


@pytest.mark.parametrize(
    "name, knobs, match",
    [
        ("resnet", {"depth": 42}, r"depth must be one of 18, 34, 50, 101, 152; got 42"),
        ("resnet50", {"width_mult": 0.0}, r"width_mult must be > 0, got 0.0"),
        ("resnet50", {"depth_mult": -1.0}, r"depth_mult must be > 0, got -1.0"),
        ("resnet50", {"groups": 0}, r"groups must be an integer >= 1, got 0"),
        ("resnet50", {"width_per_group": 2.5}, r"width_per_group must be an integer >= 1, got 2.5"),
        ("resnext50_32x4d", {"width_mult": 0.125}, r"width_per_group=4 leaves a stage of base width 8 with no channels per group"),
        ("resnet18", {"groups": 32}, r"groups and width_per_group apply to bottleneck blocks .* got groups=32, width_per_group=64"),
        ("resnet50", {"drop_rate": 1.0}, r"drop_rate must be in \[0.0, 1.0\), got 1.0"),
        ("resnet50", {"zero_init_residual": 1}, r"zero_init_residual must be True or False, got 1"),
        ("resnet50", {"cifar": "yes"}, r"cifar must be True or False, got 'yes'"),
        ("resnext50_32x4d", {"groups": 64}, r"resnext50_32x4d fixes groups=32"),
        ("resnet50", {"depth": 101}, r"resnet50 fixes depth=50 \(it defines the entry\); resnet and resnet_cifar take it as a knob"),
        ("resnet_cifar", {"depth": 21}, r"depth must be 6n \+ 2 \(20, 32, 44, 56, 110, ...\), got 21"),
        ("resnet_cifar", {"shortcut": "B"}, r"shortcut must be one of 'pad', 'conv'; got 'B'"),
        ("resnet_cifar", {"cifar": False}, r"cifar must be True for resnet_cifar"),
        ("resnet50", {"width_multi": 0.5}, r"unknown knob 'width_multi' for resnet50; did you mean 'width_mult'"),
    ],
)
def test_bad_knobs_name_the_argument(name, knobs, match):
    with pytest.raises(ValueError, match=match):
        _meta(name, **knobs)


def test_drop_rate_sets_the_classifier_dropout():
    assert _meta().classifier.drop.p == 0.0  # torchvision has none
    assert _meta(drop_rate=0.2).classifier.drop.p == 0.2


def test_cifar_stem_gives_4x4_maps():
    model = _meta("resnet18", cifar=True, num_classes=10)
    assert [n for n, _ in model.stem.named_children()] == ["conv", "bn", "act"]
    assert (model.stem.conv.kernel_size, model.stem.conv.stride, model.stem.conv.padding) == ((3, 3), (1, 1), (1, 1))
    y = model.stem(torch.empty(1, 3, 32, 32, device="meta"))
    sides = [y.shape[-1]]
    for stage in model.stages:
        y = stage(y)
        sides.append(y.shape[-1])
    assert sides == [32, 32, 16, 8, 4]
    assert smallnets.model_spec("resnet18", cifar=True).resolution == 32


# ------------------------------------------------------------------------------------------
# He et al.'s CIFAR networks (Section 4.2, Table 6)


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (32, 0.46e6), (44, 0.66e6), (56, 0.85e6), (110, 1.7e6), (1202, 19.4e6)])
def test_cifar_resnets_match_table_6(depth, params):
    model = _meta("resnet_cifar", depth=depth)
    n = (depth - 2) // 6
    assert [len(s) for s in model.stages] == [n, n, n]
    digits = 1 if params >= 1e6 else 2  # Table 6 prints 0.27M ... 0.85M, 1.7M, 19.4M
    assert round(smallnets.count_params(model) / 1e6, digits) == round(params / 1e6, digits)


def test_cifar_resnet_layout_and_shortcuts():
    model = _meta("resnet_cifar", depth=20)
    assert smallnets.count_params(model) == 269_722 and smallnets.count_macs(model, (3, 32, 32)) == 40_551_040
    y = model.stem(torch.empty(1, 3, 32, 32, device="meta"))
    assert y.shape == (1, 16, 32, 32)
    shapes = []
    for stage in model.stages:
        y = stage(y)
        shapes.append(tuple(y.shape[1:]))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    firsts = [s[0].shortcut for s in model.stages]
    assert isinstance(firsts[0], nn.Identity) and all(isinstance(sc, PadShortcut) for sc in firsts[1:])
    assert [(sc.stride, sc.extra) for sc in firsts[1:]] == [(2, 16), (2, 32)]
    option_b = _meta("resnet_cifar", depth=20, shortcut="conv")
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 conv + BN projections
    assert smallnets.count_params(option_b) == 269_722 + extra


def test_cifar_resnet_registry_metadata():
    info = smallnets.model_info("resnet_cifar")
    assert info.input_size == (3, 32, 32) and info.num_classes == 10 and info.baseline and not info.representative
    assert dict(info.knobs) == {"depth": 56, "shortcut": "pad", "drop_rate": 0.0, "zero_init_residual": False, "cifar": True}
    assert info.published_for().top1 == 93.03 and info.published_for({"depth": 110}).top1 == 93.57


# ------------------------------------------------------------------------------------------
# Registry


def test_registry_metadata():
    tops = {"resnet18": 69.758, "resnet34": 73.314, "resnet50": 76.130, "resnet101": 77.374, "resnet152": 78.312,
            "resnext50_32x4d": 77.618, "resnext101_32x8d": 79.312}  # fmt: skip
    for name, top1 in tops.items():
        info = smallnets.model_info(name)
        assert info.family == ("resnext" if "resnext" in name else "resnet") and info.baseline and info.input_size == (3, 224, 224)
        assert ("arXiv:1611.05431" if "resnext" in name else "arXiv:1512.03385") in info.paper
        pub = info.published_for()
        assert pub.top1 == top1 and "torchvision" in pub.source
    reps = {n: smallnets.model_info(n).family for n in smallnets.list_models() if smallnets.model_info(n).representative}
    assert [n for n, f in reps.items() if f in ("resnet", "resnext")] == ["resnet50", "resnext50_32x4d"]
    assert smallnets.model_info("resnet").family == smallnets.model_info("resnet_cifar").family == "resnet"
    generic = smallnets.model_info("resnet")
    assert dict(generic.knobs) == {"depth": 50, "groups": 1, "width_per_group": 64, "width_mult": 1.0, "depth_mult": 1.0, "drop_rate": 0.0,
                                   "zero_init_residual": False, "cifar": False}  # fmt: skip
    assert generic.published_for().top1 == 76.130 and generic.published_for({"depth": 18}).top1 == 69.758
    assert generic.published_for({"depth": 101, "groups": 32, "width_per_group": 8}).top1 == 79.312
    assert dict(smallnets.model_info("resnext50_32x4d").fixed) == {"depth": 50, "groups": 32, "width_per_group": 4}


def test_forward_backward_small():
    torch.manual_seed(0)
    model = smallnets.create_model("resnext50_32x4d", num_classes=5, cifar=True, width_mult=0.5, depth_mult=0.34)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ------------------------------------------------------------------------------------------
# Specs as values


def test_spec_round_trips_through_json_and_builds_the_zoo_model():
    for name, knobs in (("resnet18", {}), ("resnext50_32x4d", {"cifar": True, "width_mult": 0.5}), ("resnet_cifar", {"depth": 20})):
        spec = smallnets.model_spec(name, **knobs)
        assert isinstance(spec, ResNetSpec)
        back = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.to_dict() == spec.to_dict()
        assert type(back.stages[0][0]) is type(spec.stages[0][0])  # Basic and Bottleneck told apart by their fields
        with torch.device("meta"):
            built, zoo = smallnets.build_model(back), smallnets.create_model(name, **knobs)
        assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in zoo.state_dict().items()]
        assert repr(built) == repr(zoo)


def test_hand_edited_spec_builds_and_runs():
    spec = smallnets.model_spec("resnet50", num_classes=4, cifar=True, width_mult=0.25, depth_mult=0.34)
    first = spec.stages[0]
    b0 = dataclasses.replace(first[0], reduce_chs=12, spatial_chs=20)  # inner widths no knob gives
    edited = spec.replace(stages=((b0, *first[1:]), *spec.stages[1:]))
    assert ArchSpec.from_dict(json.loads(json.dumps(edited.to_dict()))) == edited
    model = smallnets.build_model(edited)
    state = model.state_dict()
    assert state["stages.0.0.conv1.conv.weight"].shape == (12, 16, 1, 1)
    assert state["stages.0.0.conv2.conv.weight"].shape == (20, 12, 3, 3)
    assert state["stages.0.0.conv3.conv.weight"].shape == (64, 20, 1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert smallnets.models.spec_for_shapes(spec, shapes) == edited


def test_inconsistent_specs_are_refused_with_the_rule():
    spec = smallnets.model_spec("resnet18")
    block = spec.stages[1][1]
    with pytest.raises(ValueError, match=r"shortcut 'identity' needs stride 1 and in_chs == out_chs, got stride 2, 128 -> 128; use shortcut 'conv'"):
        dataclasses.replace(block, stride=2)
    with pytest.raises(ValueError, match=r"shortcut 'pad' needs out_chs >= in_chs"):
        dataclasses.replace(block, in_chs=256, shortcut="pad")
    with pytest.raises(ValueError, match=r"shortcut must be one of 'identity', 'conv', 'pad'; got 'B'"):
        dataclasses.replace(block, shortcut="B")
    with pytest.raises(ValueError, match=r"mid_chs must be an integer >= 1, got 0"):
        dataclasses.replace(block, mid_chs=0)
    with pytest.raises(ValueError, match=r"stages\[1\]\[0\].in_chs must be the previous layer's 32 channels, got 64"):
        spec.replace(stages=(tuple(dataclasses.replace(b, mid_chs=32, out_chs=32, in_chs=b.in_chs if i == 0 else 32, shortcut="conv")
                                   for i, b in enumerate(spec.stages[0])), *spec.stages[1:]))  # fmt: skip
    with pytest.raises(ValueError, match=r"stem must be one of 'imagenet', 'cifar'; got 'tiny'"):
        spec.replace(stem="tiny")
    grouped = smallnets.model_spec("resnext50_32x4d").stages[0][0]
    with pytest.raises(ValueError, match=r"groups must divide spatial_chs: 100 is not divisible by groups=32"):
        dataclasses.replace(grouped, spatial_chs=100)
    data = spec.to_dict()
    data["stages"][0][1]["out_chs"] = 48
    with pytest.raises(ValueError, match=r"shortcut 'identity' needs stride 1 and in_chs == out_chs"):
        ArchSpec.from_dict(data)


def test_structured_pruning_round_trips_through_the_spec():
    from smallnets.compress.structured import prune

    torch.manual_seed(0)
    model = smallnets.create_model("resnext50_32x4d", num_classes=10, width_mult=0.5, depth_mult=0.34, cifar=True)
    pruned, report = prune(model, ratio=0.3, input_size=(3, 32, 32))
    assert isinstance(pruned.spec, ResNetSpec) and report.macs_ratio < 1
    assert all(b.reduce_chs % b.groups == 0 for b in pruned.spec.blocks)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    option_a = smallnets.create_model("resnet_cifar", depth=20)
    with pytest.raises(NotImplementedError, match=r"cannot prune through 'pad'"):
        prune(option_a, ratio=0.3, input_size=(3, 32, 32))


# ------------------------------------------------------------------------------------------
# torchvision checkpoints


def test_pinned_state_dict_keys():
    keys = list(_meta("resnet50").state_dict())
    for key in ("stem.conv.weight", "stem.bn.running_var", "stages.0.0.conv1.conv.weight", "stages.0.0.conv2.bn.weight",
                "stages.0.0.conv3.bn.bias", "stages.0.0.shortcut.conv.weight", "stages.0.0.shortcut.bn.running_mean",
                "stages.3.2.conv3.conv.weight", "classifier.fc.weight", "classifier.fc.bias"):  # fmt: skip
        assert key in keys, key
    assert not any(k.startswith("stages.0.1.shortcut") for k in keys)


def test_reproduces_torchvision_resnet18_logits():
    weights = shared_path("reference", "interop", "classic", "torchvision__resnet18.weights.safetensors")
    io = pytest.importorskip("safetensors.torch").load_file(str(weights.parent / "torchvision__resnet18.io.safetensors"))
    src = read_checkpoint(weights)
    assert detect_format(src) == "torchvision:resnet18"
    model = smallnets.create_model("resnet18", num_classes=10).eval()
    state, report = convert_state_dict(src, model)
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    assert state["stem.conv.weight"].shape == (64, 3, 7, 7) and torch.equal(state["classifier.fc.bias"], src["fc.bias"].float())
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(io["input"])
    assert float((logits - io["logits"]).norm() / io["logits"].norm()) < 1e-4
