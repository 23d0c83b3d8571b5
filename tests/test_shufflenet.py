"""ShuffleNet v1 / v2: paper complexities, channel shuffle, unit wiring, width rounding, knobs, keys."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.shufflenet import ShuffleNetV1Spec, ShuffleNetV2Spec, ShuffleV1Block, ShuffleV2Block, shufflenet_v1
from smallnets.arch.spec import ArchSpec
from smallnets.layers import ChannelShuffle, channel_shuffle
from smallnets.models.shufflenet import (
    ShuffleNetV1,
    ShuffleNetV2,
    ShuffleV1DownUnit,
    ShuffleV1Unit,
    ShuffleV2DownUnit,
    ShuffleV2Unit,
)

MODELS = ("shufflenet_v1", "shufflenet_v2")


def _entries():
    entries = [e for e in load_facts("paper_tables.json")["entries"] if e["model"] in MODELS]
    return [pytest.param(e, id=e["id"]) for e in entries]


def _meta(name: str, **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _units(model: nn.Module) -> list[nn.Module]:
    return [unit for stage in model.stages for unit in stage]


@pytest.mark.parametrize("entry", _entries())
def test_paper_table_entry(entry):
    model = _meta(entry["model"], num_classes=entry["num_classes"], **entry["kwargs"])
    size = tuple(entry["input_size"])
    ours = {"params": smallnets.count_params(model), "macs": smallnets.count_macs(model, size)}
    checked = [k for k in ("params", "macs") if k in entry]
    assert checked
    for key in checked:
        ref = entry[key]
        assert abs(ours[key] - ref["value"]) <= ref["tolerance"], f"{entry['id']} {key}: {ours[key]:,} vs {ref['value']:,}"


# ------------------------------------------------------------------------------------------
# Channel shuffle


def test_channel_shuffle_interleaves_groups_like_figure_1():
    # Figure 1(c): g = 3 groups of 2 channels (a1 a2 | b1 b2 | c1 c2) -> a1 b1 c1 a2 b2 c2.
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    # After shuffling, each group of the next group conv gets one channel from every previous group.
    y = channel_shuffle(torch.arange(9.0).view(1, 9, 1, 1), 3).flatten().view(3, 3)  # rows: the next conv's groups
    assert y.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert all(sorted(int(c) // 3 for c in row) == [0, 1, 2] for row in y)
    # Spatial positions are untouched: only the channel axis moves.
    z = torch.randn(2, 6, 3, 5)
    assert torch.equal(channel_shuffle(z, 3)[:, 1], z[:, 2])


# ------------------------------------------------------------------------------------------
# ShuffleNet v1


def test_v1_stride2_unit_concatenates_avgpool_and_branch():
    torch.manual_seed(0)
    unit = ShuffleV1DownUnit(ShuffleV1Block(kind="down", in_chs=12, out_chs=60, mid_chs=15, stride=2, groups=3, pw1_groups=3)).eval()
    x = torch.randn(2, 12, 8, 8)
    out = unit(x)
    assert unit.branch.pw2.conv.out_channels == 60 - 12
    assert out.shape == (2, 12 + 48, 4, 4)  # channels = in + branch
    torch.testing.assert_close(out[:, :12], F.relu(F.avg_pool2d(x, 3, 2, 1)))
    torch.testing.assert_close(out[:, 12:], F.relu(unit.branch(x)))


def test_v1_stride1_unit_adds_identity_then_relu():
    torch.manual_seed(0)
    unit = ShuffleV1Unit(ShuffleV1Block(in_chs=24, out_chs=24, mid_chs=6, groups=3, pw1_groups=3)).eval()
    x = torch.randn(2, 24, 5, 5)
    torch.testing.assert_close(unit(x), F.relu(x + unit.branch(x)))
    nn.init.zeros_(unit.branch.pw2.bn.weight)  # branch outputs zero: the unit is relu(identity)
    torch.testing.assert_close(unit(x), F.relu(x))


def test_v1_unit_layers_follow_figure_2():
    unit = ShuffleV1Unit(ShuffleV1Block(in_chs=240, out_chs=240, mid_chs=60, groups=3, pw1_groups=3))
    assert [type(m).__name__ for m in unit.branch] == ["ConvNormAct", "ChannelShuffle", "ConvNormAct", "ConvNormAct"]
    assert unit.branch.shuffle.groups == 3
    assert hasattr(unit.branch.pw1, "act") and not hasattr(unit.branch.dw, "act") and not hasattr(unit.branch.pw2, "act")
    assert unit.branch.dw.conv.groups == 60 and unit.branch.dw.conv.kernel_size == (3, 3)


@pytest.mark.parametrize(
    "groups, outs",
    [(1, (144, 288, 576)), (2, (200, 400, 800)), (3, (240, 480, 960)), (4, (272, 544, 1088)), (8, (384, 768, 1536))],
)
def test_v1_table1_structure(groups, outs):
    model = _meta("shufflenet_v1", groups=groups)
    x = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    assert x.shape == (1, 24, 56, 56)
    for stage, out, side, repeats in zip(model.stages, outs, (28, 14, 7), (4, 8, 4)):
        assert len(stage) == repeats
        assert isinstance(stage[0], ShuffleV1DownUnit) and all(isinstance(u, ShuffleV1Unit) for u in stage[1:])
        x = stage(x)
        assert x.shape == (1, out, side, side)
    assert model.num_features == outs[-1] and model.classifier.fc.in_features == outs[-1]
    units = _units(model)
    # Stage 2's first pointwise layer is dense (24 input channels), with no shuffle after it.
    assert units[0].branch.pw1.conv.groups == 1 and isinstance(units[0].branch.shuffle, nn.Identity)
    assert units[0].branch.pw2.conv.groups == groups
    for unit in units[1:]:
        assert unit.branch.pw1.conv.groups == groups and unit.branch.pw2.conv.groups == groups
        expected_shuffle = ChannelShuffle if groups > 1 else nn.Identity
        assert isinstance(unit.branch.shuffle, expected_shuffle)
    for unit, out in zip(units, [o for o, r in zip(outs, (4, 8, 4)) for _ in range(r)]):
        assert unit.branch.pw1.conv.out_channels == out // 4  # bottleneck = a quarter of the unit's output


@pytest.mark.parametrize(
    "knobs, stem, outs, mids",
    [
        ({"groups": 3, "width_mult": 0.5}, 12, (120, 240, 480), (30, 60, 120)),
        ({"groups": 3, "width_mult": 1.5}, 36, (360, 720, 1440), (90, 180, 360)),
        ({"groups": 3, "width_mult": 2.0}, 48, (480, 960, 1920), (120, 240, 480)),
        ({"groups": 8, "width_mult": 0.5}, 16, (192, 384, 768), (48, 96, 192)),  # 12 -> 16: multiple of 8
        ({"groups": 4, "width_mult": 0.5}, 12, (136, 272, 544), (36, 68, 136)),  # bottleneck 34 -> 36
        ({"groups": 3, "width_mult": 0.25}, 12, (60, 120, 240), (15, 30, 60)),  # conv1 floor: 12, not 6
        ({"groups": 8, "width_mult": 0.25}, 8, (96, 192, 384), (24, 48, 96)),  # floor 12 rounded down to 8
        ({"groups": 1, "width_mult": 0.3}, 12, (43, 86, 173), (11, 22, 43)),
    ],
)
def test_v1_width_rounding(knobs, stem, outs, mids):
    model = _meta("shufflenet_v1", **knobs)
    assert model.stem.conv.conv.out_channels == stem
    first = [stage[0] for stage in model.stages]
    assert tuple(u.branch.pw2.conv.out_channels + u.branch.pw1.conv.in_channels for u in first) == outs
    assert tuple(u.branch.pw1.conv.out_channels for u in first) == mids
    g = knobs["groups"]
    for m in model.modules():  # every grouped conv splits evenly
        if isinstance(m, nn.Conv2d):
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
            if m.groups not in (1, m.in_channels):
                assert m.groups == g


def test_v1_cifar_keeps_4x4_and_drops_the_pool():
    for groups in (1, 8):
        model = _meta("shufflenet_v1", groups=groups, cifar=True, num_classes=10)
        assert model.stem.conv.conv.stride == (1, 1) and isinstance(model.stem.pool, nn.Identity)
        feats = model.forward_features(torch.empty(1, 3, 32, 32, device="meta"))
        assert feats.shape[-2:] == (4, 4)


def test_v1_forward_backward_small():
    torch.manual_seed(0)
    model = smallnets.create_model("shufflenet_v1", num_classes=10, groups=8, width_mult=0.25, cifar=True, drop_rate=0.2)
    assert model.classifier.drop.p == 0.2
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_v1_state_dict_keys():
    keys = set(ShuffleNetV1(shufflenet_v1(num_classes=10, width_mult=0.25)).state_dict())
    for key in (
        "stem.conv.conv.weight",
        "stem.conv.bn.running_var",
        "stages.0.0.branch.pw1.conv.weight",
        "stages.0.0.branch.dw.conv.weight",
        "stages.0.0.branch.pw2.bn.weight",
        "stages.1.7.branch.pw1.conv.weight",
        "stages.2.3.branch.pw2.conv.weight",
        "classifier.fc.weight",
        "classifier.fc.bias",
    ):
        assert key in keys, key
    assert not any(k.endswith(".conv.bias") for k in keys)  # convs have no bias


# ------------------------------------------------------------------------------------------
# ShuffleNet v2


def test_v2_stride1_unit_splits_and_keeps_half_untouched():
    torch.manual_seed(0)
    unit = ShuffleV2Unit(ShuffleV2Block(in_chs=8, out_chs=8, mid_chs=4, left_chs=4)).eval()
    x = torch.randn(2, 8, 5, 5)
    out = unit(x)
    # concat(left half, branch(right half)), then shuffle with 2 groups: even channels are x[:, :4].
    torch.testing.assert_close(out[:, 0::2], x[:, :4])
    torch.testing.assert_close(out[:, 1::2], unit.branch(x[:, 4:]))
    assert unit.branch.pw1.conv.in_channels == 4


def test_v2_stride2_unit_concatenates_both_branches():
    torch.manual_seed(0)
    unit = ShuffleV2DownUnit(ShuffleV2Block(kind="down", in_chs=24, out_chs=48, mid_chs=24, left_chs=24, stride=2)).eval()
    x = torch.randn(2, 24, 8, 8)
    out = unit(x)
    assert out.shape == (2, 48, 4, 4)
    torch.testing.assert_close(out[:, 0::2], unit.shortcut(x))
    torch.testing.assert_close(out[:, 1::2], unit.branch(x))
    assert unit.shortcut.dw.conv.stride == (2, 2) and unit.shortcut.dw.conv.groups == 24
    assert unit.branch.dw.conv.stride == (2, 2) and not hasattr(unit.branch.dw, "act")


@pytest.mark.parametrize(
    "width, outs, last",
    [(0.5, (48, 96, 192), 1024), (1.0, (116, 232, 464), 1024), (1.5, (176, 352, 704), 1024), (2.0, (244, 488, 976), 2048)],
)
def test_v2_table5_structure(width, outs, last):
    model = _meta("shufflenet_v2", width_mult=width)
    x = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    assert x.shape == (1, 24, 56, 56)
    for stage, out, side, repeats in zip(model.stages, outs, (28, 14, 7), (4, 8, 4)):
        assert len(stage) == repeats
        assert isinstance(stage[0], ShuffleV2DownUnit) and all(isinstance(u, ShuffleV2Unit) for u in stage[1:])
        x = stage(x)
        assert x.shape == (1, out, side, side)
    assert model.neck.conv.out_channels == last == model.num_features


def test_v2_cifar_and_forward_backward():
    torch.manual_seed(0)
    model = smallnets.create_model("shufflenet_v2", num_classes=10, width_mult=0.5, cifar=True)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 4, 4)
    out = model(torch.randn(2, 3, 32, 32))
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_v2_state_dict_keys():
    keys = set(_meta("shufflenet_v2", width_mult=0.5).state_dict())
    for key in (
        "stem.conv.conv.weight",
        "stages.0.0.shortcut.dw.conv.weight",
        "stages.0.0.shortcut.pw.bn.weight",
        "stages.0.0.branch.pw1.conv.weight",
        "stages.0.1.branch.dw.bn.running_mean",
        "stages.2.3.branch.pw2.conv.weight",
        "neck.conv.weight",
        "neck.bn.bias",
        "classifier.fc.weight",
    ):
        assert key in keys, key
    assert "stages.0.1.shortcut.dw.conv.weight" not in keys  # stride-1 units have no left branch


# ------------------------------------------------------------------------------------------
# Knobs, errors and metadata


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("shufflenet_v1", {"groups": 5}, "groups must be one of 1, 2, 3, 4, 8; got 5"),
        ("shufflenet_v1", {"groups": 3.0}, "groups must be an integer"),
        ("shufflenet_v1", {"width_mult": 0.2}, "width_mult must be in [0.25, 2.0], got 0.2"),
        ("shufflenet_v1", {"width_mult": 2.5}, "width_mult must be in [0.25, 2.0], got 2.5"),
        ("shufflenet_v1", {"drop_rate": 1.0}, "drop_rate must be in [0.0, 1.0), got 1.0"),
        ("shufflenet_v1", {"cifar": "yes"}, "cifar must be True or False"),
        ("shufflenet_v2", {"width_mult": 0.75}, "width_mult must be one of 0.5, 1.0, 1.5, 2.0; got 0.75"),
        ("shufflenet_v2", {"width_mult": True}, "width_mult must be > 0, got True"),
        ("shufflenet_v2", {"drop_rate": -0.1}, "drop_rate must be in [0.0, 1.0), got -0.1"),
        ("shufflenet_v2", {"cifar": 1}, "cifar must be True or False"),
    ],
)
def test_bad_knobs(name, knobs, words):
    with pytest.raises(ValueError) as err:
        smallnets.create_model(name, **knobs)
    assert words in str(err.value)


def test_metadata_and_published():
    v1, v2 = smallnets.model_info("shufflenet_v1"), smallnets.model_info("shufflenet_v2")
    assert (v1.family, v2.family) == ("shufflenet_v1", "shufflenet_v2")
    assert v1.representative and v2.representative
    assert dict(v1.knobs) == {"groups": 3, "width_mult": 1.0, "drop_rate": 0.0, "cifar": False}
    assert dict(v2.knobs) == {"width_mult": 1.0, "drop_rate": 0.0, "cifar": False}
    assert "1707.01083" in v1.paper and "1807.11164" in v2.paper
    assert v1.published_for().top1 == pytest.approx(67.4)  # 1x g=3: 32.6% error
    assert v1.published_for({"groups": 8, "width_mult": 0.25}).top1 == pytest.approx(47.3)
    assert v1.published_for({"groups": 1}).top1 == pytest.approx(66.4)
    assert v1.published_for({"width_mult": 2.0}).top1 == pytest.approx(73.7)
    assert v1.published_for({"width_mult": 1.5}) is None  # no top-1 given for 1.5x
    assert v2.published_for().top1 == pytest.approx(69.4)
    assert v2.published_for({"width_mult": 0.5}).top1 == pytest.approx(60.3)
    assert v2.published_for({"width_mult": 2.0}).macs == 591e6


# ------------------------------------------------------------------------------------------
# Architecture as a value: the spec


@pytest.mark.parametrize(
    "name, knobs",
    [
        ("shufflenet_v1", {}),
        ("shufflenet_v1", {"groups": 8, "width_mult": 0.5, "cifar": True}),
        ("shufflenet_v2", {}),
        ("shufflenet_v2", {"width_mult": 2.0}),
    ],
)
def test_spec_round_trips_through_json_and_builds_the_zoo_model(name, knobs):
    spec = smallnets.model_spec(name, num_classes=10, **knobs)
    assert type(spec) is {"shufflenet_v1": ShuffleNetV1Spec, "shufflenet_v2": ShuffleNetV2Spec}[name]
    again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and type(again) is type(spec)
    with torch.device("meta"):
        built, zoo = smallnets.build_model(again), smallnets.create_model(name, num_classes=10, **knobs)
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in zoo.state_dict().items()]
    assert repr(built) == repr(zoo) and zoo.spec == spec


def test_v1_spec_spells_out_every_unit():
    spec = smallnets.model_spec("shufflenet_v1")  # 1x, g = 3
    assert (spec.stem.out_chs, spec.stem.stride, spec.stem.pool) == (24, 2, True)
    first, second = spec.stages[0][:2]
    assert first == ShuffleV1Block(kind="down", in_chs=24, out_chs=240, mid_chs=60, stride=2, groups=3, pw1_groups=1)
    assert second == ShuffleV1Block(kind="residual", in_chs=240, out_chs=240, mid_chs=60, stride=1, groups=3, pw1_groups=3)
    assert first.branch_out_chs == 216 and [len(s) for s in spec.stages] == [4, 8, 4] and spec.num_features == 960
    cifar = smallnets.model_spec("shufflenet_v1", cifar=True)
    assert (cifar.stem.stride, cifar.stem.pool, cifar.resolution) == (1, False, 32) and cifar.stages == spec.stages


def test_v2_spec_spells_out_every_unit():
    spec = smallnets.model_spec("shufflenet_v2", width_mult=0.5)
    assert spec.stages[0][0] == ShuffleV2Block(kind="down", in_chs=24, out_chs=48, mid_chs=24, left_chs=24, stride=2)
    assert spec.stages[0][1] == ShuffleV2Block(kind="split", in_chs=48, out_chs=48, mid_chs=24, left_chs=24, stride=1)
    assert spec.neck_chs == spec.num_features == 1024


def _pruned_v1() -> dict:
    """ShuffleNet v1 1x (g = 3) hand-edited as JSON: widths unit by unit that no knob gives."""
    d = smallnets.model_spec("shufflenet_v1", num_classes=5, cifar=True).to_dict()
    d["stages"][1][3]["mid_chs"] = 42  # one unit's bottleneck
    for unit in d["stages"][0]:  # stage 2 narrowed 240 -> 204, carried through its residual units
        unit["out_chs"] = 204
        if unit["kind"] == "residual":
            unit["in_chs"] = 204
    d["stages"][1][0]["in_chs"] = 204  # and into stage 3's first unit
    return d


def _pruned_v2() -> dict:
    d = smallnets.model_spec("shufflenet_v2", num_classes=5, cifar=True).to_dict()  # 1x: 116, 232, 464
    d["stages"][1][2].update(left_chs=100, mid_chs=90)  # an uneven split: branch 132 -> 90 -> 132
    d["stages"][2][0].update(out_chs=400, left_chs=150, mid_chs=120)  # stage 4 narrowed to 400 (shortcut 150 + branch 250)
    for unit in d["stages"][2][1:]:
        unit.update(in_chs=400, out_chs=400, left_chs=200, mid_chs=160)
    d["neck_chs"] = 512
    return d


def test_a_hand_edited_v1_spec_builds_with_its_widths():
    spec = ArchSpec.from_dict(_pruned_v1())
    torch.manual_seed(0)
    model = smallnets.model_from_spec(spec)
    assert model.spec == spec
    unit = model.stages[1][3].branch
    assert unit.pw1.conv.weight.shape == (42, 480 // 3, 1, 1) and unit.dw.conv.weight.shape == (42, 1, 3, 3)
    assert unit.pw2.conv.weight.shape == (480, 42 // 3, 1, 1)
    assert model.stages[0][0].branch.pw2.conv.out_channels == 204 - 24
    assert model.stages[0][1].branch.pw1.conv.weight.shape == (60, 204 // 3, 1, 1)
    assert model.stages[1][0].branch.pw1.conv.in_channels == 204 and model.stages[1][0].branch.pw2.conv.out_channels == 480 - 204
    x = torch.randn(2, 3, 32, 32)
    assert [f.shape[1] for f in model.forward_stages(x)] == [204, 480, 960]
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).mean().backward()


def test_a_hand_edited_v2_spec_builds_with_its_widths():
    spec = ArchSpec.from_dict(_pruned_v2())
    torch.manual_seed(0)
    model = smallnets.model_from_spec(spec).eval()
    assert isinstance(model, ShuffleNetV2) and model.spec == spec
    unit = model.stages[1][2]
    assert unit.branch.pw1.conv.weight.shape == (90, 132, 1, 1) and unit.branch.pw2.conv.weight.shape == (132, 90, 1, 1)
    x = torch.randn(1, 232, 4, 4)
    out = unit(x)
    torch.testing.assert_close(torch.cat((x[:, :100], unit.branch(x[:, 100:])), 1), out.view(1, 116, 2, 4, 4).transpose(1, 2).reshape(1, 232, 4, 4))
    down = model.stages[2][0]
    assert down.shortcut.pw.conv.out_channels == 150 and down.branch.pw1.conv.out_channels == 120 and down.branch.pw2.conv.out_channels == 250
    assert model.stages[2][1].branch.pw1.conv.weight.shape == (160, 200, 1, 1)
    assert model.neck.conv.weight.shape == (512, 400, 1, 1) and model.classifier.fc.in_features == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d["stages"][1][0].update(in_chs=201), "ShuffleNetV1Spec: stages[1][0].in_chs must be the previous layer's 240 channels, got 201"),
        (lambda d: d["stages"][1][3].update(mid_chs=40), "groups=3 must divide mid_chs, got mid_chs=40"),
        (lambda d: d["stages"][0][0].update(out_chs=250), "groups=3 must divide branch_out_chs, got branch_out_chs=226"),
        (lambda d: d["stages"][0][1].update(out_chs=204), "a residual unit adds its input, so out_chs must equal in_chs 240, got 204"),
        (lambda d: d["stages"][0][0].update(out_chs=24), "a down unit concatenates its 24-channel shortcut, so out_chs must exceed in_chs, got 24"),
        (lambda d: d["stages"][0][0].update(stride=1), "a down unit has stride 2"),
        (lambda d: d["stages"][0][1].update(kind="concat"), "kind must be one of 'residual', 'down'; got 'concat'"),
        (lambda d: d["stages"][0][0].update(pw1_groups=5), "pw1_groups=5 must divide in_chs, got in_chs=24"),
        (lambda d: d["stages"][0][1].update(left_chs=10), "unknown field 'left_chs' for ShuffleV1Block"),
        (lambda d: d["stem"].update(out_chs=0), "out_chs must be an integer >= 1, got 0"),
    ],
)
def test_an_inconsistent_v1_spec_is_refused(edit, words):
    d = smallnets.model_spec("shufflenet_v1").to_dict()
    edit(d)
    with pytest.raises(ValueError) as err:
        ArchSpec.from_dict(d)
    assert words in str(err.value)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d["stages"][2][0].update(in_chs=230), "ShuffleNetV2Spec: stages[2][0].in_chs must be the previous layer's 232 channels, got 230"),
        (lambda d: d["stages"][1][0].update(out_chs=233), "the channel shuffle's groups=2 must divide out_chs, got out_chs=233"),
        (lambda d: d["stages"][1][1].update(left_chs=232), "left_chs must leave the branch some of the 232 input channels, got 232"),
        (lambda d: d["stages"][1][1].update(stride=2), "a split unit has stride 1"),
        (lambda d: d.update(neck_chs=0), "neck_chs must be an integer >= 1, got 0"),
    ],
)
def test_an_inconsistent_v2_spec_is_refused(edit, words):
    d = smallnets.model_spec("shufflenet_v2").to_dict()
    edit(d)
    with pytest.raises(ValueError) as err:
        ArchSpec.from_dict(d)
    assert words in str(err.value)
