"""Xception: paper/timm counts, flows and strides, separable convs, block wiring, knobs, keys, timm logits."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smallnets
from conftest import load_facts
from conftest import shared_path
from smallnets.arch.spec import ArchSpec
from smallnets.arch.xception import SeparableBlock, XceptionSpec
from smallnets.models.xception import SeparableConvNormAct, XceptionBlock

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.ELU, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)


def _entries():
    entries = [e for e in load_facts("paper_tables.json")["entries"] if e["model"] == "xception"]
    return [pytest.param(e, id=e["id"]) for e in entries]


def _meta(**knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model("xception", **knobs)


def _blocks(model: nn.Module) -> list[XceptionBlock]:
    return [b for stage in model.stages for b in stage]


@pytest.mark.parametrize("entry", _entries())
def test_paper_table_entry(entry):
    model = _meta(num_classes=entry["num_classes"], **entry["kwargs"])
    size = tuple(entry["input_size"])
    ours = {"params": smallnets.count_params(model), "macs": smallnets.count_macs(model, size)}
    checked = [k for k in ("params", "macs") if k in entry]
    assert checked
    for key in checked:
        ref = entry[key]
        assert abs(ours[key] - ref["value"]) <= ref["tolerance"], f"{entry['id']} {key}: {ours[key]:,} vs {ref['value']:,}"


def test_counts_without_the_reference_file():
    model = _meta()
    assert smallnets.count_params(model) == 22_855_952  # paper Table 3
    assert smallnets.count_macs(model, (3, 299, 299)) == 8_357_403_496  # timm legacy_xception


# ------------------------------------------------------------------------------------------
# Separable convolution: no non-linearity between depthwise and pointwise (Section 4.7)


def test_separable_conv_has_no_activation_between_depthwise_and_pointwise():
    sep = SeparableConvNormAct(8, 16)
    assert [n for n, _ in sep.named_children()] == ["dw", "pw"]
    assert [n for n, _ in sep.dw.named_children()] == ["conv"]  # no norm, no activation after the depthwise conv
    assert list(sep.pw.named_children())[0][0] == "conv"  # the pointwise conv comes first in its unit
    assert not any(isinstance(m, ACTIVATIONS) for m in sep.dw.modules())
    dw, pw = sep.dw.conv, sep.pw.conv
    assert (dw.groups, dw.in_channels, dw.out_channels, dw.kernel_size, dw.padding) == (8, 8, 8, (3, 3), (1, 1))
    assert (pw.groups, pw.kernel_size) == (1, (1, 1)) and dw.bias is None and pw.bias is None
    assert isinstance(sep.pw.bn, nn.BatchNorm2d) and not hasattr(sep.pw, "act")

    # Functionally: the pointwise conv receives exactly the depthwise output, negative values included.
    torch.manual_seed(0)
    seen = {}
    sep.dw.conv.register_forward_hook(lambda m, i, o: seen.update(dw_out=o))
    sep.pw.conv.register_forward_hook(lambda m, i, o: seen.update(pw_in=i[0]))
    sep(torch.randn(2, 8, 5, 5))
    assert (seen["dw_out"] < 0).any()
    assert seen["pw_in"] is seen["dw_out"] or torch.equal(seen["pw_in"], seen["dw_out"])


def test_every_separable_conv_in_the_model_is_linear_until_bn():
    model = _meta(middle_repeats=1)
    seps = [m for m in model.modules() if isinstance(m, SeparableConvNormAct)]
    assert len(seps) == 2 + 2 + 2 + 3 + 2 + 2  # entry 3 x 2, middle 1 x 3, exit block 2, neck 2
    for sep in seps:
        children = list(sep.dw.children())
        assert len(children) == 1 and isinstance(children[0], nn.Conv2d)  # the conv alone: no norm, no activation
        assert sep.dw.conv.groups == sep.dw.conv.in_channels


# ------------------------------------------------------------------------------------------
# Flows, strides, blocks


def test_flows_channels_and_map_sizes_at_299():
    model = _meta()
    x = torch.empty(1, 3, 299, 299, device="meta")
    stem = model.stem
    assert stem.conv1.conv.stride == (2, 2) and stem.conv1.conv.padding == (0, 0)  # 299 -> 149
    assert stem.conv2.conv.stride == (1, 1) and stem.conv2.conv.padding == (0, 0)  # 149 -> 147
    assert stem.conv1(x).shape == (1, 32, 149, 149)
    y = stem(x)
    assert y.shape == (1, 64, 147, 147)
    expected = {  # stage -> (blocks, out channels, side)
        "entry1": (1, 128, 74),
        "entry2": (1, 256, 37),
        "entry3": (1, 728, 19),
        "middle": (8, 728, 19),
        "exit": (1, 1024, 10),
    }
    assert [n for n, _ in model.stages.named_children()] == list(expected)
    for (name, stage), (blocks, out, side) in zip(model.stages.named_children(), expected.values()):
        assert len(stage) == blocks
        y = stage(y)
        assert y.shape == (1, out, side, side), name
    assert model.neck(y).shape == (1, 2048, 10, 10)
    assert [s.pw.conv.out_channels for s in model.neck] == [1536, 2048]
    assert all(isinstance(s.pw.act, nn.ReLU) for s in model.neck)  # exit: SeparableConv - BN - ReLU, twice
    assert model.num_features == 2048 and model.classifier.fc.in_features == 2048


def test_block_wiring_follows_figure_5():
    blocks = _blocks(_meta())
    assert len(blocks) == 12

    def widths(b):
        return [(s.dw.conv.in_channels, s.pw.conv.out_channels) for n, s in b.main.named_children() if n.startswith("sep")]

    # grow_first: the first separable conv widens; the exit block widens at its last (728, then 1024).
    assert widths(blocks[0]) == [(64, 128), (128, 128)]
    assert widths(blocks[1]) == [(128, 256), (256, 256)]
    assert widths(blocks[2]) == [(256, 728), (728, 728)]
    assert all(widths(b) == [(728, 728)] * 3 for b in blocks[3:11])
    assert widths(blocks[11]) == [(728, 728), (728, 1024)]
    # Every unit is ReLU - SeparableConv - BN, except the very first ReLU (the stem ends in one).
    assert [type(m).__name__ for m in blocks[0].main] == ["Identity", "SeparableConvNormAct", "ReLU", "SeparableConvNormAct"]
    for b in blocks[1:]:
        kinds = [type(m).__name__ for m in b.main]
        assert kinds == ["ReLU", "SeparableConvNormAct"] * (len(kinds) // 2)
    # Strided blocks end in a 3x3/s2 max-pool and have a 1x1/s2 conv-BN shortcut; middle blocks are identity.
    for b in blocks[:3] + blocks[11:]:
        assert isinstance(b.pool, nn.MaxPool2d) and (b.pool.kernel_size, b.pool.stride, b.pool.padding) == (3, 2, 1)
        conv = b.skip.conv
        assert (conv.kernel_size, conv.stride, conv.bias) == ((1, 1), (2, 2), None)
        assert isinstance(b.skip.bn, nn.BatchNorm2d) and not hasattr(b.skip, "act")
    for b in blocks[3:11]:
        assert isinstance(b.pool, nn.Identity) and isinstance(b.skip, nn.Identity)


def test_block_adds_shortcut_to_pooled_main_path():
    torch.manual_seed(0)
    block = XceptionBlock(SeparableBlock(in_chs=8, sep_chs=(12, 12), stride=2, shortcut="conv")).eval()
    x = torch.randn(2, 8, 9, 9)
    expected = F.max_pool2d(block.main(x), 3, 2, 1) + block.skip.bn(block.skip.conv(x))
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 12, 5, 5)

    middle = XceptionBlock(SeparableBlock(in_chs=6, sep_chs=(6, 6, 6), shortcut="identity")).eval()
    y = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(middle(y) - y, middle.main(y))  # identity shortcut on the un-ReLU'd input
    assert (y < 0).any()
    for bn in (m for m in middle.modules() if isinstance(m, nn.BatchNorm2d)):
        nn.init.zeros_(bn.weight)
    torch.testing.assert_close(middle(y), y)  # a block with a zeroed main path is the identity


def test_middle_repeats_sets_the_middle_flow_depth():
    full, short = _meta(), _meta(middle_repeats=2)
    assert len(short.stages.middle) == 2
    per_block = smallnets.count_params(XceptionBlock(SeparableBlock(in_chs=728, sep_chs=(728,) * 3, shortcut="identity")))
    assert per_block == 3 * (728 * 9 + 728 * 728 + 2 * 728)
    assert smallnets.count_params(full) - smallnets.count_params(short) == 6 * per_block
    assert _meta(middle_repeats=1)(torch.empty(1, 3, 299, 299, device="meta")).shape == (1, 1000)


def test_drop_rate_default_is_the_papers_and_configurable():
    assert _meta().classifier.drop.p == 0.5  # Section 4.3: dropout 0.5 before the logistic layer
    assert _meta(drop_rate=0.0).classifier.drop.p == 0.0


@pytest.mark.parametrize(
    "knobs, match",
    [
        ({"middle_repeats": 0}, r"middle_repeats must be an integer >= 1, got 0"),
        ({"middle_repeats": 8.0}, r"middle_repeats must be an integer >= 1, got 8.0"),
        ({"drop_rate": -0.1}, r"drop_rate must be in \[0.0, 1.0\), got -0.1"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0.0, 1.0\), got 1.0"),
        ({"cifar": "yes"}, r"cifar must be True or False, got 'yes'"),
        ({"middle_repeat": 4}, r"unknown knob 'middle_repeat' for xception; did you mean 'middle_repeats'"),
    ],
)
def test_bad_knobs_name_the_argument(knobs, match):
    with pytest.raises(ValueError, match=match):
        _meta(**knobs)


def test_registry_metadata():
    info = smallnets.model_info("xception")
    assert info.family == "xception" and info.representative and "arXiv:1610.02357" in info.paper
    assert info.input_size == (3, 299, 299)
    assert dict(info.knobs) == {"middle_repeats": 8, "drop_rate": 0.5, "cifar": False}
    pub = info.published_for()
    assert pub.top1 == 79.0 and pub.params == 22_855_952


def test_cifar_stem_gives_4x4_maps():
    model = _meta(cifar=True, num_classes=10)
    assert model.stem.conv1.conv.stride == (1, 1) and model.stem.conv1.conv.padding == (1, 1)
    assert model.stem.conv2.conv.padding == (1, 1)
    first = model.stages.entry1[0]
    assert isinstance(first.pool, nn.Identity) and first.skip.conv.stride == (1, 1)  # 64 -> 128 still needs the 1x1
    y = model.stem(torch.empty(1, 3, 32, 32, device="meta"))
    sides = [y.shape[-1]]
    for stage in model.stages:
        y = stage(y)
        sides.append(y.shape[-1])
    assert sides == [32, 32, 16, 8, 8, 4]
    assert smallnets.count_params(model) == smallnets.count_params(_meta(num_classes=10))  # same weights


def test_forward_backward_small():
    torch.manual_seed(0)
    model = smallnets.create_model("xception", num_classes=5, middle_repeats=1, cifar=True)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.stages.middle[0].main.sep1.dw.conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_pinned_state_dict_keys():
    keys = list(_meta(middle_repeats=1).state_dict())
    for key in (
        "stem.conv1.conv.weight",
        "stem.conv1.bn.running_var",
        "stem.conv2.bn.weight",
        "stages.entry1.0.skip.conv.weight",
        "stages.entry1.0.skip.bn.bias",
        "stages.entry1.0.main.sep1.dw.conv.weight",
        "stages.entry1.0.main.sep1.pw.conv.weight",
        "stages.entry1.0.main.sep2.pw.bn.running_mean",
        "stages.middle.0.main.sep3.dw.conv.weight",
        "stages.exit.0.main.sep2.pw.bn.weight",
        "neck.sep1.dw.conv.weight",
        "neck.sep2.pw.bn.bias",
        "classifier.fc.weight",
        "classifier.fc.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith("stages.middle.0.skip") for k in keys)


def _timm_key(key: str) -> str:
    """timm legacy_xception state-dict key -> ours."""
    blocks = {1: "stages.entry1.0", 2: "stages.entry2.0", 3: "stages.entry3.0", 12: "stages.exit.0"}

    def block(n: str) -> str:
        return blocks.get(int(n), f"stages.middle.{int(n) - 4}")

    def sep(j: str) -> str:  # timm's rep list is [ReLU, sep, BN] * n (block1 without the first ReLU)
        return f"main.sep{int(j) // 3 + 1}"

    rules = (
        (r"conv([12])\.weight", lambda m: f"stem.conv{m[1]}.conv.weight"),
        (r"bn([12])\.(.+)", lambda m: f"stem.conv{m[1]}.bn.{m[2]}"),
        (r"block(\d+)\.skip\.weight", lambda m: f"{block(m[1])}.skip.conv.weight"),
        (r"block(\d+)\.skipbn\.(.+)", lambda m: f"{block(m[1])}.skip.bn.{m[2]}"),
        (r"block(\d+)\.rep\.(\d+)\.conv1\.weight", lambda m: f"{block(m[1])}.{sep(m[2])}.dw.conv.weight"),
        (r"block(\d+)\.rep\.(\d+)\.pointwise\.weight", lambda m: f"{block(m[1])}.{sep(m[2])}.pw.conv.weight"),
        (r"block(\d+)\.rep\.(\d+)\.(.+)", lambda m: f"{block(m[1])}.{sep(m[2])}.pw.bn.{m[3]}"),
        (r"conv([34])\.conv1\.weight", lambda m: f"neck.sep{int(m[1]) - 2}.dw.conv.weight"),
        (r"conv([34])\.pointwise\.weight", lambda m: f"neck.sep{int(m[1]) - 2}.pw.conv.weight"),
        (r"bn([34])\.(.+)", lambda m: f"neck.sep{int(m[1]) - 2}.pw.bn.{m[2]}"),
        (r"fc\.(.+)", lambda m: f"classifier.fc.{m[1]}"),
    )
    for pattern, rename in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return rename(match)
    raise KeyError(key)


def test_reproduces_timm_legacy_xception_logits():
    """timm legacy_xception weights (10-class head) loaded by key renaming give its logits at 299x299."""
    safetensors = pytest.importorskip("safetensors.torch")
    ref = safetensors.load_file(shared_path("reference", "interop", "timm__legacy_xception.weights.safetensors"))
    io = safetensors.load_file(shared_path("reference", "interop", "timm__legacy_xception.io.safetensors"))
    model = smallnets.create_model("xception", num_classes=10).eval()
    state = {_timm_key(k): (v.float() if v.is_floating_point() else v) for k, v in ref.items()}
    model.load_state_dict(state)  # strict: every key on both sides
    with torch.no_grad():
        logits = model(io["input"])
    torch.testing.assert_close(logits, io["logits"], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# The architecture as a value: the spec


def test_spec_round_trips_through_json_and_builds_the_zoo_model():
    for knobs in ({}, {"cifar": True, "middle_repeats": 2, "drop_rate": 0.1}):
        spec = smallnets.model_spec("xception", **knobs)
        assert isinstance(spec, XceptionSpec)
        back = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.to_dict() == spec.to_dict()
        with torch.device("meta"):
            built, zoo = smallnets.build_model(back), smallnets.create_model("xception", **knobs)
        assert built.spec == spec and zoo.spec == spec
        assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in zoo.state_dict().items()]
        assert repr(built) == repr(zoo)
    spec = smallnets.model_spec("xception")
    assert spec.resolution == 299 and [c.out_chs for c in spec.stem] == [32, 64] and spec.neck_chs == (1536, 2048)
    assert [s.name for s in spec.stages] == ["entry1", "entry2", "entry3", "middle", "exit"]
    assert spec.stages[-1].blocks[0].sep_chs == (728, 1024)  # the exit block widens at its last conv
    assert [b.shortcut for b in spec.blocks] == ["conv"] * 3 + ["identity"] * 8 + ["conv"]
    assert not spec.blocks[0].start_with_relu and all(b.start_with_relu for b in spec.blocks[1:])
    assert smallnets.model_spec("xception", cifar=True).resolution == 32


def test_hand_edited_block_widths_build_and_run():
    spec = smallnets.model_spec("xception", num_classes=4, middle_repeats=2, cifar=True)
    entry3, middle = spec.stages[2], spec.stages[3]
    # entry3's block ends at 600 channels (its first conv at 500): the first middle block takes 600, shrinks
    # its own separable convs to 300 and 400 and comes back to 728 through a 1x1 conv shortcut.
    e3 = dataclasses.replace(entry3.blocks[0], sep_chs=(500, 600))
    m0 = dataclasses.replace(middle.blocks[0], in_chs=600, sep_chs=(300, 400, 728), shortcut="conv")
    stages = list(spec.stages)
    stages[2] = dataclasses.replace(entry3, blocks=(e3,))
    stages[3] = dataclasses.replace(middle, blocks=(m0, *middle.blocks[1:]))
    edited = spec.replace(stages=tuple(stages), neck_chs=(1000,))
    assert ArchSpec.from_dict(json.loads(json.dumps(edited.to_dict()))) == edited
    torch.manual_seed(0)
    model = smallnets.build_model(edited)
    assert model.spec == edited
    state = model.state_dict()
    assert state["stages.entry3.0.main.sep1.pw.conv.weight"].shape == (500, 256, 1, 1)
    assert state["stages.entry3.0.main.sep2.dw.conv.weight"].shape == (500, 1, 3, 3)
    assert state["stages.entry3.0.main.sep2.pw.conv.weight"].shape == (600, 500, 1, 1)
    assert state["stages.entry3.0.skip.conv.weight"].shape == (600, 256, 1, 1)
    assert state["stages.middle.0.skip.conv.weight"].shape == (728, 600, 1, 1)
    assert [state[f"stages.middle.0.main.sep{i}.pw.conv.weight"].shape[:2] for i in (1, 2, 3)] == [(300, 600), (400, 300), (728, 400)]
    assert not any(k.startswith("stages.middle.1.skip") for k in state)
    assert state["neck.sep1.pw.conv.weight"].shape == (1000, 1024, 1, 1) and state["classifier.fc.weight"].shape == (4, 1000)
    assert model.num_features == 1000
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_inconsistent_specs_are_refused_with_the_rule():
    spec = smallnets.model_spec("xception", middle_repeats=1)
    entry3 = spec.stages[2]
    stages = list(spec.stages)
    stages[2] = dataclasses.replace(entry3, blocks=(dataclasses.replace(entry3.blocks[0], sep_chs=(728, 700)),))
    with pytest.raises(ValueError, match=r"stages\[3\]\.blocks\[0\] \(middle\.0\)\.in_chs must be the previous layer's 700 channels, got 728"):
        spec.replace(stages=tuple(stages))
    middle = spec.stages[3].blocks[0]
    with pytest.raises(ValueError, match=r"shortcut 'identity' needs stride 1 and in_chs == sep_chs\[-1\], got stride 1, 728 -> 700; use shortcut 'conv'"):
        dataclasses.replace(middle, sep_chs=(728, 728, 700))
    with pytest.raises(ValueError, match=r"shortcut 'identity' needs stride 1"):
        dataclasses.replace(middle, stride=2)
    with pytest.raises(ValueError, match=r"sep_chs\[1\] must be an integer >= 1, got 0"):
        dataclasses.replace(middle, sep_chs=(728, 0, 728))
    with pytest.raises(ValueError, match=r"sep_chs must be a non-empty list"):
        dataclasses.replace(middle, sep_chs=())
    with pytest.raises(ValueError, match=r"shortcut must be one of 'identity', 'conv'; got 'proj'"):
        dataclasses.replace(middle, shortcut="proj")
    with pytest.raises(ValueError, match=r"stride must be 1 or 2, got 3"):
        dataclasses.replace(middle, stride=3, shortcut="conv")
    with pytest.raises(ValueError, match=r"stages\[0\]\.blocks\[0\] \(entry1\.0\)\.in_chs must be the previous layer's 48 channels, got 64"):
        spec.replace(stem=(spec.stem[0], dataclasses.replace(spec.stem[1], out_chs=48)))
    with pytest.raises(ValueError, match=r"neck_chs\[0\] must be an integer >= 1, got 0"):
        spec.replace(neck_chs=(0, 2048))
    with pytest.raises(ValueError, match=r"stage names must be unique"):
        spec.replace(stages=(*spec.stages[:4], dataclasses.replace(spec.stages[4], name="middle")))
    data = spec.to_dict()
    data["stages"][3]["blocks"][0]["sep_chs"] = [728, 728, 512]
    with pytest.raises(ValueError, match=r"shortcut 'identity' needs stride 1 and in_chs == sep_chs\[-1\]"):
        ArchSpec.from_dict(data)
