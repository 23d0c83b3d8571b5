"""PolyNet: the released model's counts, stages and map sizes, the 10-20-10 mix and its residual
factors, what poly-N shares, the module formulas, knobs, keys and the spec as a value."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.arch.polynet import BLOCK_B, Conv, InceptionBlock, Mixed, PolyModule, PolyNetSpec, residual_scales
from smallnets.arch.spec import ArchSpec
from smallnets.models.polynet import InceptionResidual, PolyInceptionChain, PolyInceptionWay, SharedBlock

SMALL = {"modules_a": 1, "modules_b": 2, "modules_c": 2}  # one of each module type the mix uses, fast to build and run


def _meta(**knobs) -> nn.Module:
    with torch.device("meta"):
        return smallnets.create_model("polynet", **knobs)


def _table_entries():
    entries = [e for e in load_facts("classic_tables_added.json")["entries"] if e["model"] == "polynet"]
    return [pytest.param(e, id=e["id"]) for e in entries]


@pytest.mark.parametrize("entry", _table_entries())
def test_classic_table_entry(entry):
    model = _meta(num_classes=entry["num_classes"], **entry["kwargs"])
    assert abs(smallnets.count_params(model) - entry["params"]["value"]) <= entry["params"]["tolerance"]


def test_counts_without_the_reference_file():
    model = _meta()
    assert smallnets.count_params(model) == 95_366_600  # the released model (imgclsmob's count of Cadene's port)
    # ours, in the zoo's convention (conv and linear mult-adds, each application of a shared conv counted):
    # no reference prints this figure; imgclsmob's own counter gives 34,821.34M
    assert smallnets.count_macs(model, (3, 331, 331)) == 34_699_493_472


# ------------------------------------------------------------------------------------------
# Stages, map sizes, the mix


def test_stem_and_stages_channels_and_map_sizes():
    model = _meta(**SMALL)
    for side, maps in ((331, (39, 19, 9)), (299, (35, 17, 8))):  # 299: the paper's Figure 5 sides
        y = model.stem(torch.empty(1, 3, side, side, device="meta"))
        assert y.shape == (1, 384, maps[0], maps[0])
        sides = []
        for stage, chs in zip(model.stages, (384, 1152, 2048)):
            y = stage(y)
            assert y.shape[1] == chs
            sides.append(y.shape[-1])
        assert tuple(sides) == maps
    assert [n for n, _ in model.stages.named_children()] == ["a", "b", "c"]
    assert not hasattr(model.stages.a, "reduction") and hasattr(model.stages.b, "reduction") and hasattr(model.stages.c, "reduction")
    assert model.num_features == 2048 and model.classifier.fc.in_features == 2048 and isinstance(model.neck, nn.Identity)
    stem = model.stem
    assert (stem.conv1.conv.stride, stem.conv1.conv.padding) == ((2, 2), (0, 0))
    assert stem.conv2.conv.padding == (0, 0) and stem.conv3.conv.padding == (1, 1)
    assert isinstance(stem.mixed1.branches[0], nn.MaxPool2d) and isinstance(stem.mixed3.branches[0], nn.MaxPool2d)  # pool first
    assert isinstance(model.stages.b.reduction.branches[2], nn.MaxPool2d) and isinstance(model.stages.c.reduction.branches[3], nn.MaxPool2d)
    assert [b[-1].conv.out_channels for b in model.stages.c.reduction.branches[:3]] == [256, 256, 384]


def test_smallest_input_is_75():
    model = _meta(modules_a=1, modules_b=1, modules_c=1).eval()  # eval: BN sees one value per channel at 1x1
    assert model.forward_features(torch.empty(1, 3, 75, 75, device="meta")).shape[-1] == 1
    with pytest.raises(RuntimeError):
        model.forward_features(torch.empty(1, 3, 74, 74, device="meta"))


def test_very_deep_mix_is_10_20_10():
    model = _meta()
    a, b, c = (list(s.children()) for s in model.stages)
    assert len(a) == 10 and all(isinstance(m, PolyInceptionWay) and m.order == 2 for m in a)
    b, c = b[1:], c[1:]  # after the reductions
    assert len(b) == 20 and len(c) == 10
    for modules in (b, c):
        assert all(isinstance(m, PolyInceptionChain) and isinstance(m.blocks, SharedBlock) and m.order == 3 for m in modules[0::2])  # poly-3
        assert all(isinstance(m, PolyInceptionWay) and m.order == 2 for m in modules[1::2])  # 2-way
    spec = smallnets.model_spec("polynet")
    assert [(m.kind, m.order) for m in spec.stages[1].modules[:2]] == [("poly", 3), ("way", 2)]


def test_residual_factors_are_the_releases():
    scales = [m.scale for m in smallnets.model_spec("polynet").modules]
    assert len(scales) == 40 and scales[0] == 1.0 and scales[-1] == 0.7
    # as the release prints them: stage A second module, stage B first, stage B fourth, stage C first
    assert (scales[1], scales[10], scales[13], scales[30]) == (0.992308, 0.923077, 0.9, 0.769231)
    assert all(x > y for x, y in zip(scales, scales[1:]))
    assert residual_scales(3, 0.5) == (1.0, 0.75, 0.5) and residual_scales(1, 0.5) == (1.0,)
    assert smallnets.model_spec("polynet", scale_last=1.0).modules[-1].scale == 1.0
    model = _meta(**SMALL)
    assert model.stages.c.get_submodule("1").scale == 0.7 and model.stages.a.get_submodule("0").scale == 1.0


# ------------------------------------------------------------------------------------------
# What poly-N shares, and the module formulas


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_poly3_shares_the_branch_convs_not_the_norms_or_closing_conv():
    shared = SharedBlock(BLOCK_B, 3)
    branch_convs = 1152 * 128 + 128 * 160 * 7 + 160 * 192 * 7 + 1152 * 192  # once, for the three applications
    norms = 3 * 2 * (128 + 160 + 192 + 192)
    ups = 3 * (384 * 1152 + 2 * 1152)  # a closing 1x1 conv + BN per application
    assert _params(shared) == branch_convs + norms + ups
    assert _params(InceptionResidual(BLOCK_B)) == branch_convs + norms // 3 + ups // 3
    assert [len(layer.bns) for chain in shared.branches for layer in chain] == [3, 3, 3, 3] and len(shared.ups) == 3
    block = InceptionBlock(chs=6, branches=((Conv(out_chs=4), Conv(out_chs=5, kernel=(3, 3))), (Conv(out_chs=3),)))
    poly, mpoly, way = (PolyModule(kind=k, order=2, block=block) for k in ("poly", "mpoly", "way"))
    assert _params(PolyInceptionChain(mpoly)) == _params(PolyInceptionWay(way)) == 2 * _params(InceptionResidual(block))
    assert _params(PolyInceptionChain(poly)) < _params(PolyInceptionChain(mpoly))


def _randomise_norms(module: nn.Module) -> None:
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)


SMALL_BLOCK = InceptionBlock(chs=6, branches=((Conv(out_chs=4), Conv(out_chs=5, kernel=(3, 3))), (Conv(out_chs=3),)))


def test_shared_block_applies_one_conv_with_the_kth_norm_and_closing_conv():
    torch.manual_seed(0)
    shared = SharedBlock(SMALL_BLOCK, 2).eval()
    _randomise_norms(shared)
    x = torch.randn(2, 6, 5, 5)

    def cbr(layer, x, k):
        bn = layer.bns[k]
        return F.relu(F.batch_norm(F.conv2d(x, layer.conv.weight, padding=layer.conv.padding), bn.running_mean, bn.running_var, bn.weight, bn.bias))

    for k in range(2):
        (l0, l1), (m0,) = shared.branches
        cat = torch.cat([cbr(l1, cbr(l0, x, k), k), cbr(m0, x, k)], 1)
        torch.testing.assert_close(shared(x, k), shared.ups[k](cat))
    assert not torch.allclose(shared(x, 0), shared(x, 1))


def test_module_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5).relu()
    way = PolyInceptionWay(PolyModule(kind="way", order=2, block=SMALL_BLOCK, scale=0.5)).eval()
    _randomise_norms(way)
    f, g = way.blocks
    torch.testing.assert_close(way(x), F.relu(x + 0.5 * f(x) + 0.5 * g(x)))  # 2-way: I + F + G

    mpoly = PolyInceptionChain(PolyModule(kind="mpoly", order=2, block=SMALL_BLOCK, scale=0.5)).eval()
    _randomise_norms(mpoly)
    f, g = mpoly.blocks
    torch.testing.assert_close(mpoly(x), F.relu(x + 0.5 * f(x) + 0.5 * g(F.relu(f(x)))))  # mpoly-2: I + F + G·F

    poly = PolyInceptionChain(PolyModule(kind="poly", order=3, block=SMALL_BLOCK, scale=0.5)).eval()
    _randomise_norms(poly)
    h1 = poly.blocks(x, 0)
    h2 = poly.blocks(F.relu(h1), 1)
    h3 = poly.blocks(F.relu(h2), 2)
    torch.testing.assert_close(poly(x), F.relu(x + 0.5 * (h1 + h2 + h3)))  # poly-3: I + F + F·F + F·F·F

    # poly-2 is mpoly-2 with G's branch convs tied to F's
    poly2 = PolyInceptionChain(PolyModule(kind="poly", order=2, block=SMALL_BLOCK, scale=0.5)).eval()
    _randomise_norms(poly2)
    with torch.no_grad():
        for k, block in enumerate(mpoly.blocks):
            for chain, shared_chain in zip(block.branches, poly2.blocks.branches):
                for unit, shared in zip(chain, shared_chain):
                    unit.conv.weight.copy_(shared.conv.weight)
                    unit.bn.load_state_dict(shared.bns[k].state_dict())
            block.up.load_state_dict(poly2.blocks.ups[k].state_dict())
    torch.testing.assert_close(mpoly(x), poly2(x))


def test_every_conv_is_conv_bn_relu_but_the_closing_1x1():
    model = _meta(**SMALL)
    block = model.stages.a.get_submodule("0").blocks[0]
    units = [u for chain in block.branches for u in chain]
    assert all(u.conv.bias is None and isinstance(u.bn, nn.BatchNorm2d) and isinstance(u.act, nn.ReLU) for u in units)
    assert [u.conv.out_channels for u in units] == [32, 48, 64, 32, 32, 32]  # Inception-ResNet-v2's block A
    up = block.up
    assert up.conv.kernel_size == (1, 1) and up.conv.bias is None and isinstance(up.bn, nn.BatchNorm2d) and not hasattr(up, "act")
    kernels = [u.conv.kernel_size for u in model.stages.b.get_submodule("0").blocks.branches[0]]
    assert kernels == [(1, 1), (1, 7), (7, 1)]
    assert [u.conv.kernel_size for u in model.stages.c.get_submodule("0").blocks.branches[0]] == [(1, 1), (1, 3), (3, 1)]


# ------------------------------------------------------------------------------------------
# Knobs, registry, CIFAR, forward


@pytest.mark.parametrize(
    "knobs, match",
    [
        ({"modules_b": 0}, r"modules_b must be an integer >= 1, got 0"),
        ({"modules_a": 2.0}, r"modules_a must be an integer >= 1, got 2.0"),
        ({"pattern_b": "poly-4"}, r"pattern_b must be one of 'ir', 'poly-2', .*; got 'poly-4'; did you mean"),
        ({"pattern_c": ""}, r"pattern_c must be module types separated by commas"),
        ({"pattern_a": 2}, r"pattern_a must be module types separated by commas \(e.g. 'poly-3,2-way'\), got 2"),
        ({"scale_last": 0.0}, r"scale_last must be in \(0.0, 1.0\], got 0.0"),
        ({"scale_last": 1.5}, r"scale_last must be in \(0.0, 1.0\], got 1.5"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0.0, 1.0\), got 1.0"),
        ({"cifar": 1}, r"cifar must be True or False, got 1"),
        ({"module_b": 4}, r"unknown knob 'module_b' for polynet; did you mean 'modules_b'"),
    ],
)
def test_bad_knobs_name_the_argument(knobs, match):
    with pytest.raises(ValueError, match=match):
        smallnets.model_spec("polynet", **knobs)


def test_patterns_cycle_over_the_modules():
    spec = smallnets.model_spec("polynet", modules_a=3, pattern_a="ir, mpoly-2", modules_b=3, pattern_b="3-way", modules_c=1)
    assert [(m.kind, m.order) for m in spec.stages[0].modules] == [("way", 1), ("mpoly", 2), ("way", 1)]
    assert [(m.kind, m.order) for m in spec.stages[1].modules] == [("way", 3)] * 3
    assert residual_scales(7, 0.7) == tuple(m.scale for m in spec.modules)


def test_registry_metadata():
    info = smallnets.model_info("polynet")
    assert info.family == "polynet" and info.representative and info.baseline and "arXiv:1611.05725" in info.paper
    assert info.input_size == (3, 331, 331)
    assert dict(info.knobs) == {"modules_a": 10, "modules_b": 20, "modules_c": 10, "pattern_a": "2-way", "pattern_b": "poly-3,2-way",
                                "pattern_c": "poly-3,2-way", "scale_last": 0.7, "drop_rate": 0.2, "cifar": False}  # fmt: skip
    pub = info.published_for()
    assert pub.top1 == 81.29 and pub.params == 95_366_600  # 100 - 18.71% single-crop top-1 error


def test_cifar_ends_4x4_with_the_same_weights():
    model = _meta(cifar=True, num_classes=10, **SMALL)
    y = model.stem(torch.empty(1, 3, 32, 32, device="meta"))
    sides = [y.shape[-1]]
    for stage in model.stages:
        y = stage(y)
        sides.append(y.shape[-1])
    assert sides == [16, 16, 8, 4]
    assert model.stem.conv1.conv.stride == (1, 1) and model.stem.mixed1.branches[1][0].conv.stride == (1, 1)
    assert smallnets.count_params(model) == smallnets.count_params(_meta(num_classes=10, **SMALL))
    assert smallnets.model_spec("polynet", cifar=True).resolution == 32


def test_forward_backward_small():
    torch.manual_seed(0)
    model = smallnets.create_model("polynet", num_classes=5, cifar=True, **SMALL)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not missing, missing[:5]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_pinned_state_dict_keys():
    keys = list(_meta(**SMALL).state_dict())
    for key in (
        "stem.conv1.conv.weight",
        "stem.conv3.bn.running_var",
        "stem.mixed1.branches.1.0.conv.weight",
        "stem.mixed2.branches.1.3.bn.weight",
        "stem.mixed3.branches.1.0.conv.weight",
        "stages.a.0.blocks.0.branches.0.2.conv.weight",
        "stages.a.0.blocks.1.up.bn.bias",
        "stages.b.reduction.branches.0.2.conv.weight",
        "stages.b.0.blocks.branches.0.1.conv.weight",
        "stages.b.0.blocks.branches.0.1.bns.2.running_mean",
        "stages.b.0.blocks.ups.2.conv.weight",
        "stages.b.1.blocks.1.branches.1.0.bn.weight",
        "stages.c.reduction.branches.2.1.conv.weight",
        "stages.c.0.blocks.ups.0.bn.weight",
        "classifier.fc.weight",
        "classifier.fc.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith("stages.b.0.blocks.branches.0.1.bns.3") for k in keys)


# ------------------------------------------------------------------------------------------
# The architecture as a value: the spec


def test_spec_round_trips_through_json_and_builds_the_zoo_model():
    for knobs in (SMALL, {"cifar": True, "pattern_b": "mpoly-2,ir", "scale_last": 0.5, "drop_rate": 0.0, **SMALL}):
        spec = smallnets.model_spec("polynet", **knobs)
        assert isinstance(spec, PolyNetSpec)
        back = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.to_dict() == spec.to_dict()
        with torch.device("meta"):
            built, zoo = smallnets.build_model(back), smallnets.create_model("polynet", **knobs)
        assert built.spec == spec and zoo.spec == spec
        assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in zoo.state_dict().items()]
        assert repr(built) == repr(zoo)
    spec = smallnets.model_spec("polynet")
    assert spec.resolution == 331 and spec.stem_chs == 384 and spec.stage_chs == (384, 1152, 2048)


def test_hand_edited_spec_builds_and_runs():
    spec = smallnets.model_spec("polynet", num_classes=4, cifar=True, modules_a=1, modules_b=1, modules_c=1)
    a, b, c = spec.stages
    narrow = InceptionBlock(chs=384, branches=((Conv(out_chs=16), Conv(out_chs=24, kernel=(3, 3))),))
    a = dataclasses.replace(a, modules=(PolyModule(kind="mpoly", order=3, block=narrow, scale=0.2),))
    edited = spec.replace(stages=(a, b, c))
    assert ArchSpec.from_dict(json.loads(json.dumps(edited.to_dict()))) == edited
    torch.manual_seed(0)
    model = smallnets.build_model(edited)
    state = model.state_dict()
    assert state["stages.a.0.blocks.2.branches.0.1.conv.weight"].shape == (24, 16, 3, 3)
    assert state["stages.a.0.blocks.2.up.conv.weight"].shape == (384, 24, 1, 1)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_inconsistent_specs_are_refused_with_the_rule():
    spec = smallnets.model_spec("polynet", modules_a=1, modules_b=1, modules_c=1)
    a, b, c = spec.stages
    wrong = dataclasses.replace(b.modules[0], block=dataclasses.replace(BLOCK_B, chs=1088))
    with pytest.raises(ValueError, match=r"stages\[1\]\.modules\[0\] \(b\.0\)\.block\.chs must be the stage's 1152 channels, got 1088"):
        spec.replace(stages=(a, dataclasses.replace(b, modules=(wrong,)), c))
    with pytest.raises(ValueError, match=r"stage names must be unique"):
        spec.replace(stages=(a, dataclasses.replace(b, name="a"), c))
    with pytest.raises(ValueError, match=r"must be stride 1 and padded"):
        InceptionBlock(chs=8, branches=((Conv(out_chs=4, kernel=(3, 3), padded=False),),))
    with pytest.raises(ValueError, match=r"every branch must give the same map size"):
        Mixed(branches=((Conv(out_chs=4, kernel=(3, 3), stride=2, padded=False),), (Conv(out_chs=4, kernel=(3, 3), stride=2),)))
    with pytest.raises(ValueError, match=r"kind must be one of 'poly', 'mpoly', 'way'; got 'dense'"):
        PolyModule(kind="dense", order=2, block=BLOCK_B)
    with pytest.raises(ValueError, match=r"order must be an integer >= 1, got 0"):
        PolyModule(kind="poly", order=0, block=BLOCK_B)
    with pytest.raises(ValueError, match=r"scale must be a finite number >= 0, got nan"):
        PolyModule(kind="way", order=2, block=BLOCK_B, scale=float("nan"))
    with pytest.raises(ValueError, match=r"a padded conv needs odd kernel sides, got \(2, 2\)"):
        Conv(out_chs=4, kernel=(2, 2))
    with pytest.raises(ValueError, match=r"kernel must be \(height, width\)"):
        Conv(out_chs=4, kernel=(3,))
    data = spec.to_dict()
    data["stages"][0]["modules"][0]["block"]["chs"] = 383
    with pytest.raises(ValueError, match=r"\(a\.0\)\.block\.chs must be the stage's 384 channels, got 383"):
        ArchSpec.from_dict(data)
