"""SqueezeNet: paper/torchvision counts, fire modules, Section 5 metaparameter sweeps, bypasses, knobs, keys."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smallnets
from conftest import load_facts
from conftest import shared_path
from smallnets.arch.spec import ArchSpec
from smallnets.arch.squeezenet import Conv1, FireBlock, SqueezeNetSpec, fire_table
from smallnets.models.squeezenet import BypassFire, Fire

MODELS = ("squeezenet", "squeezenet1_0", "squeezenet1_1")
TABLE1 = (  # SqueezeNet paper Table 1: (s1x1, e1x1, e3x3) of fire2 .. fire9
    (16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
    (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256),
)  # fmt: skip


def _entries():
    entries = [e for e in load_facts("paper_tables.json")["entries"] if e["model"] in MODELS]
    return [pytest.param(e, id=e["id"]) for e in entries]


def _meta(name: str, **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _fires(model: nn.Module) -> list[Fire]:
    return [m for m in model.modules() if isinstance(m, Fire)]


def _fire_channels(model: nn.Module) -> list[tuple[int, int, int]]:
    return [(f.squeeze.conv.out_channels, f.expand1x1.conv.out_channels, f.expand3x3.conv.out_channels) for f in _fires(model)]


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


def test_torchvision_counts_without_the_reference_file():
    # torchvision squeezenet1_0 / squeezenet1_1 (paper Table 1 total for 1.0), so the check runs even without ../shared.
    for name, params, macs in (("squeezenet1_0", 1_248_424, 818_924_576), ("squeezenet1_1", 1_235_496, 349_151_936)):
        model = _meta(name)
        assert smallnets.count_params(model) == params
        assert smallnets.count_macs(model, (3, 224, 224)) == macs
    # The metaparameter builder at its defaults is SqueezeNet 1.0, key for key.
    a, b = _meta("squeezenet").state_dict(), _meta("squeezenet1_0").state_dict()
    assert [(k, v.shape) for k, v in a.items()] == [(k, v.shape) for k, v in b.items()]


# ------------------------------------------------------------------------------------------
# Fire module and layout


def test_fire_table_defaults_are_table1():
    assert [(r.squeeze, r.expand1x1, r.expand3x3) for r in fire_table()] == list(TABLE1)
    for name in MODELS:  # both released versions use Table 1's fire modules
        assert _fire_channels(_meta(name)) == list(TABLE1)


def test_fire_module_is_squeeze_then_concatenated_expands():
    torch.manual_seed(0)
    fire = Fire(FireBlock(in_chs=10, squeeze=3, expand1x1=4, expand3x3=5)).eval()
    x = torch.randn(2, 10, 6, 6)
    s = F.relu(F.conv2d(x, fire.squeeze.conv.weight, fire.squeeze.conv.bias))
    e1 = F.relu(F.conv2d(s, fire.expand1x1.conv.weight, fire.expand1x1.conv.bias))
    e3 = F.relu(F.conv2d(s, fire.expand3x3.conv.weight, fire.expand3x3.conv.bias, padding=1))
    torch.testing.assert_close(fire(x), torch.cat((e1, e3), 1))
    assert fire(x).shape == (2, 9, 6, 6)  # expand 3x3 keeps the map size (pad 1)
    assert fire.expand3x3.conv.kernel_size == (3, 3) and fire.expand1x1.conv.kernel_size == (1, 1)


@pytest.mark.parametrize("name", MODELS)
def test_no_batchnorm_and_every_conv_has_a_bias(name):
    model = _meta(name, bypass="complex")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # "remove FC layers"


V1_0_STAGES = (  # Table 1: conv1 96 7x7/2 -> 109, pool -> 54; pools after fire4 and fire8
    (["fire2", "fire3", "fire4"], 256, 54),
    (["pool", "fire5", "fire6", "fire7", "fire8"], 512, 27),
    (["pool", "fire9"], 512, 13),
)
V1_1_STAGES = (  # v1.1: conv1 64 3x3/2 -> 111, pool -> 55; pools moved after fire3 and fire5
    (["fire2", "fire3"], 128, 55),
    (["pool", "fire4", "fire5"], 256, 27),
    (["pool", "fire6", "fire7", "fire8", "fire9"], 512, 13),
)


@pytest.mark.parametrize(
    "name, conv1, stages",
    [("squeezenet1_0", (96, 7, 54), V1_0_STAGES), ("squeezenet1_1", (64, 3, 55), V1_1_STAGES)],
)
def test_layout_pools_and_map_sizes(name, conv1, stages):
    model = _meta(name)
    chs, kernel, side = conv1
    conv = model.stem.conv1.conv
    assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (chs, (kernel, kernel), (2, 2), (0, 0))
    x = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    assert x.shape == (1, chs, side, side)
    assert len(model.stages) == 3
    for stage, (names, out, side) in zip(model.stages, stages):
        assert [n for n, _ in stage.named_children()] == names
        assert all(p.ceil_mode and p.kernel_size == 3 and p.stride == 2 for p in stage.modules() if isinstance(p, nn.MaxPool2d))
        x = stage(x)
        assert x.shape == (1, out, side, side)
    assert model.num_features == 512 and isinstance(model.neck, nn.Identity)
    assert model.forward_features(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 512, 13, 13)


def test_classifier_is_dropout_conv10_relu_gap():
    model = smallnets.create_model("squeezenet1_1", num_classes=6).eval()
    head = model.classifier
    assert [n for n, _ in head.named_children()] == ["drop", "conv10", "pool", "flatten"]
    assert isinstance(head.drop, nn.Dropout) and head.drop.p == 0.5
    assert head.conv10.conv.kernel_size == (1, 1) and head.conv10.conv.out_channels == 6
    assert isinstance(head.conv10.act, nn.ReLU)  # ReLU before the average: logits are non-negative
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 6) and (logits >= 0).all()
    feats = model.forward_features(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(model.forward_head(feats), F.relu(head.conv10.conv(feats)).mean((2, 3)))
    assert smallnets.create_model("squeezenet1_1", drop_rate=0.0).classifier.drop.p == 0.0


def test_init_follows_torchvision():
    torch.manual_seed(0)
    model = smallnets.create_model("squeezenet1_0", bypass="complex")
    conv10 = model.classifier.conv10.conv.weight
    assert abs(conv10.std().item() - 0.01) < 0.001
    fire = model.stages[0].fire2.squeeze.conv.weight  # kaiming uniform: bound sqrt(6 / fan_in)
    assert fire.abs().max().item() <= math.sqrt(6 / 96) and fire.std().item() > 0.1
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, nn.Conv2d))


def test_xavier_init_is_caffes_filler_and_keeps_the_bypass_sums_small():
    torch.manual_seed(0)
    model = smallnets.create_model("squeezenet1_0", num_classes=10, bypass="complex", cifar=True, init="xavier")
    fire = model.stages[0].fire2.squeeze.conv.weight  # Caffe's xavier filler: U(+-sqrt(3 / fan_in))
    assert fire.abs().max().item() <= math.sqrt(3 / 96) < fire.abs().max().item() * 1.05
    assert abs(model.classifier.conv10.conv.weight.std().item() - 0.01) < 0.001  # conv10 as before
    x = torch.randn(8, 3, 32, 32)
    torch.manual_seed(0)
    kaiming = smallnets.create_model("squeezenet1_0", num_classes=10, bypass="complex", cifar=True)
    with torch.no_grad():
        assert model(x).std() * 10 < kaiming(x).std()  # the complex bypass's sums no longer grow tenfold from layer to layer
    assert model.spec.init == "xavier" and smallnets.build_model(model.spec).spec.init == "xavier"


# ------------------------------------------------------------------------------------------
# Section 5 metaparameters


def _paper_fire_channels(base_e=128, incr_e=128, pct3x3=0.5, freq=2, squeeze_ratio=0.125):
    """The paper's formulas, written out independently of the implementation."""
    rows = []
    for i in range(8):
        e = base_e + incr_e * math.floor(i / freq)
        e3 = math.floor(e * pct3x3)
        rows.append((math.floor(squeeze_ratio * e), e - e3, e3))
    return rows


@pytest.mark.parametrize("squeeze_ratio", [0.125, 0.25, 0.5, 0.75, 1.0])
def test_squeeze_ratio_sweep_follows_section_5_1(squeeze_ratio):
    # Figure 3(a): SR from 0.125 to 1.0 on SqueezeNet's expand widths; only squeeze layers change.
    model = _meta("squeezenet", squeeze_ratio=squeeze_ratio)
    channels = _fire_channels(model)
    assert channels == _paper_fire_channels(squeeze_ratio=squeeze_ratio)
    assert [s for s, _, _ in channels] == [int(squeeze_ratio * e) for e in (128, 128, 256, 256, 384, 384, 512, 512)]
    assert [e1 + e3 for _, e1, e3 in channels] == [128, 128, 256, 256, 384, 384, 512, 512]


@pytest.mark.parametrize("pct3x3", [0.01, 0.25, 0.5, 0.75, 0.99])
def test_pct3x3_sweep_follows_section_5_2(pct3x3):
    # Figure 3(b): SR = 0.5, pct3x3 from 1% to 99%; each expand layer keeps e_i channels in total.
    model = _meta("squeezenet", pct3x3=pct3x3, squeeze_ratio=0.5)
    channels = _fire_channels(model)
    assert channels == _paper_fire_channels(pct3x3=pct3x3, squeeze_ratio=0.5)
    es = (128, 128, 256, 256, 384, 384, 512, 512)
    assert [e3 for _, _, e3 in channels] == [math.floor(e * pct3x3) for e in es]
    assert [e1 + e3 for _, e1, e3 in channels] == list(es)
    if pct3x3 == 0.01:
        assert channels[0] == (64, 127, 1)  # floor(1.28) = 1 3x3 filter in fire2


@pytest.mark.parametrize("base_e, incr_e, freq", [(64, 32, 1), (96, 64, 3), (128, 128, 4), (16, 8, 8)])
def test_base_incr_freq_set_the_expand_widths(base_e, incr_e, freq):
    model = _meta("squeezenet", base_e=base_e, incr_e=incr_e, freq=freq)
    channels = _fire_channels(model)
    assert channels == _paper_fire_channels(base_e=base_e, incr_e=incr_e, freq=freq)
    # e_i grows by incr_e every freq fire modules, and each fire's input is the previous one's output.
    assert [e1 + e3 for _, e1, e3 in channels] == [base_e + incr_e * (i // freq) for i in range(8)]
    fires = _fires(model)
    assert fires[0].squeeze.conv.in_channels == 96
    assert [f.squeeze.conv.in_channels for f in fires[1:]] == [e1 + e3 for _, e1, e3 in channels[:-1]]
    assert model.classifier.conv10.conv.in_channels == model.num_features == sum(channels[-1][1:])


# ------------------------------------------------------------------------------------------
# Section 6 bypasses


def test_simple_bypass_wraps_fire3_5_7_9_with_identity_and_adds_no_params():
    plain, simple = _meta("squeezenet1_0"), _meta("squeezenet1_0", bypass="simple")
    wrapped = {n.split(".")[-1] for n, m in simple.named_modules() if isinstance(m, BypassFire)}
    assert wrapped == {"fire3", "fire5", "fire7", "fire9"}
    assert all(isinstance(m.bypass, nn.Identity) for m in simple.modules() if isinstance(m, BypassFire))
    assert not any(isinstance(m, BypassFire) for m in plain.modules())
    assert smallnets.count_params(simple) == smallnets.count_params(plain) == 1_248_424
    assert list(simple.state_dict()) == list(plain.state_dict())  # same keys: checkpoints interchange


def test_simple_bypass_adds_the_input_after_the_fire_output():
    torch.manual_seed(0)
    plain = smallnets.create_model("squeezenet1_1", num_classes=5).eval()
    simple = smallnets.create_model("squeezenet1_1", num_classes=5, bypass="simple").eval()
    simple.load_state_dict(plain.state_dict())
    fire3 = simple.stages[0].fire3
    x = torch.randn(2, 128, 9, 9)
    torch.testing.assert_close(fire3(x), plain.stages[0].fire3(x) + x)
    with torch.no_grad():
        assert not torch.allclose(simple(torch.randn(1, 3, 64, 64)), plain(torch.randn(1, 3, 64, 64)))


def test_complex_bypass_adds_1x1_convs_around_fire2_4_6_8():
    complex_, plain = _meta("squeezenet1_0", bypass="complex"), _meta("squeezenet1_0")
    convs = {n.split(".")[-1]: m.bypass for n, m in complex_.named_modules() if isinstance(m, BypassFire)}
    assert set(convs) == {"fire2", "fire3", "fire4", "fire5", "fire6", "fire7", "fire8", "fire9"}
    expected = {"fire2": (96, 128), "fire4": (128, 256), "fire6": (256, 384), "fire8": (384, 512)}
    for name, (cin, cout) in expected.items():
        conv = convs[name].conv
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (cin, cout, (1, 1))
        assert conv.bias is not None and not hasattr(convs[name], "bn") and not hasattr(convs[name], "act")
    assert all(isinstance(convs[n], nn.Identity) for n in ("fire3", "fire5", "fire7", "fire9"))
    extra = sum(cin * cout + cout for cin, cout in expected.values())
    assert smallnets.count_params(complex_) - smallnets.count_params(plain) == extra == 341_248

    torch.manual_seed(0)
    fire = BypassFire(FireBlock(in_chs=6, squeeze=2, expand1x1=4, expand3x3=4, bypass="conv"))
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(fire(x), Fire.forward(fire, x) + F.conv2d(x, fire.bypass.conv.weight, fire.bypass.conv.bias))


@pytest.mark.parametrize("bypass", ["simple", "complex"])
@pytest.mark.parametrize("freq", [1, 3])
def test_identity_bypass_needs_matching_channels(bypass, freq):
    # freq=1: fire3 goes 128 -> 256; freq=3: fire5 goes 128 -> 256. Either way no identity fits.
    with pytest.raises(ValueError, match=r"bypass='(simple|complex)'.*fire[3579].*128 -> 256"):
        _meta("squeezenet", freq=freq, bypass=bypass)
    _meta("squeezenet", freq=freq)  # fine without a bypass
    _meta("squeezenet", freq=4, bypass=bypass)  # widths change only before fire6: every identity still fits


# ------------------------------------------------------------------------------------------
# Knobs, errors, registry


@pytest.mark.parametrize(
    "knobs, match",
    [
        ({"base_e": 0}, r"base_e must be an integer >= 1, got 0"),
        ({"base_e": 128.0}, r"base_e must be an integer >= 1, got 128.0"),
        ({"incr_e": 0}, r"incr_e must be an integer >= 1, got 0"),
        ({"freq": 0}, r"freq must be an integer >= 1, got 0"),
        ({"freq": 1.5}, r"freq must be an integer >= 1"),
        ({"pct3x3": 0.0}, r"pct3x3 must be in \(0.0, 1.0\), got 0.0"),
        ({"pct3x3": 1.0}, r"pct3x3 must be in \(0.0, 1.0\), got 1.0"),
        ({"pct3x3": 0.005}, r"pct3x3 must leave >= 1 expand3x3 channel: fire2 gets floor\(128 \* 0.005\) = 0"),
        ({"squeeze_ratio": 0.0}, r"squeeze_ratio must be in \(0.0, 1.0\], got 0.0"),
        ({"squeeze_ratio": 1.5}, r"squeeze_ratio must be in \(0.0, 1.0\], got 1.5"),
        ({"squeeze_ratio": 0.005}, r"squeeze_ratio must leave >= 1 squeeze channel: fire2 gets floor\(0.005 \* 128\) = 0"),
        ({"bypass": "simpel"}, r"bypass must be one of 'none', 'simple', 'complex'; got 'simpel'; did you mean 'simple'"),
        ({"bypass": None}, r"bypass must be one of"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0.0, 1.0\), got 1.0"),
        ({"cifar": 1}, r"cifar must be True or False, got 1"),
        ({"init": "he"}, r"init must be one of 'kaiming', 'xavier'; got 'he'"),
    ],
)
def test_bad_knobs_name_the_argument(knobs, match):
    with pytest.raises(ValueError, match=match):
        _meta("squeezenet", **knobs)


def test_released_versions_pin_their_metaparameters():
    with pytest.raises(ValueError, match="squeezenet1_1 fixes squeeze_ratio=0.125"):
        _meta("squeezenet1_1", squeeze_ratio=0.25)
    with pytest.raises(ValueError, match="squeezenet fixes version='1_0'"):  # Section 5 explores the 1.0 layout
        _meta("squeezenet", version="1_1")
    assert set(smallnets.model_info("squeezenet1_0").knobs) == {"bypass", "drop_rate", "cifar", "init"}
    assert dict(smallnets.model_info("squeezenet").knobs) == {
        "base_e": 128, "incr_e": 128, "pct3x3": 0.5, "freq": 2, "squeeze_ratio": 0.125,
        "bypass": "none", "drop_rate": 0.5, "cifar": False, "init": "kaiming",
    }  # fmt: skip


def test_registry_metadata():
    infos = {n: smallnets.model_info(n) for n in MODELS}
    assert {i.family for i in infos.values()} == {"squeezenet"}
    assert [n for n, i in infos.items() if i.representative] == ["squeezenet1_0"]
    assert all("arXiv:1602.07360" in i.paper and i.input_size == (3, 224, 224) for i in infos.values())
    v10 = infos["squeezenet1_0"]
    assert v10.published_for().top1 == 57.5 and v10.published_for().params == 1_248_424
    assert v10.published_for({"bypass": "simple"}).top1 == 60.4
    assert v10.published_for({"bypass": "complex"}).top1 == 58.8
    assert infos["squeezenet1_1"].published_for().top1 == 58.178
    assert infos["squeezenet"].published == ()


def test_builders_do_not_mutate_inputs():
    knobs = {"squeeze_ratio": 0.25, "bypass": "complex"}
    before = dict(knobs)
    _meta("squeezenet", **knobs)
    assert knobs == before


@pytest.mark.parametrize("name, kernel", [("squeezenet1_0", 7), ("squeezenet1_1", 3)])
def test_cifar_stem_gives_4x4_maps(name, kernel):
    model = _meta(name, cifar=True, num_classes=10)
    conv = model.stem.conv1.conv
    assert conv.stride == (1, 1) and conv.kernel_size == (kernel, kernel) and conv.padding == (kernel // 2,) * 2
    x = torch.empty(1, 3, 32, 32, device="meta")
    sides = [model.stem(x).shape[-1]]
    y = model.stem(x)
    for stage in model.stages:
        y = stage(y)
        sides.append(y.shape[-1])
    assert sides == [16, 16, 8, 4]  # total stride 8
    assert model(x).shape == (1, 10)


def test_forward_backward_small():
    torch.manual_seed(0)
    model = smallnets.create_model("squeezenet", num_classes=5, base_e=32, incr_e=16, squeeze_ratio=0.25, bypass="complex")
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.stages[0].fire2.bypass.conv.weight.grad.abs().sum() > 0


def test_pinned_state_dict_keys():
    keys = list(_meta("squeezenet1_0", bypass="complex").state_dict())
    for key in (
        "stem.conv1.conv.weight",
        "stem.conv1.conv.bias",
        "stages.0.fire2.squeeze.conv.weight",
        "stages.0.fire2.expand1x1.conv.bias",
        "stages.0.fire2.expand3x3.conv.weight",
        "stages.0.fire2.bypass.conv.weight",
        "stages.1.fire8.bypass.conv.bias",
        "stages.2.fire9.expand3x3.conv.bias",
        "classifier.conv10.conv.weight",
        "classifier.conv10.conv.bias",
    ):
        assert key in keys, key
    assert len(keys) == 2 + 8 * 6 + 4 * 2 + 2


def test_reproduces_torchvision_squeezenet1_1_logits():
    """torchvision squeezenet1_1 weights (10-class head) loaded by key renaming give its logits."""
    safetensors = pytest.importorskip("safetensors.torch")
    ref = safetensors.load_file(shared_path("reference", "interop", "torchvision__squeezenet1_1.weights.safetensors"))
    io = safetensors.load_file(shared_path("reference", "interop", "torchvision__squeezenet1_1.io.safetensors"))
    model = smallnets.create_model("squeezenet1_1", num_classes=10).eval()
    # torchvision's features.N index -> our fire name: its fire modules in order are fire2 .. fire9.
    fire_indices = sorted({int(k.split(".")[1]) for k in ref if k.startswith("features.") and not k.startswith("features.0.")})
    stage_of = {n.split(".")[-1]: n for n, m in model.named_modules() if isinstance(m, Fire)}
    state = {}
    for key, value in ref.items():
        parts = key.split(".")
        if key.startswith("features.0."):
            ours = f"stem.conv1.conv.{parts[-1]}"
        elif key.startswith("classifier.1."):
            ours = f"classifier.conv10.conv.{parts[-1]}"
        else:
            fire = f"fire{fire_indices.index(int(parts[1])) + 2}"
            ours = f"{stage_of[fire]}.{parts[2]}.conv.{parts[3]}"
        state[ours] = value.float()
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(io["input"])
    torch.testing.assert_close(logits, io["logits"], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# The spec: every fire's widths, the pools, conv1 and the bypasses explicit


@pytest.mark.parametrize("name", MODELS)
def test_spec_round_trips_through_json_and_builds_the_zoo_model(name):
    spec = smallnets.model_spec(name, num_classes=10)
    assert isinstance(spec, SqueezeNetSpec) and spec.resolution == 224
    again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and type(again) is SqueezeNetSpec
    torch.manual_seed(0)
    built = smallnets.build_model(again)
    torch.manual_seed(0)
    zoo = smallnets.create_model(name, num_classes=10)
    assert zoo.spec == spec and built.spec == spec
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in zoo.state_dict().items()]
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), zoo.state_dict().values()))
    assert repr(built) == repr(zoo)


def test_spec_states_conv1_pools_fire_widths_and_bypasses():
    v10, v11 = smallnets.model_spec("squeezenet1_0"), smallnets.model_spec("squeezenet1_1")
    assert (v10.conv1.out_chs, v10.conv1.kernel, v10.conv1.stride, v10.conv1.padding) == (96, 7, 2, 0)
    assert (v11.conv1.out_chs, v11.conv1.kernel, v11.conv1.stride, v11.conv1.padding) == (64, 3, 2, 0)
    assert [(s.pool, len(s.fires)) for s in v10.stages] == [(False, 3), (True, 4), (True, 1)]
    assert [(s.pool, len(s.fires)) for s in v11.stages] == [(False, 2), (True, 2), (True, 4)]
    for spec in (v10, v11):
        assert [(f.squeeze, f.expand1x1, f.expand3x3) for f in spec.fires] == list(TABLE1)
        assert {f.bypass for f in spec.fires} == {"none"} and spec.drop_rate == 0.5 and spec.num_features == 512
    assert [f.bypass for f in smallnets.model_spec("squeezenet1_0", bypass="simple").fires] == ["none", "identity"] * 4
    assert [f.bypass for f in smallnets.model_spec("squeezenet1_0", bypass="complex").fires] == ["conv", "identity"] * 4
    cifar = smallnets.model_spec("squeezenet1_0", cifar=True)
    assert (cifar.conv1.stride, cifar.conv1.padding, cifar.resolution) == (1, 3, 32)
    assert smallnets.model_spec("squeezenet1_1", drop_rate=0.1).drop_rate == 0.1


def _pruned_dict() -> dict:
    """squeezenet1_1 with the simple bypass, hand-edited fire by fire (as Deep Compression would)."""
    d = smallnets.model_spec("squeezenet1_1", bypass="simple", num_classes=4).to_dict()
    d["stages"][0]["fires"][0]["squeeze"] = 10  # fire2: one squeeze width only
    d["stages"][1]["fires"][0].update(expand1x1=100, expand3x3=90)  # fire4: 256 -> 190 channels
    d["stages"][1]["fires"][1].update(in_chs=190, squeeze=20, expand1x1=95, expand3x3=95)  # fire5: identity bypass, 190 -> 190
    d["stages"][2]["fires"][0]["in_chs"] = 190  # fire6 takes fire5's 190
    return d


def test_a_hand_edited_spec_builds_runs_and_has_the_edited_shapes():
    spec = ArchSpec.from_dict(_pruned_dict())
    torch.manual_seed(0)
    model = smallnets.build_model(spec)
    fire2, fire4, fire5, fire6 = model.stages[0].fire2, model.stages[1].fire4, model.stages[1].fire5, model.stages[2].fire6
    assert fire2.squeeze.conv.weight.shape == (10, 64, 1, 1) and fire2.expand3x3.conv.weight.shape == (64, 10, 3, 3)
    assert fire4.expand1x1.conv.weight.shape == (100, 32, 1, 1) and fire4.expand3x3.conv.weight.shape == (90, 32, 3, 3)
    assert isinstance(fire5, BypassFire) and isinstance(fire5.bypass, nn.Identity)
    assert fire5.squeeze.conv.weight.shape == (20, 190, 1, 1) and fire5.expand3x3.conv.weight.shape == (95, 20, 3, 3)
    assert fire6.squeeze.conv.weight.shape == (48, 190, 1, 1)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert model.stages[1](torch.randn(1, 128, 9, 9)).shape == (1, 190, 4, 4)  # ceil-mode pool: 9 -> 4


def test_an_inconsistent_spec_is_refused_with_a_clear_message():
    d = _pruned_dict()
    d["stages"][2]["fires"][0]["in_chs"] = 256  # fire5 ends with 190 channels
    with pytest.raises(ValueError, match=r"stages\[2\].fires\[0\] \(fire6\).in_chs must be the previous layer's 190 channels, got 256"):
        ArchSpec.from_dict(d)
    d = _pruned_dict()
    d["stages"][1]["fires"][1].update(expand1x1=128, expand3x3=128)  # identity around 190 -> 256
    with pytest.raises(ValueError, match=r"bypass 'identity' needs in_chs == out_chs \(expand1x1 \+ expand3x3\), got 190 -> 256"):
        ArchSpec.from_dict(d)
    d = _pruned_dict()
    d["stages"][1]["fires"][1]["bypass"] = "simple"  # the knob's word, not a fire's bypass kind
    with pytest.raises(ValueError, match=r"bypass must be one of 'none', 'identity', 'conv'; got 'simple'"):
        ArchSpec.from_dict(d)
    d = _pruned_dict()
    d["stages"][0]["fires"][0]["squeeze"] = 0
    with pytest.raises(ValueError, match=r"squeeze must be an integer >= 1, got 0"):
        ArchSpec.from_dict(d)
    d = _pruned_dict()
    d["stages"][0]["fires"][0]["expand_1x1"] = 8
    with pytest.raises(ValueError, match="unknown field 'expand_1x1' for FireBlock"):
        ArchSpec.from_dict(d)
    d = _pruned_dict()
    d["conv1"]["padding"] = -1
    with pytest.raises(ValueError, match=r"Conv1: padding must be an integer >= 0, got -1"):
        ArchSpec.from_dict(d)
    spec = ArchSpec.from_dict(_pruned_dict())
    with pytest.raises(ValueError, match=r"stages\[0\].fires\[0\] \(fire2\).in_chs must be the previous layer's 32 channels, got 64"):
        spec.replace(conv1=Conv1(out_chs=32, kernel=3))
