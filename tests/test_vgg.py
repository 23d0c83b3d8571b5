"""AlexNet and VGG: torchvision's counts, Table 1's layouts, map sizes, classifier order, CIFAR variants,
knobs, keys, and torchvision-layout weights converting to the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import smallnets
from smallnets.arch.spec import ArchSpec
from smallnets.arch.vgg import ConvLayer, MaxPool, PlainStage, VGGSpec
from smallnets.pretrained import convert_state_dict, detect_format, get_format

VGG_NAMES = [f"vgg{d}{bn}" for bn in ("", "_bn") for d in (11, 13, 16, 19)]
# torchvision model cards (IMAGENET1K_V1): num_params, and GFLOPS (their conv + linear mult-adds, in G)
CARDS = {
    "alexnet": (61_100_840, 0.71),
    "vgg11": (132_863_336, 7.61), "vgg13": (133_047_848, 11.31), "vgg16": (138_357_544, 15.47), "vgg19": (143_667_240, 19.63),
    "vgg11_bn": (132_868_840, 7.61), "vgg13_bn": (133_053_736, 11.31), "vgg16_bn": (138_365_992, 15.47), "vgg19_bn": (143_678_248, 19.63),
}  # fmt: skip
TABLE1 = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # 3x3 convs per stage: A, B, D, E


def _meta(name: str, **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _sides(model: nn.Module, side: int) -> list[int]:
    y = model.stem(torch.empty(1, 3, side, side, device="meta"))
    out = []
    for stage in model.stages:
        y = stage(y)
        out.append(y.shape[-1])
    return out


# ------------------------------------------------------------------------------------------
# Counts


@pytest.mark.parametrize("name", list(CARDS))
def test_counts_match_torchvision(name):
    model = _meta(name)
    params, gflops = CARDS[name]
    assert smallnets.count_params(model) == params
    assert round(smallnets.count_macs(model, (3, 224, 224)) / 1e9, 2) == gflops


def test_exact_mult_adds_without_the_reference_file():
    assert smallnets.count_macs(_meta("alexnet"), (3, 224, 224)) == 714_188_480  # torchvision alexnet
    assert smallnets.count_macs(_meta("vgg16_bn"), (3, 224, 224)) == 15_470_264_320  # torchvision vgg16_bn
    assert smallnets.count_macs(_meta("vgg16"), (3, 224, 224)) == 15_470_264_320  # BN adds no mult-adds


def test_published_figures_and_registry_metadata():
    alex = smallnets.model_info("alexnet")
    assert alex.family == "alexnet" and alex.representative and alex.baseline and alex.input_size == (3, 224, 224)
    assert dict(alex.knobs) == {"fc_chs": 4096, "drop_rate": 0.5, "cifar": False}
    assert alex.published_for().top1 == 56.522 and alex.published_for().params == 61_100_840
    top1 = {"vgg11": 69.020, "vgg13": 69.928, "vgg16": 71.592, "vgg19": 72.376,
            "vgg11_bn": 70.370, "vgg13_bn": 71.586, "vgg16_bn": 73.360, "vgg19_bn": 74.218}  # fmt: skip
    for name in VGG_NAMES:
        info = smallnets.model_info(name)
        assert info.family == "vgg" and info.baseline and "arXiv:1409.1556" in info.paper
        assert info.published_for().top1 == pytest.approx(top1[name])
        assert dict(info.knobs) == {"width_mult": 1.0, "fc_chs": 4096, "drop_rate": 0.5, "cifar": False}
    assert [n for n in VGG_NAMES if smallnets.model_info(n).representative] == ["vgg16"]
    for depth, millions in ((11, 133), (13, 133), (16, 138), (19, 144)):  # VGG paper Table 2
        assert smallnets.model_info(f"vgg{depth}").published_for().params == millions * 1e6
        assert round(smallnets.count_params(_meta(f"vgg{depth}")) / 1e6) == millions


# ------------------------------------------------------------------------------------------
# Layouts


@pytest.mark.parametrize("depth", list(TABLE1))
def test_vgg_stages_follow_table_1(depth):
    model = _meta(f"vgg{depth}")
    convs = [[m for m in stage.modules() if isinstance(m, nn.Conv2d)] for stage in model.stages]
    assert tuple(len(c) for c in convs) == TABLE1[depth]
    assert sum(map(len, convs)) + 3 == depth  # weight layers: convs and the three FC layers
    for stage, width in zip(convs, (64, 128, 256, 512, 512)):
        assert all(c.out_channels == width and c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in stage)
        assert all(c.bias is not None for c in stage)
    for stage in model.stages:
        assert isinstance(stage.pool, nn.MaxPool2d) and (stage.pool.kernel_size, stage.pool.stride) == (2, 2)
    assert _sides(model, 224) == [112, 56, 28, 14, 7]
    assert model.num_features == 512 and isinstance(model.stem, nn.Identity) and isinstance(model.neck, nn.Identity)


def test_alexnet_layers_and_map_sizes():
    model = _meta("alexnet")
    convs = [m for m in model.stages.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1),
    ]  # fmt: skip
    pools = [m for m in model.stages.modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 0)] * 3  # overlapping pooling
    assert model.stages[0].conv1(torch.empty(1, 3, 224, 224, device="meta")).shape[-1] == 55
    assert _sides(model, 224) == [27, 13, 6]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_classifiers_put_dropout_where_torchvision_does():
    alex, vgg = _meta("alexnet"), _meta("vgg16")
    assert [type(m).__name__ for m in alex.classifier] == [
        "AdaptiveAvgPool2d", "Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]  # fmt: skip
    assert [type(m).__name__ for m in vgg.classifier] == [
        "AdaptiveAvgPool2d", "Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]  # fmt: skip
    assert alex.classifier.pool.output_size == 6 and alex.classifier.fc1.in_features == 256 * 6 * 6
    assert vgg.classifier.pool.output_size == 7 and vgg.classifier.fc1.in_features == 512 * 7 * 7
    assert [m.p for m in vgg.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert [m.p for m in _meta("alexnet", drop_rate=0.2).classifier if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    for model in (alex, vgg):
        assert model.classifier_layer() == "classifier.fc"
    assert _meta("vgg11", num_classes=7).state_dict()["classifier.fc.weight"].shape == (7, 4096)


def test_bn_variants_keep_the_conv_bias_and_pin_their_keys():
    keys = list(_meta("vgg11_bn").state_dict())
    assert keys[:7] == ["stages.0.conv1.conv.weight", "stages.0.conv1.conv.bias", "stages.0.conv1.bn.weight", "stages.0.conv1.bn.bias",
                        "stages.0.conv1.bn.running_mean", "stages.0.conv1.bn.running_var", "stages.0.conv1.bn.num_batches_tracked"]  # fmt: skip
    assert "stages.4.conv2.bn.weight" in keys
    assert keys[-6:] == ["classifier.fc1.weight", "classifier.fc1.bias", "classifier.fc2.weight", "classifier.fc2.bias",
                         "classifier.fc.weight", "classifier.fc.bias"]  # fmt: skip
    plain = list(_meta("vgg11").state_dict())
    assert plain == [k for k in keys if ".bn." not in k]
    assert list(_meta("alexnet").state_dict())[:4] == ["stages.0.conv1.conv.weight", "stages.0.conv1.conv.bias",
                                                      "stages.1.conv1.conv.weight", "stages.1.conv1.conv.bias"]  # fmt: skip


# ------------------------------------------------------------------------------------------
# CIFAR variants and knobs


def test_cifar_variants_end_at_4x4_and_pool_to_one():
    alex = _meta("alexnet", cifar=True, num_classes=10)
    conv1 = alex.stages[0].conv1.conv
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert [(p.kernel_size, p.stride, p.padding) for p in alex.modules() if isinstance(p, nn.MaxPool2d)] == [(3, 2, 1)] * 3
    assert _sides(alex, 32) == [16, 8, 4]
    assert alex.classifier.pool.output_size == 1 and alex.classifier.fc1.in_features == 256

    vgg = _meta("vgg16", cifar=True, num_classes=10)
    assert [hasattr(stage, "pool") for stage in vgg.stages] == [True, True, True, False, False]
    assert _sides(vgg, 32) == [16, 8, 4, 4, 4]
    assert vgg.classifier.pool.output_size == 1 and vgg.classifier.fc1.in_features == 512
    def convs(m):
        return [(c.in_channels, c.out_channels) for c in m.modules() if isinstance(c, nn.Conv2d)]

    assert convs(vgg) == convs(_meta("vgg16"))  # the same convs; only two pools and the head's pool differ
    assert smallnets.model_spec("vgg16", cifar=True).resolution == 32


def test_width_mult_and_fc_chs():
    model = _meta("vgg11", width_mult=0.5, fc_chs=256)
    assert [c.out_channels for c in model.modules() if isinstance(c, nn.Conv2d)] == [32, 64, 128, 128, 256, 256, 256, 256]
    assert (model.classifier.fc1.in_features, model.classifier.fc1.out_features, model.classifier.fc2.out_features) == (256 * 49, 256, 256)
    tiny = _meta("vgg11", width_mult=0.1)  # round to 8, never below 8: 6.4 -> 8, 12.8 -> 16, 25.6 -> 24, 51.2 -> 48
    assert [c.out_channels for c in tiny.modules() if isinstance(c, nn.Conv2d)] == [8, 16, 24, 24, 48, 48, 48, 48]
    assert _meta("alexnet", fc_chs=512).classifier.fc2.in_features == 512


@pytest.mark.parametrize(
    "name, knobs, match",
    [
        ("vgg16", {"width_mult": 0}, r"width_mult must be > 0, got 0"),
        ("vgg16", {"width_mult": -0.5}, r"width_mult must be > 0, got -0.5"),
        ("vgg16", {"fc_chs": 0}, r"fc_chs must be an integer >= 1, got 0"),
        ("alexnet", {"fc_chs": 64.0}, r"fc_chs must be an integer >= 1, got 64.0"),
        ("vgg16_bn", {"drop_rate": 1.0}, r"drop_rate must be in \[0.0, 1.0\), got 1.0"),
        ("alexnet", {"drop_rate": -0.1}, r"drop_rate must be in \[0.0, 1.0\), got -0.1"),
        ("alexnet", {"cifar": 1}, r"cifar must be True or False, got 1"),
        ("vgg16", {"depth": 19}, r"vgg16 fixes depth=16"),
        ("vgg16", {"batch_norm": True}, r"vgg16 fixes batch_norm=False"),
        ("alexnet", {"width_mult": 0.5}, r"unknown knob 'width_mult' for alexnet"),
    ],
)
def test_bad_knobs_name_the_argument(name, knobs, match):
    with pytest.raises(ValueError, match=match):
        _meta(name, **knobs)


def test_builder_depth_must_be_a_table_1_configuration():
    from smallnets.arch.vgg import vgg

    with pytest.raises(ValueError, match=r"depth must be one of 11, 13, 16, 19; got 15"):
        vgg(depth=15)


def test_the_spec_refuses_bad_layers_naming_them():
    with pytest.raises(ValueError, match=r"ConvLayer\(out_chs=0\): out_chs must be an integer >= 1, got 0"):
        ConvLayer(out_chs=0)
    with pytest.raises(ValueError, match=r"padding must be an integer >= 0, got -1"):
        ConvLayer(out_chs=8, padding=-1)
    with pytest.raises(ValueError, match=r"padding must be an integer in \[0, kernel // 2 = 1\], got 2"):
        MaxPool(kernel=3, stride=2, padding=2)
    with pytest.raises(ValueError, match=r"convs must be a non-empty list of ConvLayer"):
        PlainStage(convs=(), pool=None)
    spec = smallnets.model_spec("vgg11", num_classes=10)
    with pytest.raises(ValueError, match=r"VGGSpec: fc_chs\[1\] must be an integer >= 1, got 0"):
        spec.replace(fc_chs=(64, 0))
    with pytest.raises(ValueError, match=r"VGGSpec: stages must be a non-empty list of PlainStage"):
        spec.replace(stages=())
    with pytest.raises(ValueError, match=r"batch_norm must be True or False, got 'yes'"):
        spec.replace(batch_norm="yes")


def test_a_hand_edited_spec_round_trips_and_builds():
    spec = smallnets.model_spec("vgg11_bn", num_classes=10, cifar=True, width_mult=0.25, fc_chs=32)
    stages = list(spec.stages)
    stages[2] = PlainStage(convs=(ConvLayer(out_chs=40), ConvLayer(out_chs=24)), pool=stages[2].pool)  # "pruned" widths
    edited = spec.replace(stages=tuple(stages), fc_chs=(48,))
    again = ArchSpec.from_dict(json.loads(json.dumps(edited.to_dict())))
    assert again == edited and isinstance(again, VGGSpec)
    model = smallnets.build_model(again).eval()
    assert [c.out_channels for c in model.stages[2].modules() if isinstance(c, nn.Conv2d)] == [40, 24]
    assert model.stages[3].conv1.conv.in_channels == 24
    assert model.classifier.fc1.out_features == 48 and model.classifier.fc.in_features == 48 and not hasattr(model.classifier, "fc2")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


# ------------------------------------------------------------------------------------------
# Training-sized forward / backward (small variants: the registered ones are 61M-144M parameters)


@pytest.mark.parametrize("name, knobs, side", [
    ("vgg11_bn", {"width_mult": 0.125, "fc_chs": 32}, 64),
    ("vgg19", {"width_mult": 0.125, "fc_chs": 32, "cifar": True}, 32),
    ("alexnet", {"fc_chs": 32}, 64),
    ("alexnet", {"fc_chs": 32, "cifar": True}, 32),
])  # fmt: skip
def test_forward_backward_small(name, knobs, side):
    torch.manual_seed(0)
    model = smallnets.create_model(name, num_classes=5, **knobs)
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ------------------------------------------------------------------------------------------
# torchvision's layout: its keys convert, are told apart, and give the same logits


def _reference(widths: tuple, *, kind: str, batch_norm: bool = False, fc: int = 4096, num_classes: int = 1000) -> nn.Module:
    """A network in torchvision's module layout (``features`` / ``avgpool`` / ``classifier`` Sequentials),
    written from its documented architecture: the reference the conversion is checked against."""
    layers: list[nn.Module] = []
    in_chs = 3
    if kind == "alexnet":
        for out, k, s, p, pool in zip(widths, (11, 5, 3, 3, 3), (4, 1, 1, 1, 1), (2, 2, 1, 1, 1), (True, True, False, False, True)):
            layers += [nn.Conv2d(in_chs, out, k, s, p), nn.ReLU(inplace=True)] + ([nn.MaxPool2d(3, 2)] if pool else [])
            in_chs = out
        side = 6
        head = [nn.Dropout(), nn.Linear(in_chs * 36, fc), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(inplace=True)]
    else:
        for item in widths:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(in_chs, item, 3, padding=1)] + ([nn.BatchNorm2d(item)] if batch_norm else []) + [nn.ReLU(inplace=True)]
            in_chs = item
        side = 7
        head = [nn.Linear(in_chs * 49, fc), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout()]
    net = nn.Module()
    net.features = nn.Sequential(*layers)
    net.avgpool = nn.AdaptiveAvgPool2d(side)
    net.classifier = nn.Sequential(*head, nn.Linear(fc, num_classes))
    net.forward = lambda x: net.classifier(torch.flatten(net.avgpool(net.features(x)), 1))
    return net


def _vgg_widths(depth: int, scale: float = 1.0) -> list:
    out = []
    for n, width in zip(TABLE1[depth], (64, 128, 256, 512, 512)):
        out += [int(width * scale)] * n + ["M"]
    return out


@pytest.mark.parametrize("name", ["alexnet", *VGG_NAMES])
def test_torchvision_layout_is_detected_and_converts_key_for_key(name):
    with torch.device("meta"):
        if name == "alexnet":
            ref = _reference((64, 192, 384, 256, 256), kind="alexnet")
        else:
            ref = _reference(_vgg_widths(int(name[3:5])), kind="vgg", batch_norm=name.endswith("_bn"))
        model = smallnets.create_model(name)
    src = ref.state_dict()
    assert detect_format(src) == f"torchvision:{name}"
    assert get_format(f"torchvision:{name}").url.startswith("https://download.pytorch.org/models/")
    state, report = convert_state_dict(src, model)
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []} and set(state) == set(model.state_dict())


@pytest.mark.parametrize("name, knobs", [
    ("alexnet", {"fc_chs": 64}),
    ("vgg13_bn", {"width_mult": 0.25, "fc_chs": 64}),
    ("vgg16", {"width_mult": 0.25, "fc_chs": 64}),
])  # fmt: skip
def test_torchvision_layout_weights_give_the_same_logits(name, knobs):
    torch.manual_seed(0)
    if name == "alexnet":
        ref = _reference((64, 192, 384, 256, 256), kind="alexnet", fc=64, num_classes=10)
    else:
        ref = _reference(_vgg_widths(int(name[3:5]), 0.25), kind="vgg", batch_norm=name.endswith("_bn"), fc=64, num_classes=10)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a misplaced BN would show
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model = smallnets.create_model(name, num_classes=10, **knobs)
    state, _ = convert_state_dict(ref.state_dict(), model)
    model.load_state_dict(state)
    ref.eval(), model.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, out = ref.forward(x), model(x)
    assert float((out - expected).norm() / expected.norm()) < 1e-5
