"""Dual Path Networks: Table 1's networks and counts, the dual path wiring, timm's layout, knobs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.dpn import NETWORKS, TABLE_1, DPNSpec, DualPathBlock
from smallnets.arch.spec import ArchSpec
from smallnets.models.dpn import DualPathModule, NormActConv

MANIFESTS = load_facts("classic/manifests.json")
NAMES = [f"dpn{n.depth}" for n in TABLE_1]


def _meta(name: str, **knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model(name, **knobs)


# ------------------------------------------------------------------------------------------
# Table 1 and the counts


def test_depth_is_three_convs_per_block_plus_stem_and_classifier():
    for net in TABLE_1:
        assert net.depth == 3 * sum(net.k_sec) + 2, net


def test_dpn92_counts_exactly_as_timm():
    entry = next(e for e in load_facts("classic_tables.json")["entries"] if e["id"] == "dpn92")
    model = _meta("dpn92")
    assert smallnets.count_params(model) == entry["params"]["value"] == 37_668_392
    assert smallnets.count_macs(model, (3, 224, 224)) == entry["macs"]["value"] == 6_501_684_224  # 1x1-conv classifier included


@pytest.mark.parametrize("name", NAMES)
def test_params_match_timm(name):
    # exact where a manifest holds timm's count; else the timm model card's figure, printed to 10k
    card = {"dpn68": 12_610_000, "dpn92": 37_670_000, "dpn98": 61_570_000, "dpn107": 86_920_000, "dpn131": 79_250_000}
    ours = smallnets.count_params(_meta(name))
    manifest = MANIFESTS.get(f"timm:{name}")
    if manifest is not None:
        assert ours == manifest["num_params"]
    assert abs(ours - card[name]) <= 5_000
    assert smallnets.model_info(name).published[0].params == card[name]


def test_dpn92_stage_widths_and_sides_at_224():
    model = _meta("dpn92")
    x = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    assert x.shape == (1, 64, 56, 56)  # 7x7/s2 conv, 3x3/s2 max-pool
    # residual width + (blocks + 2) * inc: the projection starts the dense path at 2 * inc
    expected = {"conv2": (256 + 5 * 16, 56), "conv3": (512 + 6 * 32, 28), "conv4": (1024 + 22 * 24, 14), "conv5": (2048 + 5 * 128, 7)}
    assert [n for n, _ in model.stages.named_children()] == list(expected)
    for (name, stage), (chs, side) in zip(model.stages.named_children(), expected.values()):
        x = stage(x)
        assert x.shape == (1, chs, side, side), name
    assert model.num_features == 2688 and model.neck(x).shape == (1, 2688, 7, 7)


def test_bottleneck_widths_follow_k_r_and_groups():
    for net in TABLE_1:
        spec = smallnets.model_spec(f"dpn{net.depth}")
        for i, stage in enumerate(spec.stages):
            assert len(stage.blocks) == net.k_sec[i]
            for block in stage.blocks:
                assert block.bottleneck == net.k_r * 2**i and block.groups == net.groups
                assert block.residual == net.width * 2**i and block.inc == net.inc_sec[i]
            assert [b.projection for b in stage.blocks] == [True] + [False] * (net.k_sec[i] - 1)
            assert [b.stride for b in stage.blocks] == [1 if i == 0 else 2] + [1] * (net.k_sec[i] - 1)


# ------------------------------------------------------------------------------------------
# Blocks: pre-activation units, the two paths


def test_units_are_bn_relu_conv():
    unit = NormActConv(8, 16, 3, 2, groups=4)
    assert [n for n, _ in unit.named_children()] == ["bn", "act", "conv"]
    assert unit.bn.eps == 1e-3 and unit.bn.num_features == 8 and isinstance(unit.act, nn.ReLU)
    conv = unit.conv
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.groups) == (8, 16, (3, 3), (2, 2), (1, 1), 4)
    assert conv.bias is None


def test_a_block_adds_to_the_residual_path_and_appends_to_the_dense_path():
    torch.manual_seed(0)
    block = DualPathModule(DualPathBlock(in_chs=12 + 6, bottleneck=8, groups=2, residual=12, inc=4, projection=False)).eval()
    assert block.proj is None
    resid, dense = torch.randn(2, 12, 5, 5), torch.randn(2, 6, 5, 5)
    seen = {}
    block.conv1.register_forward_hook(lambda m, i, o: seen.update(x_in=i[0]))
    block.conv3.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        new_resid, new_dense = block((resid, dense))
    assert torch.equal(seen["x_in"], torch.cat((resid, dense), 1))  # the bottleneck reads both paths
    assert torch.equal(new_resid, resid + seen["out"][:, :12])  # ResNet-like: shared features, added
    assert torch.equal(new_dense, torch.cat((dense, seen["out"][:, 12:]), 1))  # DenseNet-like: new features, appended
    assert new_dense.shape[1] == 6 + 4


def test_a_projection_block_starts_both_paths_from_one_strided_1x1():
    torch.manual_seed(0)
    spec = DualPathBlock(in_chs=10, bottleneck=8, groups=4, residual=16, inc=4, stride=2, projection=True)
    block = DualPathModule(spec).eval()
    assert [n for n, _ in block.named_children()] == ["proj", "conv1", "conv2", "conv3"]  # timm's registration order
    assert block.proj.conv.stride == (2, 2) and block.proj.conv.out_channels == 16 + 2 * 4
    assert block.conv2.conv.stride == (2, 2) and block.conv1.conv.stride == (1, 1)
    x = torch.randn(2, 10, 8, 8)
    with torch.no_grad():
        resid, dense = block(x)
        proj, out = block.proj(x), block.conv3(block.conv2(block.conv1(x)))
    assert torch.equal(resid, proj[:, :16] + out[:, :16])
    assert torch.equal(dense, torch.cat((proj[:, 16:], out[:, 16:]), 1))
    assert (resid.shape[1], dense.shape[1]) == (spec.residual, spec.dense_in + spec.inc) and spec.out_chs == 16 + 12


def test_stage_returns_the_paths_concatenated_and_the_neck_is_bn_elu():
    model = _meta("dpn68")
    y = model.stages.conv3(torch.empty(1, 144, 56, 56, device="meta"))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 128 + 6 * 32, 28, 28)  # one map: residual then dense channels
    assert [n for n, _ in model.neck.named_children()] == ["bn", "act"] and isinstance(model.neck.act, nn.ELU)
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    fc = model.classifier.fc
    assert isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.bias is not None
    assert model.classifier_layer() == "classifier.fc"


def test_dpn68_is_the_small_variant():
    model = _meta("dpn68")
    conv = model.stem.conv
    assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (10, (3, 3), (2, 2), (1, 1))
    assert isinstance(model.stem.pool, nn.MaxPool2d)
    assert smallnets.model_spec("dpn68").widths == (64, 128, 256, 512)
    assert smallnets.model_spec("dpn92").widths == (256, 512, 1024, 2048)


# ------------------------------------------------------------------------------------------
# timm's layout: the same modules, in the same order, with the same parameters and shapes


def _modules(items) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    out: list = []
    for key, shape in items:
        module, _, param = key.rpartition(".")
        if not out or out[-1][0] != module:
            out.append((module, []))
        out[-1][1].append((param, tuple(shape)))
    return out


@pytest.mark.parametrize("name", ["dpn68", "dpn92"])
def test_modules_pair_with_timm_in_registration_order(name):
    theirs = _modules((k, s) for k, s, _ in MANIFESTS[f"timm:{name}"]["state_dict"])
    ours = _modules((k, v.shape) for k, v in _meta(name).state_dict().items())
    assert len(ours) == len(theirs)
    for (o_mod, o_params), (t_mod, t_params) in zip(ours, theirs):
        assert sorted(o_params) == sorted(t_params), f"{o_mod} vs timm {t_mod}"
    names = [m for m, _ in ours]
    assert names[:3] == ["stem.conv", "stem.bn", "stages.conv2.0.proj.bn"] and names[-2:] == ["neck.bn", "classifier.fc"]


def _timm_forward(sd: dict[str, torch.Tensor], net, x: torch.Tensor) -> torch.Tensor:
    """timm's DPN forward written out from its state-dict key names (BN eps 1e-3, ELU after the last BN)."""

    def bn(prefix, x, act=F.relu):
        y = F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-3)
        return act(y)

    def unit(prefix, x, stride=1, groups=1):
        w = sd[f"{prefix}.conv.weight"]
        return F.conv2d(bn(f"{prefix}.bn", x), w, stride=stride, padding=w.shape[-1] // 2, groups=groups)

    w = sd["features.conv1_1.conv.weight"]
    x = F.max_pool2d(bn("features.conv1_1.bn", F.conv2d(x, w, stride=2, padding=w.shape[-1] // 2)), 3, 2, 1)
    for s, blocks in enumerate(net.k_sec):
        width = net.width << s
        for b in range(blocks):
            p = f"features.conv{s + 2}_{b + 1}"
            x_in = x if b == 0 else torch.cat(x, 1)
            if b == 0:
                proj = unit(f"{p}.c1x1_w_s{1 if s == 0 else 2}", x_in, stride=1 if s == 0 else 2)
                resid, dense = proj[:, :width], proj[:, width:]
            else:
                resid, dense = x
            out = unit(f"{p}.c1x1_c", unit(f"{p}.c3x3_b", unit(f"{p}.c1x1_a", x_in), 1 if s == 0 or b else 2, net.groups))
            x = (resid + out[:, :width], torch.cat((dense, out[:, width:]), 1))
        x = torch.cat(x, 1)
    x = bn("features.conv5_bn_ac.bn", x, act=F.elu)
    return F.conv2d(x.mean((2, 3), keepdim=True), sd["classifier.weight"], sd["classifier.bias"]).flatten(1)


def test_dpn68_computes_what_timm_computes_with_its_weights():
    torch.manual_seed(0)
    model = smallnets.create_model("dpn68", num_classes=10).eval()
    with torch.no_grad():  # random running statistics, so eval-mode BN is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    timm_keys = [k for k, _, _ in MANIFESTS["timm:dpn68"]["state_dict"]]
    ours = model.state_dict()
    assert len(timm_keys) == len(ours)
    sd = dict(zip(timm_keys, ours.values()))  # registration order pairs them (see the test above)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), _timm_forward(sd, NETWORKS[68], x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# CIFAR stem, knobs, spec


def test_cifar_stem_is_a_3x3_stride_1_conv_without_max_pool():
    model = _meta("dpn68", num_classes=10, cifar=True)
    conv = model.stem.conv
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1)) and isinstance(model.stem.pool, nn.Identity)
    x = model.stem(torch.empty(1, 3, 32, 32, device="meta"))
    sides = []
    for stage in model.stages:
        x = stage(x)
        sides.append(x.shape[-1])
    assert sides == [32, 16, 8, 4]
    assert model.spec.resolution == 32


def test_cifar_forward_backward():
    torch.manual_seed(0)
    model = smallnets.create_model("dpn68", num_classes=10, cifar=True, drop_rate=0.2)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.classifier.drop.p == 0.2


@pytest.mark.parametrize(
    "knobs, words",
    [
        ({"drop_rate": 1.0}, "drop_rate must be in [0.0, 1.0), got 1.0"),
        ({"drop_rate": -0.1}, "drop_rate must be in [0.0, 1.0), got -0.1"),
        ({"cifar": 1}, "cifar must be True or False, got 1"),
        ({"depth": 50}, "dpn92 fixes depth=92"),
    ],
)
def test_bad_knobs_name_argument_rule_and_value(knobs, words):
    with pytest.raises(ValueError) as err:
        smallnets.create_model("dpn92", **knobs)
    assert words in str(err.value)


def test_the_builder_refuses_an_unknown_depth():
    from smallnets.arch.dpn import dpn

    with pytest.raises(ValueError, match=r"depth must be one of 68, 92, 98, 107, 131; got 50"):
        dpn(depth=50)


def test_an_inconsistent_spec_is_refused_naming_the_place():
    spec = smallnets.model_spec("dpn68")
    with pytest.raises(ValueError, match=r"groups must divide bottleneck: 128 is not divisible by groups=3"):
        spec.replace(groups=3)
    with pytest.raises(ValueError, match=r"inc_sec must be a list of 4 integers"):
        spec.replace(inc_sec=(16, 32, 32))
    with pytest.raises(ValueError, match=r"neck_act must be one of 'elu', 'relu'; got 'gelu'"):
        spec.replace(neck_act="gelu")
    with pytest.raises(ValueError, match=r"k_sec\[2\] must be an integer >= 1, got 0"):
        spec.replace(k_sec=(3, 4, 0, 3))
    with pytest.raises(ValueError, match=r"needs stride 1"):
        DualPathBlock(in_chs=80, bottleneck=8, groups=1, residual=64, inc=16, stride=2, projection=False)


def test_spec_json_round_trip_and_a_hand_edited_spec_builds():
    spec = smallnets.model_spec("dpn68", num_classes=10, cifar=True)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["type"] == "DPNSpec" and data["k_sec"] == [3, 4, 12, 3]
    assert ArchSpec.from_dict(data) == spec
    small = dataclasses.replace(spec, k_sec=(1, 1, 1, 1), neck_act="relu")  # a tiny DPN: one block per stage
    model = smallnets.build_model(small)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert isinstance(model.neck.act, nn.ReLU) and isinstance(small, DPNSpec)


def test_registry_entries():
    reps = [n for n in NAMES if smallnets.model_info(n).representative]
    assert reps == ["dpn92"]
    for name in NAMES:
        info = smallnets.model_info(name)
        assert info.family == "dpn" and info.baseline and "1707.01629" in info.paper
        assert set(info.knobs) == {"drop_rate", "cifar"} and info.input_size == (3, 224, 224)
        assert info.published_for().top1 is not None and "timm" in info.published_for().source
