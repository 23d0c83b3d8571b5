"""Residual Attention Network: the released networks' counts and Table 4's mult-adds, Table 2's stages,
the attention module (units, mask branch down to 7x7 and back, (1 + M) * T), the pre-activation unit,
knobs, keys and the spec as a value."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.residual_attention import AttentionModule, PreActUnit, ResidualAttentionSpec, Stage, attention_stages
from smallnets.arch.spec import ArchSpec
from smallnets.models.residual_attention import AttentionBlock, PreActBottleneck


def _meta(name: str = "residual_attention_56", **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


def _small_spec(levels: int = 2, **module) -> ResidualAttentionSpec:
    """One attention stage (16 channels, mask pooling ``levels`` times) and a strided unit: fast to run."""
    rows = (Stage(out=16, stride=1, attention=1, mask_levels=levels), Stage(out=32, stride=2))
    return ResidualAttentionSpec(num_classes=3, stem="cifar", stem_chs=8, resolution=32, stages=attention_stages(rows, 8, **module))


def _table_entries():
    entries = [e for e in load_facts("classic_tables_added.json")["entries"] if e["model"].startswith("residual_attention")]
    return [pytest.param(e, id=e["id"]) for e in entries]


@pytest.mark.parametrize("entry", _table_entries())
def test_classic_table_entry(entry):
    model = _meta(entry["model"], num_classes=entry["num_classes"], **entry["kwargs"])
    ours = {"params": smallnets.count_params(model), "macs": smallnets.count_macs(model, tuple(entry["input_size"]))}
    checked = [k for k in ("params", "macs") if k in entry]
    assert checked
    for key in checked:
        assert abs(ours[key] - entry[key]["value"]) <= entry[key]["tolerance"], f"{entry['id']} {key}: {ours[key]:,}"


def test_counts_without_the_reference_file():
    a56, a92 = _meta("residual_attention_56"), _meta("residual_attention_92")
    # trainable parameters of the released networks (imgclsmob's resattnet56 / resattnet92 assert the same)
    assert smallnets.count_params(a56) == 31_810_728  # Table 4: 31.9M
    assert smallnets.count_params(a92) == 52_466_344  # Table 4: 51.3M (not reproduced by the released network)
    # mult-adds at 224 px in the zoo's convention: Table 4 prints 6.3G and 10.4G
    assert smallnets.count_macs(a56, (3, 224, 224)) == 6_270_836_736
    assert smallnets.count_macs(a92, (3, 224, 224)) == 10_533_789_696


# ------------------------------------------------------------------------------------------
# Table 2: stages, attention modules, trunk depth


@pytest.mark.parametrize("name, modules, depth", [("residual_attention_56", (1, 1, 1), 56), ("residual_attention_92", (1, 2, 3), 92)])
def test_stages_modules_and_trunk_depth(name, modules, depth):
    spec = smallnets.model_spec(name)
    assert [s[0].out_chs for s in spec.stages] == [256, 512, 1024, 2048]
    assert tuple(sum(isinstance(b, AttentionModule) for b in s) for s in spec.stages[:3]) == modules
    assert len(spec.stages[3]) == 3 and all(isinstance(b, PreActUnit) for b in spec.stages[3])
    assert [{b.mask_levels for b in s if isinstance(b, AttentionModule)} for s in spec.stages[:3]] == [{3}, {2}, {1}]
    assert spec.stages[0][1].units == 12
    # Section 4's depth counts the trunk: conv1, 3 layers per residual unit on it (p + t + p per module), the FC
    trunk_units = sum(1 if isinstance(b, PreActUnit) else b.pre + b.trunk + b.post for b in spec.blocks)
    assert 1 + 3 * trunk_units + 1 == depth


def test_map_sizes_and_every_mask_pools_to_the_last_stage_side():
    for cifar, side, sides, lowest in ((False, 224, (56, 28, 14, 7), 7), (True, 32, (32, 16, 8, 4), 4)):
        model = _meta(cifar=cifar)
        pooled = {}
        for i, stage in enumerate(model.stages[:3]):
            for m in stage[1].mask.modules():
                if isinstance(m, nn.MaxPool2d):
                    m.register_forward_hook(lambda mod, inp, out, i=i, pooled=pooled: pooled.setdefault(i, []).append(out.shape[-1]))
        outs = model.forward_stages(torch.empty(1, 3, side, side, device="meta"))
        assert tuple(o.shape[-1] for o in outs) == sides and outs[-1].shape[1] == model.num_features == 2048
        half = [s // 2 for s in sides]
        assert pooled == {0: [half[0], half[1], lowest], 1: [half[1], lowest], 2: [lowest]}


def test_cifar_variant_quarter_widths_ends_at_8x8_and_masks_pool_to_4x4():
    for depth, params, macs in ((92, 3_181_114, 256_226_304), (56, 1_878_714, 169_227_264)):
        model = _meta("residual_attention_cifar", depth=depth)
        # our layout's counts (the paper's Table 6 prints 1.9M for its own, undisclosed, CIFAR Attention-92)
        assert smallnets.count_params(model) == params and smallnets.count_macs(model, (3, 32, 32)) == macs
    model = _meta("residual_attention_cifar")
    assert model.spec.stem_chs == 16 and [s[0].out_chs for s in model.spec.stages] == [64, 128, 256, 512]  # ResNet-164's widths, x2 at the end
    assert [s[0].mid_chs for s in model.spec.stages] == [16, 32, 64, 128]
    pooled = {}
    for i, stage in enumerate(model.stages[:3]):
        for m in stage[1].mask.modules():
            if isinstance(m, nn.MaxPool2d):
                m.register_forward_hook(lambda mod, inp, out, i=i: pooled.setdefault(i, []).append(out.shape[-1]))
    outs = model.forward_stages(torch.empty(1, 3, 32, 32, device="meta"))
    assert tuple(o.shape[-1] for o in outs) == (32, 16, 8, 8) and outs[-1].shape[1] == 512
    assert pooled == {0: [16, 8, 4], 1: [8, 4], 2: [4]}
    info = smallnets.model_info("residual_attention_cifar")
    assert info.input_size == (3, 32, 32) and info.baseline and info.published_for().dataset == "cifar10+"
    with pytest.raises(ValueError, match="cifar must be True for residual_attention_cifar"):
        smallnets.model_spec("residual_attention_cifar", cifar=False)
    with pytest.raises(ValueError, match="width_mult must be > 0, got -0.5"):
        smallnets.model_spec("residual_attention_56", width_mult=-0.5)


def test_released_unit_counts_per_module():
    model = _meta()
    units = [sum(isinstance(m, PreActBottleneck) for m in model.stages[i][1].modules()) for i in range(3)]
    assert units == [12, 9, 6]  # p + t + p, 2r per mask level, one skip unit per level but the lowest


# ------------------------------------------------------------------------------------------
# The attention module and the residual unit


def test_attention_module_is_one_plus_mask_times_trunk():
    torch.manual_seed(0)
    spec = _small_spec()
    block = AttentionBlock(spec.stages[0][1]).eval()
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        h = block.pre(x)
        mask, trunk = block.mask(h), block.trunk(h)
        assert mask.shape == trunk.shape == h.shape
        assert mask.min() >= 0 and mask.max() <= 1 and isinstance(block.mask.head.gate, nn.Sigmoid)
        assert torch.allclose(block(x), block.post((1 + mask) * trunk))
    # the mask's head: BN - ReLU - 1x1 conv - BN - ReLU - 1x1 conv, no biases
    head = block.mask.head
    assert [n for n, _ in head.named_children()] == ["preact", "conv1", "conv2", "gate"]
    assert head.conv1.conv.kernel_size == (1, 1) and head.conv2.kernel_size == (1, 1) and head.conv2.bias is None


def test_mask_hourglass_upsamples_back_and_adds_the_skip_unit():
    block = AttentionBlock(_small_spec(levels=2).stages[0][1])
    outer = block.mask.hourglass
    assert [n for n, _ in outer.named_children()] == ["pool", "down", "inner", "up"]
    assert [n for n, _ in outer.inner.named_children()] == ["deeper", "skip"]
    assert isinstance(outer.inner.deeper.inner, nn.Identity)  # the lowest level: down then up, no skip
    seen = {}
    outer.inner.deeper.register_forward_hook(lambda m, i, o: seen.update(deeper=o))
    outer.inner.skip.register_forward_hook(lambda m, i, o: seen.update(skip=o))
    outer.inner.register_forward_hook(lambda m, i, o: seen.update(merged=o))
    out = outer(torch.randn(1, 16, 12, 12))
    assert out.shape[-2:] == (12, 12) and seen["deeper"].shape[-2:] == (6, 6)  # upsampled to the level above
    assert torch.allclose(seen["merged"], seen["deeper"] + seen["skip"])


def test_preact_unit_projection_sees_the_preactivated_input_and_strides_on_the_3x3():
    torch.manual_seed(0)
    unit = PreActBottleneck(PreActUnit(in_chs=8, mid_chs=4, out_chs=16, stride=2, shortcut="conv")).eval()
    assert unit.conv1.conv.stride == (1, 1) and unit.conv2.conv.stride == (2, 2) and unit.shortcut.stride == (2, 2)
    assert unit.conv3.bias is None and unit.shortcut.bias is None
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        nn.init.zeros_(unit.conv3.weight)  # only the shortcut is left
        assert torch.allclose(unit(x), unit.shortcut(unit.preact(x)))
    identity = PreActBottleneck(PreActUnit(in_chs=8, mid_chs=2, out_chs=8)).eval()
    with torch.no_grad():
        nn.init.zeros_(identity.conv3.weight)
        assert torch.equal(identity(x), x)  # the raw input, not its BN - ReLU
    with pytest.raises(ValueError, match="shortcut 'identity' needs stride 1 and in_chs == out_chs"):
        PreActUnit(in_chs=8, mid_chs=2, out_chs=16)


# ------------------------------------------------------------------------------------------
# Knobs, entries, specs


def test_p_t_r_knobs_change_the_modules():
    spec = smallnets.model_spec("residual_attention_56", p=2, t=4, r=3)  # Attention-452's setting (Table 6)
    module = spec.stages[0][1]
    assert (module.pre, module.trunk, module.mask_units, module.post) == (2, 4, 3, 2) and module.units == 2 + 4 + 2 + 18 + 2
    assert smallnets.model_spec("residual_attention_56", p=0).stages[0][1].pre == 0


@pytest.mark.parametrize(
    "knobs, words",
    [
        ({"p": -1}, "p must be an integer >= 0, got -1"),
        ({"t": 0}, "t must be an integer >= 1, got 0"),
        ({"r": 1.5}, "r must be an integer >= 1, got 1.5"),
        ({"cifar": "yes"}, "cifar must be True or False, got 'yes'"),
        ({"depth": 92}, "residual_attention_56 fixes depth=56"),
    ],
)
def test_bad_knobs_name_argument_rule_and_value(knobs, words):
    with pytest.raises(ValueError) as err:
        smallnets.model_spec("residual_attention_56", **knobs)
    assert words in str(err.value)


def test_builder_refuses_other_depths():
    from smallnets.arch.residual_attention import residual_attention

    with pytest.raises(ValueError, match=r"depth must be one of 56, 92 \(Table 2's networks\), got 128"):
        residual_attention(depth=128)


def test_entries_and_published_figures():
    a56, a92 = smallnets.model_info("residual_attention_56"), smallnets.model_info("residual_attention_92")
    assert a56.representative and not a92.representative and a56.baseline and a92.baseline
    assert a56.published_for().top1 == pytest.approx(78.24) and a56.published_for().macs == 6.3e9
    assert a92.published_for() is None and a92.published_for(input_size=(3, 320, 320)).top1 == pytest.approx(80.5)
    assert "1704.06904" in a56.paper


def test_spec_round_trips_and_refuses_inconsistency():
    spec = smallnets.model_spec("residual_attention_92", num_classes=10)
    again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and isinstance(again.stages[0][1], AttentionModule) and isinstance(again.stages[0][0], PreActUnit)
    d = spec.to_dict()
    d["stages"][1][1]["chs"] = 256
    with pytest.raises(ValueError, match=r"stages\[1\]\[1\].in_chs must be the previous layer's 512 channels, got 256"):
        ArchSpec.from_dict(d)
    with pytest.raises(ValueError, match="mask_levels must be an integer >= 1, got 0"):
        AttentionModule(chs=16, mid_chs=4, mask_levels=0)


def test_a_small_network_learns_and_is_deterministic_in_eval():
    torch.manual_seed(0)
    model = smallnets.build_model(_small_spec())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
