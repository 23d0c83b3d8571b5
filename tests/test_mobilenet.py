"""MobileNetV1 and V2: reference counts, the papers' tables, where shortcuts apply, knobs, errors, CIFAR stem, keys."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.inverted import cifar_stem
from smallnets.arch.mobilenet import mobilenet_v2
from smallnets.models._inverted import DepthwiseSeparable, InvertedBottleneck, InvertedResidual
from smallnets.profiler import count_macs, count_params

MODELS = ("mobilenet_v1", "mobilenet_v2")


def _entries():
    entries = load_facts("paper_tables.json")["entries"]
    return [pytest.param(e, id=e["id"]) for e in entries if e["model"] in MODELS]


def meta_model(name: str, **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def stage_shapes(model: nn.Module, side: int) -> list[tuple[int, int, int]]:
    """(C, H, W) after the stem and after every stage, for a side x side input (shapes only)."""
    x = model.stem(torch.empty(1, 3, side, side, device="meta"))
    shapes = [tuple(x.shape[1:])]
    for stage in model.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def blocks(model: nn.Module) -> list[nn.Module]:
    return [b for stage in model.stages for b in stage]


@pytest.mark.parametrize("entry", _entries())
def test_paper_table_entry(entry, paper_tables):
    model = meta_model(entry["model"], num_classes=entry["num_classes"], **entry["kwargs"])
    ours = {"params": smallnets.count_params(model), "macs": smallnets.count_macs(model, tuple(entry["input_size"]))}
    for key, value in ours.items():
        ref = entry[key]
        assert abs(value - ref["value"]) <= ref["tolerance"], f"{entry['id']} {key}: {value:,} vs {ref['value']:,} ({entry['source']})"


# ---------------------------------------------------------------------------------------------
# MobileNetV1


# MobileNetV1 Table 1, every conv / FC layer in order: (kind, output channels, output side at 224).
V1_TABLE_1 = [
    ("conv3x3", 32, 112),
    ("depthwise3x3", 32, 112), ("conv1x1", 64, 112),
    ("depthwise3x3", 64, 56), ("conv1x1", 128, 56),
    ("depthwise3x3", 128, 56), ("conv1x1", 128, 56),
    ("depthwise3x3", 128, 28), ("conv1x1", 256, 28),
    ("depthwise3x3", 256, 28), ("conv1x1", 256, 28),
    ("depthwise3x3", 256, 14), ("conv1x1", 512, 14),
    *[("depthwise3x3", 512, 14), ("conv1x1", 512, 14)] * 5,
    ("depthwise3x3", 512, 7), ("conv1x1", 1024, 7),
    ("depthwise3x3", 1024, 7), ("conv1x1", 1024, 7),
    ("fc", 1000, None),
]  # fmt: skip


def test_v1_layers_follow_table_1():
    layers = smallnets.profile(meta_model("mobilenet_v1"), (3, 224, 224), latency=False, memory=False).layers
    ours = [(r.kind, r.out_shape[0], r.out_shape[1] if len(r.out_shape) == 3 else None) for r in layers]
    assert ours == V1_TABLE_1
    assert sum(isinstance(b, DepthwiseSeparable) for b in blocks(meta_model("mobilenet_v1"))) == 13


@pytest.mark.parametrize(
    "width, chs",
    [
        (1.0, [32, 64, 128, 256, 512, 1024]),
        (0.75, [24, 48, 96, 192, 384, 768]),
        (0.5, [16, 32, 64, 128, 256, 512]),
        (0.25, [8, 16, 32, 64, 128, 256]),
    ],
)
def test_v1_width_multiplier_scales_every_layer(width, chs):
    model = meta_model("mobilenet_v1", width_mult=width)
    assert [c for c, _, _ in stage_shapes(model, 224)] == chs
    assert model.num_features == chs[-1] and model.classifier.fc.in_features == chs[-1]


def test_v1_resolution_multiplier_is_the_input_size():
    model = meta_model("mobilenet_v1")
    assert [h for _, h, _ in stage_shapes(model, 160)] == [80, 80, 40, 20, 10, 5]


def test_v1_conv_mobilenet_replaces_each_pair_by_a_full_conv():
    model = meta_model("mobilenet_v1", separable=False)
    convs = [b.conv for b in blocks(model)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) and c.groups == 1 for c in convs)
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert stage_shapes(model, 224) == stage_shapes(meta_model("mobilenet_v1"), 224)


def test_v1_shallow_mobilenet_drops_the_five_14x14x512_layers():
    deep, shallow = meta_model("mobilenet_v1"), meta_model("mobilenet_v1", shallow=True)
    assert len(blocks(deep)) - len(blocks(shallow)) == 5
    assert stage_shapes(shallow, 224) == stage_shapes(deep, 224)  # same widths and feature sizes, fewer layers
    assert [len(stage) for stage in shallow.stages] == [1, 2, 2, 1, 2]
    # Table 5: 2.9 M parameters, 307 M mult-adds; each layer removed is 3*3*512 + 512*512 weights + two BatchNorms
    assert count_params(deep) - count_params(shallow) == 5 * (9 * 512 + 512 * 512 + 4 * 512)
    assert count_macs(shallow) == pytest.approx(307e6, rel=0.005)


def test_v1_uses_relu6_like_the_reference():
    model = meta_model("mobilenet_v1", width_mult=0.25)
    acts = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))}
    assert acts == {nn.ReLU6}


# ---------------------------------------------------------------------------------------------
# MobileNetV2


def test_v2_follows_table_2():
    model = meta_model("mobilenet_v2")
    assert [c for c, _, _ in stage_shapes(model, 224)] == [32, 16, 24, 32, 64, 96, 160, 320]
    assert [h for _, h, _ in stage_shapes(model, 224)] == [112, 112, 56, 28, 14, 14, 7, 7]
    assert [len(s) for s in model.stages] == [1, 2, 3, 4, 3, 3, 1]
    assert model.neck.conv.out_channels == model.num_features == 1280
    first = model.stages[0][0]
    assert isinstance(first.expand, nn.Identity) and first.dw.conv.in_channels == 32  # t = 1: no expansion
    assert model.stages[1][0].dw.conv.out_channels == 96  # hidden = t * input channels = 6 * 16
    assert model.stages[6][0].dw.conv.out_channels == 960
    assert not any(hasattr(b.project, "act") for b in blocks(model))  # linear bottleneck: no activation after projecting
    assert isinstance(model.classifier.drop, nn.Dropout) and model.classifier.drop.p == 0.2


@pytest.mark.parametrize("width, stem, last", [(0.35, 16, 1280), (0.5, 16, 1280), (1.0, 32, 1280), (1.4, 48, 1792)])
def test_v2_width_keeps_the_last_conv_at_least_1280(width, stem, last):
    model = meta_model("mobilenet_v2", width_mult=width)
    assert model.stem.conv.out_channels == stem
    assert model.num_features == last


def test_v2_shortcuts_where_stride_1_and_channels_kept():
    model = meta_model("mobilenet_v2")
    kinds = [[isinstance(b, InvertedResidual) for b in stage] for stage in model.stages]
    assert kinds == [[False], [False, True], [False, True, True], [False, True, True, True], [False, True, True], [False, True, True], [False]]  # fmt: skip


def _zero_branch(block: nn.Module) -> nn.Module:
    bn = block.project.bn if hasattr(block, "project") else block.pw.bn
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return block.eval()


@pytest.mark.parametrize(
    "name, index, shortcut",
    [("mobilenet_v2", (2, 1), True), ("mobilenet_v2", (2, 0), False), ("mobilenet_v2", (4, 0), False), ("mobilenet_v1", (3, 2), False)],
)
def test_shortcut_behaviour(name, index, shortcut):
    """With the residual branch's last BN zeroed, a shortcut block is the identity, a plain block outputs 0."""
    model = smallnets.create_model(name, width_mult=0.35)
    block = _zero_branch(model.stages[index[0]][index[1]])
    in_chs = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.randn(2, in_chs, 8, 8)
    with torch.no_grad():
        y = block(x)
    if shortcut:
        assert torch.equal(y, x)
    else:
        assert torch.count_nonzero(y) == 0


def test_v2_drop_path_grows_linearly_over_blocks():
    model = meta_model("mobilenet_v2", drop_path_rate=0.17)
    ps = {i: b.drop_path.p for i, b in enumerate(blocks(model)) if isinstance(b, InvertedResidual)}
    assert len(ps) == 10
    assert all(p == pytest.approx(0.17 * i / 17) for i, p in ps.items())
    assert all(b.drop_path.p == 0.0 for b in blocks(meta_model("mobilenet_v2")) if isinstance(b, InvertedResidual))


# ---------------------------------------------------------------------------------------------
# Shared knobs


@pytest.mark.parametrize("name, repeats", [("mobilenet_v1", [1, 2, 2, 6, 2]), ("mobilenet_v2", [1, 2, 3, 4, 3, 3, 1])])
@pytest.mark.parametrize("depth", [0.5, 1.0, 1.5])
def test_depth_multiplier_rounds_repeats_up(name, repeats, depth):
    model = meta_model(name, depth_mult=depth)
    assert [len(s) for s in model.stages] == [math.ceil(n * depth) for n in repeats]


def test_compound_scaling_doubles_mobilenet_v2_macs():
    """EfficientNet Table 3: phi = 1 scales MobileNetV2 by about alpha * beta^2 * gamma^2 ~= 1.92 in MACs."""
    s = smallnets.compound_scaling(1)
    base = smallnets.count_macs(meta_model("mobilenet_v2"), (3, 224, 224))
    side = s.input_side(224)
    scaled_model = meta_model("mobilenet_v2", width_mult=s.width, depth_mult=s.depth)
    scaled = smallnets.count_macs(scaled_model, (3, side, side))
    assert [len(st) for st in scaled_model.stages] == [2, 3, 4, 5, 4, 4, 2]
    assert 1.6 < scaled / base < 2.6


def test_cifar_stem_drops_only_the_first_downsampling():
    spec = cifar_stem(mobilenet_v2())
    assert spec.stem.stride == 1 and spec.resolution == 32
    assert [stage[0].stride for stage in spec.stages] == [1, 1, 2, 2, 1, 2, 1]


@pytest.mark.parametrize("name", MODELS)
def test_cifar_stem_ends_at_4x4(name):
    model = smallnets.create_model(name, num_classes=10, width_mult=0.25, cifar=True).eval()
    assert model.stem.conv.stride == (1, 1)
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 32, 32))
    assert features.shape[-2:] == (4, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name, knobs", [("mobilenet_v1", {"width_mult": 0.25}), ("mobilenet_v2", {"width_mult": 0.35, "drop_path_rate": 0.1})])  # fmt: skip
def test_forward_backward_small(name, knobs):
    torch.manual_seed(0)
    model = smallnets.create_model(name, num_classes=5, in_chans=1, **knobs)
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 5)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("mobilenet_v1", {"width_mult": -0.5}, "width_mult must be > 0, got -0.5"),
        ("mobilenet_v1", {"depth_mult": 0}, "depth_mult must be > 0, got 0"),
        ("mobilenet_v1", {"separable": "no"}, "separable must be True or False, got 'no'"),
        ("mobilenet_v1", {"shallow": 1}, "shallow must be True or False, got 1"),
        ("mobilenet_v1", {"drop_rate": 1.0}, "drop_rate must be in [0.0, 1.0), got 1.0"),
        ("mobilenet_v1", {"cifar": 1}, "cifar must be True or False, got 1"),
        ("mobilenet_v2", {"width_mult": 0}, "width_mult must be > 0, got 0"),
        ("mobilenet_v2", {"depth_mult": -1.0}, "depth_mult must be > 0, got -1.0"),
        ("mobilenet_v2", {"drop_rate": -0.1}, "drop_rate must be in [0.0, 1.0), got -0.1"),
        ("mobilenet_v2", {"drop_path_rate": 1.5}, "drop_path_rate must be in [0.0, 1.0), got 1.5"),
        ("mobilenet_v2", {"cifar": "yes"}, "cifar must be True or False"),
    ],
)
def test_bad_knobs(name, knobs, words):
    with pytest.raises(ValueError) as err:
        meta_model(name, **knobs)
    assert words in str(err.value)


def test_published_figures():
    v1 = smallnets.model_info("mobilenet_v1")
    assert v1.published_for({"separable": False}).top1 == pytest.approx(71.7)
    assert v1.published_for({}, (3, 128, 128)).macs == pytest.approx(186e6)
    assert v1.published_for({"width_mult": 0.75}).top1 == pytest.approx(68.4)
    assert v1.published_for({"shallow": True}).top1 == pytest.approx(65.3)
    v2 = smallnets.model_info("mobilenet_v2")
    assert v2.published_for().top1 == pytest.approx(72.0)
    assert v2.published_for({"width_mult": 1.4}).top1 == pytest.approx(74.7)
    assert v1.representative and v2.representative


def test_state_dict_keys_are_pinned():
    v1 = meta_model("mobilenet_v1").state_dict()
    pinned_v1 = ("stem.conv.weight", "stem.bn.running_var", "stages.0.0.dw.conv.weight", "stages.0.0.pw.bn.weight", "stages.4.1.pw.conv.weight")
    for key in (*pinned_v1, "classifier.fc.weight"):
        assert key in v1, key
    assert "stages.1.0.conv.weight" in meta_model("mobilenet_v1", separable=False).state_dict()
    v2 = meta_model("mobilenet_v2").state_dict()
    pinned_v2 = ("stem.conv.weight", "stages.0.0.dw.conv.weight", "stages.0.0.project.bn.bias", "stages.1.0.expand.conv.weight")
    for key in (*pinned_v2, "stages.6.0.project.conv.weight", "neck.conv.weight", "neck.bn.weight", "classifier.fc.bias"):
        assert key in v2, key
    assert not any(k.startswith("stages.0.0.expand") for k in v2)
    assert len(v1) == 164 and len(v2) == 314  # same tensors as timm mobilenetv1_100 / torchvision mobilenet_v2


def test_blocks_are_the_shared_inverted_bottleneck():
    assert all(isinstance(b, InvertedBottleneck) for b in blocks(meta_model("mobilenet_v2")))
