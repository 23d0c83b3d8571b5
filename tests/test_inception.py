"""GoogLeNet and Inception v3: torchvision counts, Table 1 widths, grid sizes, module wiring (branches
concatenated in order, Figure 7's split), the "5x5" quirk, CIFAR stems, knobs, specs, keys, preprocessing."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.inception import (
    Conv,
    GoogLeNetSpec,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionModule,
    InceptionStage,
    InceptionV3Spec,
    Pool,
    module_out_chs,
)
from smallnets.arch.spec import ArchSpec
from smallnets.models.inception import InceptionBlock
from smallnets.pretrained import get_format

NAMES = ("googlenet", "inception_v3")


def _meta(name: str, **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _input(name: str, side: int | None = None) -> torch.Tensor:
    c, h, w = smallnets.model_info(name).input_size
    return torch.empty(1, c, side or h, side or w, device="meta")


# ------------------------------------------------------------------------------------------
# Counts: torchvision's googlenet / inception_v3 with auxiliary classifiers off (classic_tables.json)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e["id"]) for e in load_facts("classic_tables.json")["entries"] if e["model"] in NAMES])
def test_classic_table_counts(entry):
    model = _meta(entry["model"], num_classes=entry["num_classes"], **entry["kwargs"])
    assert smallnets.count_params(model) == entry["params"]["value"]
    assert smallnets.count_macs(model, tuple(entry["input_size"])) == entry["macs"]["value"]


def test_counts_without_the_reference_file():
    assert smallnets.count_params(_meta("googlenet")) == 6_624_904
    assert smallnets.count_macs(_meta("googlenet"), (3, 224, 224)) == 1_498_376_192
    assert smallnets.count_params(_meta("inception_v3")) == 23_834_568
    assert smallnets.count_macs(_meta("inception_v3"), (3, 299, 299)) == 5_713_216_096


# ------------------------------------------------------------------------------------------
# Structure


def test_googlenet_follows_table_1():
    spec = smallnets.model_spec("googlenet")
    outs, chs = [], spec.stem_chs
    for block in spec.blocks:
        chs = module_out_chs(block, chs)
        outs.append(chs)
    assert spec.stem_chs == 192
    assert outs == [256, 480, 512, 512, 512, 528, 832, 832, 1024]  # Table 1's "output size" depths, 3a ... 5b
    assert [s.labels for s in spec.stages] == [("a", "b"), ("a", "b", "c", "d", "e"), ("a", "b")]
    model = _meta("googlenet")
    x = _input("googlenet")
    assert model.stem(x).shape[1:] == (192, 28, 28)
    assert [tuple(f.shape[1:]) for f in model.forward_stages(x)] == [(480, 28, 28), (832, 14, 14), (1024, 7, 7)]
    assert model.num_features == 1024 and model.classifier.drop.p == 0.2


def test_inception_v3_grids_and_widths():
    model = _meta("inception_v3")
    x = _input("inception_v3")
    assert model.stem(x).shape[1:] == (192, 35, 35)
    assert [tuple(f.shape[1:]) for f in model.forward_stages(x)] == [(288, 35, 35), (768, 17, 17), (2048, 8, 8)]
    assert [[n for n, _ in stage.named_children()] for stage in model.stages] == [["b", "c", "d"], ["a", "b", "c", "d", "e"], ["a", "b", "c"]]
    assert [type(b).__name__ for b in model.spec.blocks] == ["InceptionA"] * 3 + ["InceptionB"] + ["InceptionC"] * 4 + ["InceptionD"] + ["InceptionE"] * 2
    assert model.num_features == 2048 and model.classifier.drop.p == 0.5


def test_every_conv_is_torchvisions_basic_conv():
    for name in NAMES:
        model = _meta(name)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert convs and all(c.bias is None for c in convs) and len(norms) == len(convs)
        assert {(n.eps, n.momentum) for n in norms} == {(1e-3, 0.1)}  # BasicConv2d: BatchNorm2d(eps=0.001)
        assert {type(m).__name__ for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))} == {"ReLU"}


def test_googlenet_pools_are_torchvisions():
    pools = {(type(m).__name__, m.kernel_size, m.stride, m.padding, m.ceil_mode) for m in _meta("googlenet").modules() if isinstance(m, nn.MaxPool2d)}
    assert pools == {("MaxPool2d", 3, 2, 0, True), ("MaxPool2d", 2, 2, 0, True), ("MaxPool2d", 3, 1, 1, True)}
    pools = {(type(m).__name__, m.kernel_size, m.stride, m.padding) for m in _meta("inception_v3").modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))}
    assert pools == {("MaxPool2d", 3, 2, 0), ("AvgPool2d", 3, 1, 1)}


def test_the_5x5_branch_is_3x3_as_torchvision_and_5x5_as_the_paper():
    model = _meta("googlenet")
    assert model.stages.inception3.a.branch3[1].conv.kernel_size == (3, 3)
    paper = _meta("googlenet", paper_5x5=True)
    conv = paper.stages.inception3.a.branch3[1].conv
    assert conv.kernel_size == (5, 5) and conv.padding == (2, 2)
    x = _input("googlenet")
    assert paper.forward_stages(x)[-1].shape == model.forward_stages(x)[-1].shape
    # 16 * 32 * (25 - 9) extra weights in 3a, and so on for every module
    extra = sum(b.reduce5x5 * b.conv5x5 * 16 for b in model.spec.blocks)
    assert smallnets.count_params(paper) - smallnets.count_params(model) == extra


def _check_concat(block: nn.Module, x: torch.Tensor) -> None:
    outs = [branch(x) for branch in block.children()]
    assert torch.equal(block(x), torch.cat(outs, 1))


@pytest.mark.parametrize(
    "spec",
    [
        InceptionModule(conv1x1=4, reduce3x3=3, conv3x3=5, reduce5x5=2, conv5x5=3, pool_proj=2),
        InceptionA(conv1x1=4, reduce5x5=3, conv5x5=4, reduce3x3dbl=2, conv3x3dbl=3, pool_proj=2),
        InceptionB(conv3x3=5, reduce3x3dbl=2, conv3x3dbl=3),
        InceptionC(conv1x1=3, reduce7x7=2, conv7x7=3, conv7x7dbl=4, pool_proj=2),
        InceptionD(reduce3x3=2, conv3x3=3, reduce7x7x3=2, conv7x7x3=3),
        InceptionE(conv1x1=3, reduce3x3=2, conv3x3=3, reduce3x3dbl=2, conv3x3dbl=4, pool_proj=2),
    ],
    ids=lambda s: type(s).__name__,
)
def test_a_module_concatenates_its_branches_in_order(spec):
    torch.manual_seed(0)
    block = InceptionBlock(spec, 6, 1e-3).eval()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        y = block(x)
        _check_concat(block, x)
    assert [n for n, _ in block.named_children()] == [b.name for b in spec.branches()]
    assert y.shape[1] == module_out_chs(spec, 6)
    side = 4 if isinstance(spec, (InceptionB, InceptionD)) else 9  # the reductions: 3x3/2 unpadded
    assert y.shape[-2:] == (side, side)


def test_inception_e_splits_one_map_into_1x3_and_3x1():
    torch.manual_seed(0)
    spec = InceptionE(conv1x1=3, reduce3x3=2, conv3x3=3, reduce3x3dbl=2, conv3x3dbl=4, pool_proj=2)
    block = InceptionBlock(spec, 6, 1e-3).eval()
    x = torch.randn(1, 6, 5, 5)
    branch = block.branch3x3
    split = branch[-1]
    assert [n for n, _ in split.named_children()] == ["a", "b"]
    assert (split.a.conv.kernel_size, split.a.conv.padding, split.b.conv.kernel_size, split.b.conv.padding) == ((1, 3), (0, 1), (3, 1), (1, 0))
    with torch.no_grad():
        mid = branch[0](x)
        assert torch.equal(branch(x), torch.cat([split.a(mid), split.b(mid)], 1))
    assert module_out_chs(spec, 6) == 3 + 2 * 3 + 2 * 4 + 2


def test_inception_c_factorises_7x7_into_1x7_and_7x1():
    model = _meta("inception_v3")
    block = model.stages.mixed6.b
    assert [c.conv.kernel_size for c in block.branch7x7] == [(1, 1), (1, 7), (7, 1)]
    assert [c.conv.kernel_size for c in block.branch7x7dbl] == [(1, 1), (7, 1), (1, 7), (7, 1), (1, 7)]
    assert [c.conv.out_channels for c in block.branch7x7dbl] == [128, 128, 128, 128, 192]


def test_state_dict_keys():
    keys = list(_meta("googlenet").state_dict())
    assert keys[:2] == ["stem.0.conv.weight", "stem.0.bn.weight"]
    assert "stages.inception4.a.branch2.1.conv.weight" in keys and "stages.inception5.b.branch4.1.bn.running_var" in keys
    assert keys[-2:] == ["classifier.fc.weight", "classifier.fc.bias"]
    keys = list(_meta("inception_v3").state_dict())
    assert "stages.mixed5.b.branch5x5.1.conv.weight" in keys and "stages.mixed7.c.branch3x3dbl.2.b.conv.weight" in keys
    assert not any("aux" in k.lower() for k in keys)
    assert _meta("googlenet").classifier_layer() == "classifier.fc"


# ------------------------------------------------------------------------------------------
# CIFAR stems and knobs


@pytest.mark.parametrize("name", NAMES)
def test_cifar_stem(name):
    model = _meta(name, num_classes=10, cifar=True)
    x = torch.empty(1, 3, 32, 32, device="meta")
    assert model.stem(x).shape[-1] == 16
    assert [f.shape[-1] for f in model.forward_stages(x)] == [16, 8, 4]
    assert model.spec.resolution == 32
    first = model.stem[0].conv
    assert first.kernel_size == (3, 3) and first.stride == (1, 1) and first.padding == (1, 1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.stem) == 1


def test_cifar_model_runs_and_learns():
    torch.manual_seed(0)
    model = smallnets.create_model("googlenet", num_classes=10, cifar=True)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("googlenet", {"drop_rate": 1.0}, "drop_rate must be in [0.0, 1.0), got 1.0"),
        ("googlenet", {"drop_rate": -0.1}, "drop_rate must be in"),
        ("googlenet", {"paper_5x5": 1}, "paper_5x5 must be True or False, got 1"),
        ("googlenet", {"cifar": "yes"}, "cifar must be True or False, got 'yes'"),
        ("inception_v3", {"drop_rate": 2}, "drop_rate must be in [0.0, 1.0), got 2"),
        ("inception_v3", {"cifar": 0}, "cifar must be True or False, got 0"),
        ("inception_v3", {"aux_logits": True}, "unknown knob 'aux_logits'"),
    ],
)
def test_bad_knobs_are_refused_naming_them(name, knobs, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        smallnets.model_spec(name, **knobs)


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: InceptionModule(conv1x1=0, reduce3x3=1, conv3x3=1, reduce5x5=1, conv5x5=1, pool_proj=1), "conv1x1 must be an integer >= 1, got 0"),
        (lambda: InceptionModule(conv1x1=1, reduce3x3=1, conv3x3=1, reduce5x5=1, conv5x5=1, pool_proj=1, kernel5=7), "kernel5 must be 3"),
        (lambda: InceptionA(pool_proj=2.5), "pool_proj must be an integer >= 1, got 2.5"),
        (lambda: InceptionB(padding=2), "padding must be 0"),
        (lambda: InceptionC(reduce7x7=True), "reduce7x7 must be an integer >= 1, got True"),
        (lambda: Conv(out_chs=8, kernel=(3, 3), padding=(2, 2)), "padding must be at most half the kernel"),
        (lambda: Conv(out_chs=8, kernel=(3,)), "kernel must be two integers"),
        (lambda: Conv(out_chs=8, stride=3), "stride must be 1 or 2, got 3"),
        (lambda: Pool(kind="min"), "kind must be one of 'max', 'avg'; got 'min'"),
        (lambda: Pool(kernel=3, padding=2), r"padding must be an integer in \[0, kernel // 2 = 1\], got 2"),
        (lambda: InceptionStage(name="s", blocks=(InceptionE(),) * 2, first="z"), "first must be a letter a-z leaving a letter for each of its 2"),
        (lambda: InceptionStage(name="s.t", blocks=(InceptionE(),)), "name must be an identifier"),
        (lambda: InceptionStage(name="s", blocks=(Conv(out_chs=3),)), r"blocks\[0\] must be an inception module"),
        (lambda: smallnets.model_spec("googlenet").replace(bn_eps=0.0), "bn_eps must be > 0, got 0.0"),
        (lambda: smallnets.model_spec("googlenet").replace(stem=(Pool(),)), "stem must be a list of Conv and Pool layers with at least one Conv"),
    ],
)
def test_bad_specs_are_refused_naming_the_place(build, words):
    with pytest.raises(ValueError, match=words):
        build()


@pytest.mark.parametrize("knobs", [{}, {"cifar": True}, {"paper_5x5": True}])
def test_specs_round_trip_through_json(knobs):
    for name in NAMES:
        if "paper_5x5" in knobs and name != "googlenet":
            continue
        spec = smallnets.model_spec(name, num_classes=10, **knobs)
        again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and type(again) is (GoogLeNetSpec if name == "googlenet" else InceptionV3Spec)


def test_a_hand_edited_spec_builds_its_widths():
    spec = smallnets.model_spec("googlenet", num_classes=5)
    first = spec.stages[0]
    narrow = dataclasses.replace(first.blocks[0], conv1x1=32)
    edited = spec.replace(stages=(dataclasses.replace(first, blocks=(narrow, *first.blocks[1:])), *spec.stages[1:]))
    with torch.device("meta"):
        model = smallnets.build_model(edited)
    assert model.stages.inception3.a.branch1[0].conv.out_channels == 32
    assert model.stages.inception3.b.branch1[0].conv.in_channels == 256 - 32  # the next module takes what 3a puts out


# ------------------------------------------------------------------------------------------
# Registry and formats


def test_registry_entries():
    for name, top1, size in (("googlenet", 69.778, 224), ("inception_v3", 77.294, 299)):
        info = smallnets.model_info(name)
        assert info.representative and info.baseline and info.family == name
        assert info.input_size == (3, size, size)
        assert info.published_for().top1 == top1 and "torchvision model card" in info.published_for().source


def test_transform_input_is_the_formats_normalisation():
    # torchvision's pretrained googlenet / inception_v3 re-normalise ImageNet-normalised input with
    # transform_input: x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5. That is (pixel - 0.5) / 0.5, so the
    # formats publish mean = std = 0.5 and the models carry no such step.
    imagenet = get_format("torchvision:mobilenet_v2").preprocessing
    for fmt, crop, resize in (("torchvision:googlenet", 224, 256), ("torchvision:inception_v3", 299, 342)):
        prep = get_format(fmt).preprocessing
        assert (prep["crop"], prep["resize"], prep["interpolation"]) == (crop, resize, "bilinear")
        pixels = torch.rand(2, 3, 4, 4)
        mean, std = (torch.tensor(imagenet[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        x = (pixels - mean) / std
        transformed = x * std / 0.5 + (mean - 0.5) / 0.5
        ours = (pixels - torch.tensor(prep["mean"]).view(1, 3, 1, 1)) / torch.tensor(prep["std"]).view(1, 3, 1, 1)
        torch.testing.assert_close(transformed, ours)
        assert "transform_input" in get_format(fmt).notes
