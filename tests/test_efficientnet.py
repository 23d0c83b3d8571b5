"""EfficientNet-B0..B7: reference counts, the B0 table, compound-scaled variants, MBConv details, knobs, errors, keys."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import smallnets
from conftest import load_facts
from smallnets.models._inverted import InvertedBottleneck, InvertedResidual
from smallnets.arch.efficientnet import COEFFICIENTS

B0_REPEATS = [1, 2, 2, 3, 3, 4, 1]


def _entries():
    entries = load_facts("paper_tables.json")["entries"]
    return [pytest.param(e, id=e["id"]) for e in entries if e["model"].startswith("efficientnet")]


def meta_model(name: str = "efficientnet_b0", **knobs) -> nn.Module:
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


def test_b0_follows_table_1():
    model = meta_model()
    assert [c for c, _, _ in stage_shapes(model, 224)] == [32, 16, 24, 40, 80, 112, 192, 320]
    assert [h for _, h, _ in stage_shapes(model, 224)] == [112, 112, 56, 28, 14, 14, 7, 7]
    assert [len(s) for s in model.stages] == B0_REPEATS
    assert [s[0].dw.conv.kernel_size[0] for s in model.stages] == [3, 3, 5, 3, 5, 5, 3]
    assert model.neck.conv.out_channels == model.num_features == 1280
    assert {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))} == {nn.SiLU}


def test_mbconv_parts():
    model = meta_model()
    first, second = model.stages[0][0], model.stages[1][0]
    assert isinstance(first.expand, nn.Identity)  # expand ratio 1: no expansion conv
    assert second.expand.conv.out_channels == 96  # 6 x 16
    # SE squeezes to a quarter of the block's *input* channels, on the expanded width.
    assert (first.se.reduce.in_channels, first.se.reduce.out_channels) == (32, 8)
    assert (second.se.reduce.in_channels, second.se.reduce.out_channels) == (96, 4)
    assert isinstance(second.se.act, nn.SiLU) and isinstance(second.se.gate, nn.Sigmoid)
    assert not any(hasattr(b.project, "act") for b in blocks(model))  # linear projection
    assert all(isinstance(b, InvertedBottleneck) for b in blocks(model))


def test_shortcuts_where_stride_1_and_channels_kept():
    model = smallnets.create_model("efficientnet", width_mult=0.25, depth_mult=0.5)
    kinds = [[isinstance(b, InvertedResidual) for b in stage] for stage in meta_model().stages]
    assert kinds == [[False], [False, True], [False, True], [False, True, True], [False, True, True], [False, True, True, True], [False]]
    for block, shortcut in ((model.stages[3][1], True), (model.stages[3][0], False)):
        nn.init.zeros_(block.project.bn.weight)
        nn.init.zeros_(block.project.bn.bias)
        x = torch.randn(2, block.expand.conv.in_channels, 8, 8)
        with torch.no_grad():
            y = block.eval()(x)
        assert torch.equal(y, x) if shortcut else torch.count_nonzero(y) == 0


def test_stochastic_depth_grows_linearly_with_block_index():
    model = meta_model()
    ps = {i: b.drop_path.p for i, b in enumerate(blocks(model)) if isinstance(b, InvertedResidual)}
    assert sorted(ps) == [2, 4, 6, 7, 9, 10, 12, 13, 14]
    assert all(p == pytest.approx(0.2 * i / 16) for i, p in ps.items())
    b3 = meta_model("efficientnet_b3", drop_path_rate=0.3)
    total = sum(math.ceil(n * 1.4) for n in B0_REPEATS)
    assert blocks(b3)[-1].drop_path.p == pytest.approx(0.3 * (total - 1) / total)


@pytest.mark.parametrize(
    "name, stem, last, repeats_b3",
    [
        ("efficientnet_b0", 32, 1280, None),
        ("efficientnet_b1", 32, 1280, None),
        ("efficientnet_b2", 32, 1408, None),
        ("efficientnet_b3", 40, 1536, [2, 3, 3, 5, 5, 6, 2]),
        ("efficientnet_b4", 48, 1792, None),
        ("efficientnet_b5", 48, 2048, None),
        ("efficientnet_b6", 56, 2304, None),
        ("efficientnet_b7", 64, 2560, None),
    ],
)
def test_variants_are_the_b0_table_compound_scaled(name, stem, last, repeats_b3):
    info = smallnets.model_info(name)
    coeff = next(c for c in COEFFICIENTS if c.name == name)
    assert dict(info.fixed) == {"width_mult": coeff.width, "depth_mult": coeff.depth}
    assert info.knobs["drop_rate"] == coeff.dropout and info.input_size == (3, coeff.resolution, coeff.resolution)
    model = meta_model(name)
    assert model.stem.conv.out_channels == stem and model.num_features == last
    assert [len(s) for s in model.stages] == [math.ceil(n * coeff.depth) for n in B0_REPEATS]
    if repeats_b3:
        assert [len(s) for s in model.stages] == repeats_b3
        assert [c for c, _, _ in stage_shapes(model, 300)][1:] == [24, 32, 48, 96, 136, 232, 384]
    generic = meta_model("efficientnet", width_mult=coeff.width, depth_mult=coeff.depth)
    assert {k: v.shape for k, v in generic.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.classifier.drop.p == coeff.dropout


def test_bn_knobs_reach_every_norm():
    model = meta_model(bn_eps=1e-3, bn_momentum=0.01)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 49 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in meta_model().modules() if isinstance(m, nn.BatchNorm2d))


def test_reference_init():
    torch.manual_seed(0)
    model = smallnets.create_model("efficientnet", num_classes=100, width_mult=0.5, depth_mult=0.5)
    fc = model.classifier.fc.weight
    assert fc.abs().max() <= 0.1 and fc.std() > 0.05  # uniform(+-1/sqrt(100)): std 0.058
    conv = model.neck.conv.weight
    assert conv.std().item() == pytest.approx(math.sqrt(2 / conv.shape[0]), rel=0.1)  # He-normal, fan-out


def test_cifar_stem_ends_at_4x4():
    model = smallnets.create_model("efficientnet", num_classes=10, width_mult=0.25, depth_mult=0.34, cifar=True).eval()
    assert model.stem.conv.stride == (1, 1)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert [h for _, h, _ in stage_shapes(meta_model(cifar=True), 32)] == [32, 32, 32, 16, 8, 8, 4, 4]


def test_forward_backward_small():
    torch.manual_seed(0)
    model = smallnets.create_model("efficientnet", num_classes=5, width_mult=0.25, depth_mult=0.34, drop_path_rate=0.1)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("efficientnet", {"width_mult": -1.0}, "width_mult must be > 0, got -1.0"),
        ("efficientnet", {"depth_mult": 0}, "depth_mult must be > 0, got 0"),
        ("efficientnet_b2", {"drop_rate": 1.2}, "drop_rate must be in [0.0, 1.0), got 1.2"),
        ("efficientnet_b0", {"drop_path_rate": -0.1}, "drop_path_rate must be in [0.0, 1.0), got -0.1"),
        ("efficientnet_b0", {"bn_eps": 0}, "bn_eps must be > 0, got 0"),
        ("efficientnet_b0", {"bn_momentum": 0.0}, "bn_momentum must be in (0.0, 1.0], got 0.0"),
        ("efficientnet_b0", {"cifar": None}, "cifar must be True or False, got None"),
    ],
)
def test_bad_knobs(name, knobs, words):
    with pytest.raises(ValueError) as err:
        meta_model(name, **knobs)
    assert words in str(err.value)


def test_variants_pin_their_coefficients():
    with pytest.raises(ValueError, match="efficientnet_b4 fixes depth_mult"):
        meta_model("efficientnet_b4", depth_mult=1.0)


def test_published_figures():
    assert smallnets.model_info("efficientnet_b3").published_for().top1 == pytest.approx(81.6)
    assert smallnets.model_info("efficientnet_b7").published_for().macs == pytest.approx(37e9)
    generic = smallnets.model_info("efficientnet")
    assert generic.published_for({}, (3, 224, 224)).top1 == pytest.approx(77.1)
    assert generic.published_for({"width_mult": 1.2, "depth_mult": 1.4, "drop_rate": 0.3}, (3, 300, 300)).top1 == pytest.approx(81.6)
    assert generic.published_for({"width_mult": 1.2, "depth_mult": 1.4}, (3, 224, 224)) is None
    assert [n for n in smallnets.list_models("efficientnet*") if smallnets.model_info(n).representative] == ["efficientnet_b0"]


def test_state_dict_keys_are_pinned():
    keys = meta_model().state_dict()
    for key in (
        "stem.conv.weight",
        "stem.bn.weight",
        "stages.0.0.dw.conv.weight",
        "stages.0.0.se.reduce.weight",
        "stages.0.0.se.expand.bias",
        "stages.0.0.project.bn.running_mean",
        "stages.1.0.expand.conv.weight",
        "stages.5.3.project.conv.weight",
        "neck.conv.weight",
        "neck.bn.bias",
        "classifier.fc.weight",
    ):
        assert key in keys, key
    assert not any(k.startswith("stages.0.0.expand") for k in keys)
    assert len(keys) == 360  # the same tensors as torchvision / timm efficientnet_b0
