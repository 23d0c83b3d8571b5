"""PyramidNet: the paper's counts, additive widening, the pyramidal units (BN first, no ReLU at the ends,
zero-padded shortcut), groups and map sizes, knobs, keys and the spec as a value."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.pyramidnet import PyramidBasic, PyramidBottleneck, PyramidNetSpec, additive_widths
from smallnets.arch.spec import ArchSpec
from smallnets.models.pyramidnet import PyramidalBasicUnit, PyramidalBottleneckUnit

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.ELU, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)


def _meta(name: str = "pyramidnet", **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _table_entries():
    entries = [e for e in load_facts("classic_tables_added.json")["entries"] if e["model"].startswith("pyramidnet")]
    return [pytest.param(e, id=e["id"]) for e in entries]


@pytest.mark.parametrize("entry", _table_entries())
def test_classic_table_entry(entry):
    model = _meta(entry["model"], num_classes=entry["num_classes"], **entry["kwargs"])
    assert abs(smallnets.count_params(model) - entry["params"]["value"]) <= entry["params"]["tolerance"]


def test_the_table_lists_the_configurations_whose_printed_counts_we_reproduce():
    assert len(_table_entries()) == 4


@pytest.mark.parametrize(
    "name, knobs, ours, printed",
    [
        # reproduced to the printed 0.1M (also in classic_tables_added.json)
        ("pyramidnet", {}, 1_739_730, 1.7e6),
        ("pyramidnet", {"depth": 200, "alpha": 240, "bottleneck": True}, 26_617_000, 26.6e6),
        ("pyramidnet", {"depth": 236, "alpha": 220, "bottleneck": True}, 26_806_528, 26.8e6),
        ("pyramidnet", {"depth": 272, "alpha": 200, "bottleneck": True}, 26_049_562, 26.0e6),
        # printed figures this architecture does not give (for alpha = 270, alpha / N = 5 makes every width
        # an exact integer, so no rounding rule explains 28.3M / 27.0M; the authors' round() widths miss too)
        ("pyramidnet", {"alpha": 84}, 3_855_054, 3.8e6),
        ("pyramidnet", {"alpha": 270}, 28_485_477, 28.3e6),
        ("pyramidnet", {"depth": 164, "alpha": 270, "bottleneck": True}, 27_216_021, 27.0e6),
        ("pyramidnet_imagenet", {}, 62_152_030, 62.1e6),
        ("pyramidnet_imagenet", {"alpha": 450, "drop_rate": 0.5}, 116_485_125, 116.4e6),
    ],
)
def test_counts_against_the_printed_figures(name, knobs, ours, printed):
    model = _meta(name, **knobs)
    assert smallnets.count_params(model) == ours
    assert abs(ours - printed) < 0.25e6  # every configuration is within 0.25M of its printed count
    info = smallnets.model_info(name)
    pub = [p for p in info.published if dict(p.knobs) == knobs]
    assert pub and all(p.params == printed for p in pub)


def test_mult_adds_of_the_default():
    # not printed in the paper: ours, in the zoo's convention (conv and FC mult-adds, 32 px)
    assert smallnets.count_macs(_meta(), (3, 32, 32)) == 393_528_448


# ------------------------------------------------------------------------------------------
# Additive widening (Equation 2)


def test_additive_widths_spread_alpha_over_every_unit():
    widths = additive_widths(16, 48, 54)
    assert len(widths) == 54 and widths[0] == 16 and widths[-1] == 64  # floor(16 + 48/54) = 16; 16 + alpha at the end
    assert all(0 <= b - a <= 1 for a, b in pairwise(widths))  # grows by alpha / N = 0.89 per unit, floored
    assert widths[26] == 16 + 24  # k = 27: exactly 16 + 27 * 48 / 54
    # exact arithmetic: k * alpha / N = 42 at k = 27 for alpha = 84 (float accumulation lands just below and floors to 41)
    assert additive_widths(16, 84, 54)[26] == 58 and additive_widths(16, 84, 54)[-1] == 100
    assert additive_widths(16, 270, 54) == tuple(16 + 5 * k for k in range(1, 55))
    assert additive_widths(64, 300, 66)[-1] == 364 and additive_widths(16, 0, 3) == (16, 16, 16)
    assert additive_widths(16, 2.5, 2) == (17, 18)  # a float alpha: floor(17.25), floor(18.5)


def test_width_grows_at_every_unit_not_only_at_downsampling():
    spec = smallnets.model_spec("pyramidnet")
    units = spec.units
    assert [u.out_chs for u in units] == list(additive_widths(16, 48, 54))
    assert [u.stride for u in units].count(2) == 2 and units[18].stride == 2 and units[36].stride == 2
    assert spec.num_features == 64  # Table 4's output feature dimension
    bottleneck = smallnets.model_spec("pyramidnet", depth=164, alpha=270, bottleneck=True)
    assert len(bottleneck.units) == 54 and bottleneck.num_features == 1144  # 4 x (16 + 270)
    assert all(u.out_chs == 4 * u.reduce_chs and u.spatial_chs == u.reduce_chs for u in bottleneck.units)
    imagenet = smallnets.model_spec("pyramidnet_imagenet")
    assert [len(s) for s in imagenet.stages] == [3, 24, 36, 3] and imagenet.num_features == 1456  # 4 x (64 + 300)


# ------------------------------------------------------------------------------------------
# The pyramidal units (Figure 6 (d), (e))


def test_basic_unit_parts_and_keys_in_the_authors_order():
    unit = PyramidalBasicUnit(PyramidBasic(in_chs=8, mid_chs=12, out_chs=12, stride=2))
    keys = [k for k in unit.state_dict() if not k.endswith("num_batches_tracked")]
    assert [k.rpartition(".")[0] for k in keys if k.endswith("weight")] == ["bn", "conv1.conv", "conv1.bn", "conv2.conv", "conv2.bn"]
    assert unit.conv1.conv.stride == (2, 2) and unit.conv1.conv.bias is None and unit.conv2.conv.bias is None
    assert isinstance(unit.conv1.act, nn.ReLU) and not hasattr(unit.conv2, "act")  # one ReLU, between the convs
    assert sum(isinstance(m, ACTIVATIONS) for m in unit.modules()) == 1
    assert sum(p.numel() for p in unit.shortcut.parameters()) == 0


def test_bottleneck_unit_parts():
    unit = PyramidalBottleneckUnit(PyramidBottleneck(in_chs=8, reduce_chs=5, spatial_chs=5, out_chs=20, stride=2))
    weights = [k.rpartition(".")[0] for k in unit.state_dict() if k.endswith("weight")]
    assert weights == ["bn", "conv1.conv", "conv1.bn", "conv2.conv", "conv2.bn", "conv3.conv", "conv3.bn"]
    assert unit.conv1.conv.kernel_size == (1, 1) and unit.conv2.conv.stride == (2, 2) and unit.conv3.conv.out_channels == 20
    assert sum(isinstance(m, ACTIVATIONS) for m in unit.modules()) == 2 and not hasattr(unit.conv3, "act")


def test_shortcut_is_avgpool_then_zero_channels_and_no_relu_after_the_addition():
    torch.manual_seed(0)
    unit = PyramidalBasicUnit(PyramidBasic(in_chs=4, mid_chs=6, out_chs=6, stride=2)).eval()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        out = unit(x)
        assert (out < 0).any()  # nothing clips the sum
        nn.init.zeros_(unit.conv2.bn.weight)  # silence the residual branch: only the shortcut is left
        nn.init.zeros_(unit.conv2.bn.bias)
        short = unit(x)
    pooled = nn.functional.avg_pool2d(x, 2, ceil_mode=True)  # 7 -> 4, as the 3x3/2 convs
    assert short.shape == (2, 6, 4, 4)
    assert torch.allclose(short[:, :4], pooled) and torch.equal(short[:, 4:], torch.zeros(2, 2, 4, 4))


def test_the_first_unit_sees_the_stem_without_relu():
    model = _meta()
    assert [n for n, _ in model.stem.named_children()] == ["conv", "bn"]  # Table 1's conv1; the unit starts with BN
    assert [n for n, _ in model.neck.named_children()] == ["bn", "act"]  # the final BN - ReLU before pooling
    imagenet = _meta("pyramidnet_imagenet")
    assert [n for n, _ in imagenet.stem.named_children()] == ["conv", "bn", "act", "pool"]
    assert imagenet.stem.conv.kernel_size == (7, 7) and imagenet.stem.conv.stride == (2, 2)


@pytest.mark.parametrize(
    "name, knobs, side, sides, chs",
    [
        ("pyramidnet", {}, 32, (32, 16, 8), (32, 48, 64)),
        ("pyramidnet_imagenet", {"depth": 50, "alpha": 48}, 224, (56, 28, 14, 7), (4 * 73, 4 * 85, 4 * 103, 4 * 112)),
        ("pyramidnet_imagenet", {"depth": 18, "cifar": True}, 32, (32, 16, 8, 4), (139, 214, 289, 364)),
    ],
)
def test_groups_channels_and_map_sizes(name, knobs, side, sides, chs):
    model = _meta(name, **knobs)
    outs = model.forward_stages(torch.empty(1, 3, side, side, device="meta"))
    assert tuple(o.shape[-1] for o in outs) == sides
    assert tuple(o.shape[1] for o in outs) == chs


# ------------------------------------------------------------------------------------------
# Knobs, entries, specs


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("pyramidnet", {"depth": 111}, "depth must give whole groups: with basic units depth must be 6n + 2"),
        ("pyramidnet", {"depth": 112, "bottleneck": True}, "with bottleneck units depth must be 9n + 2"),
        ("pyramidnet", {"depth": 2}, "got depth=2"),
        ("pyramidnet", {"alpha": -1}, "alpha must be in [0.0, inf), got -1"),
        ("pyramidnet", {"bottleneck": 1}, "bottleneck must be True or False, got 1"),
        ("pyramidnet", {"cifar": False}, "cifar must be True for pyramidnet"),
        ("pyramidnet", {"drop_rate": 1.0}, "drop_rate must be in [0.0, 1.0), got 1.0"),
        ("pyramidnet_imagenet", {"depth": 110}, "depth must be one of 18, 34, 50, 101, 152, 200; got 110"),
        ("pyramidnet_imagenet", {"alpha": float("nan")}, "alpha must be a finite number, got nan"),
    ],
)
def test_bad_knobs_name_argument_rule_and_value(name, knobs, words):
    with pytest.raises(ValueError) as err:
        smallnets.model_spec(name, **knobs)
    assert words in str(err.value)


def test_entries_and_published_figures():
    info = smallnets.model_info("pyramidnet")
    assert info.input_size == (3, 32, 32) and info.num_classes == 10 and not info.representative and info.baseline
    assert info.published_for().top1 == pytest.approx(95.38) and info.published_for().dataset == "cifar10+"
    c100 = [p for p in info.published if p.dataset == "cifar100+" and dict(p.knobs) == {"depth": 272, "alpha": 200, "bottleneck": True}]
    assert [p.top1 for p in c100] == [pytest.approx(83.65)]
    imagenet = smallnets.model_info("pyramidnet_imagenet")
    assert imagenet.baseline and imagenet.representative and imagenet.input_size == (3, 224, 224)
    assert imagenet.published_for().top1 == pytest.approx(79.53) and imagenet.published_for({"alpha": 450, "drop_rate": 0.5}).params == 116.4e6
    assert "1610.02915" in info.paper


def test_spec_round_trips_with_both_unit_kinds_and_refuses_inconsistency():
    for knobs in ({}, {"depth": 20, "bottleneck": True}):
        spec = smallnets.model_spec("pyramidnet", **knobs)
        again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and type(again.units[0]) is type(spec.units[0])
    d = smallnets.model_spec("pyramidnet", depth=8).to_dict()
    d["stages"][1][0]["in_chs"] = 20
    with pytest.raises(ValueError, match=r"stages\[1\]\[0\].in_chs must be the previous layer's 32 channels, got 20"):
        ArchSpec.from_dict(d)
    with pytest.raises(ValueError, match="the zero-padded identity shortcut can only add channels"):
        PyramidBasic(in_chs=16, mid_chs=8, out_chs=8)
    with pytest.raises(ValueError, match="stem must be one of"):
        PyramidNetSpec(stem="big", stages=((PyramidBasic(in_chs=16, mid_chs=16, out_chs=16),),))


def test_a_hand_edited_spec_builds_widths_no_knob_gives():
    d = smallnets.model_spec("pyramidnet", depth=8, num_classes=3).to_dict()
    d["stages"][0][0]["mid_chs"] = 5  # a pruned first conv
    model = smallnets.build_model(ArchSpec.from_dict(d))
    assert model.stages[0][0].conv1.conv.out_channels == 5 and model.stages[0][0].conv2.conv.in_channels == 5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("knobs", [{"depth": 8}, {"depth": 11, "bottleneck": True}])
def test_tiny_networks_learn(knobs):
    torch.manual_seed(0)
    model = smallnets.create_model("pyramidnet", num_classes=4, **knobs)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3] * 2)
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
