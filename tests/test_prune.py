"""Structured pruning (smallnets.compress.structured): channel groups of every family, exactness of
the slicing, the MACs target, and a pruned model as an ordinary model (train, save, reload)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import smallnets
from smallnets.compress.structured import prune, rebuild_pruned, sliced_state, trace_channels
from smallnets.profiler import count_macs

# (name, knobs, input side): every family and the block kinds whose channels are coupled differently
FAMILIES = [
    ("mobilenet_v1", {"width_mult": 0.25, "cifar": True}, 32),  # depthwise separable
    ("mobilenet_v1", {"width_mult": 0.25, "separable": False, "depth_mult": 0.5, "cifar": True}, 32),  # full convs
    ("mobilenet_v2", {"width_mult": 0.35, "cifar": True}, 32),  # residual adds, linear bottlenecks
    ("efficientnet", {"width_mult": 0.25, "depth_mult": 0.3, "cifar": True}, 32),  # SE, residual adds
    ("efficientnet_b0", {"same_padding": True}, 64),  # TF "SAME" padding modules
    ("shufflenet_v1", {"groups": 3, "width_mult": 0.5, "cifar": True}, 32),  # grouped 1x1 + shuffle
    ("shufflenet_v2", {"width_mult": 0.5, "cifar": True}, 32),  # split + concat + shuffle
    ("squeezenet1_1", {"cifar": True}, 32),  # Fire concatenation, no BatchNorm
    ("squeezenet", {"bypass": "simple", "cifar": True}, 32),  # identity bypass
    ("squeezenet", {"bypass": "complex", "cifar": True}, 32),  # 1x1 conv bypass
    ("xception", {"middle_repeats": 1, "cifar": True}, 32),  # residual with conv shortcuts
    ("densenet_cifar", {"depth": 10, "growth_rate": 6}, 32),  # pre-activation BN over concatenations
    ("densenet_cifar", {"depth": 7, "growth_rate": 6, "bottleneck": False, "compression": 1.0}, 32),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kn.items())}" for n, kn, _ in FAMILIES]


def _model(name, knobs, seed=0):
    torch.manual_seed(seed)
    model = smallnets.create_model(name, num_classes=10, **knobs).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that slicing them is checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def _zero_consumers(model: nn.Module, graph, removed: torch.Tensor) -> None:
    """Zero every weight that reads a channel of a removed unit: those channels then cannot affect the output."""
    modules = dict(model.named_modules())

    def gone(ids):
        units = graph.unit_of[ids]
        return (units >= 0) & removed[units.clamp_min(0)]

    with torch.no_grad():
        for layer in graph.layers:
            if layer.depthwise:
                continue  # reads and writes the same channels: part of the unit, not a reader of it
            w = modules[layer.name].weight
            if layer.groups == 1:
                w[:, gone(layer.in_ids)] = 0
            else:
                per_group_in = gone(layer.in_ids).reshape(layer.groups, -1)
                rows = w.shape[0] // layer.groups
                for g in range(layer.groups):
                    w[g * rows:(g + 1) * rows, per_group_in[g]] = 0


@pytest.mark.parametrize(("name", "knobs", "side"), FAMILIES, ids=IDS)
def test_removed_channels_were_exactly_those_cut(name, knobs, side):
    """Cut random channel groups whose readers were zeroed: the smaller model computes exactly what
    the full one computes. Wrong grouping or slicing (a shuffle, split, concat, residual or SE
    mismatch) changes the output."""
    torch.set_num_threads(1)
    model = _model(name, knobs)
    graph = trace_channels(model, (3, side, side))
    assert graph.num_units > 0
    gen = torch.Generator().manual_seed(1)
    removed = torch.rand(graph.num_units, generator=gen) < 0.3
    for layer, (kin, kout) in zip(graph.layers, graph.kept_counts(removed)):  # keep every layer alive
        if kout == 0 or kin == 0:
            units = graph.unit_of[layer.out_ids if kout == 0 else layer.in_ids]
            removed[units[units >= 0]] = False
    assert removed.any()
    _zero_consumers(model, graph, removed)
    x = torch.randn(2, 3, side, side, generator=gen)
    with torch.no_grad():
        expected = model(x)
    pruned = rebuild_pruned(model, sliced_state(model, graph, removed)).eval()
    with torch.no_grad():
        got = pruned(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert count_macs(pruned, (3, side, side)) == graph.macs(removed) < graph.macs()


@pytest.mark.parametrize(("name", "knobs", "side"), FAMILIES, ids=IDS)
def test_prune_to_half_the_macs_trains_saves_and_reloads(name, knobs, side, tmp_path):
    torch.set_num_threads(1)
    model = _model(name, knobs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full_macs = count_macs(model, (3, side, side))
    pruned, report = prune(model, target_macs=0.5, input_size=(3, side, side))
    macs = count_macs(pruned, (3, side, side))
    assert report.macs_before == full_macs and report.macs_after == macs
    assert macs <= 0.5 * full_macs
    assert macs >= 0.3 * full_macs, "a 0.5 target must not collapse the model"
    assert report.params_after < report.params_before
    for k, v in model.state_dict().items():  # the input model is not changed
        assert torch.equal(v, before[k]), k
    # trains a step
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.01)
    x, y = torch.randn(4, 3, side, side), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(pruned(x), y).backward()
    assert all(p.grad is not None for p in pruned.parameters())
    opt.step()
    pruned.eval()
    # saves and reloads from its files alone
    path = smallnets.save_weights(pruned, tmp_path / "pruned.safetensors")
    again = smallnets.load_weights(path).eval()
    assert again.spec == pruned.spec != model.spec
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))


def test_shufflenet_v1_groups_still_divide_every_width():
    model = _model("shufflenet_v1", {"groups": 3, "width_mult": 0.5, "cifar": True})
    pruned, _ = prune(model, target_macs=0.6, input_size=(3, 32, 32))
    changed = 0
    for unit, old in zip(pruned.spec.units, model.spec.units):
        assert unit.mid_chs % unit.groups == 0 and unit.branch_out_chs % unit.groups == 0
        changed += unit.mid_chs != old.mid_chs
    assert changed


def test_residual_streams_keep_equal_widths_and_shortcuts():
    model = _model("mobilenet_v2", {"width_mult": 0.5, "cifar": True})
    pruned, _ = prune(model, ratio=0.4, input_size=(3, 32, 32))
    for new, old in zip(pruned.spec.blocks, model.spec.blocks):
        assert new.shortcut == old.shortcut and new.stride == old.stride and new.kernel == old.kernel
        if new.shortcut:
            assert new.in_chs == new.out_chs
    assert sum(b.hidden_chs for b in pruned.spec.blocks) < sum(b.hidden_chs for b in model.spec.blocks)


def test_global_scope_prunes_layers_unevenly_and_per_layer_evenly():
    model = _model("mobilenet_v1", {"width_mult": 0.5, "cifar": True})
    with torch.no_grad():  # half the filters of one layer are far weaker than their neighbours
        model.stages[2][0].pw.conv.weight[::2].mul_(0.01)
    glob, _ = prune(model, ratio=0.3, scope="global", input_size=(3, 32, 32))
    per, _ = prune(model, ratio=0.3, scope="per_layer", input_size=(3, 32, 32))
    fractions = [new.out_chs / old.out_chs for new, old in zip(per.spec.blocks, model.spec.blocks)]
    assert max(fractions) - min(fractions) <= 0.05
    weak = [i for i, b in enumerate(model.spec.blocks) if b is model.spec.stages[2][0]][0]
    old = model.spec.blocks[weak].out_chs
    assert glob.spec.blocks[weak].out_chs <= old // 2 < per.spec.blocks[weak].out_chs  # global takes all the weak ones


def test_global_max_ratio_caps_each_channel_space_and_per_layer_is_the_default():
    model = _model("mobilenet_v1", {"width_mult": 0.5, "cifar": True})
    with torch.no_grad():
        model.stages[2][0].pw.conv.weight[::2].mul_(0.01)
    weak = [i for i, b in enumerate(model.spec.blocks) if b is model.spec.stages[2][0]][0]
    old = model.spec.blocks[weak].out_chs
    capped, report = prune(model, target_macs=0.6, scope="global", max_ratio=0.25, input_size=(3, 32, 32))
    assert report.max_ratio == 0.25 and report.macs_ratio <= 0.6
    for new, before in zip(capped.spec.blocks, model.spec.blocks):  # no space lost more than a quarter
        assert new.out_chs >= before.out_chs - math.floor(0.25 * before.out_chs)
    assert capped.spec.blocks[weak].out_chs == old - math.floor(0.25 * old)  # the weak layer still goes first, up to the cap
    _, default = prune(model, target_macs=0.6, input_size=(3, 32, 32))
    assert default.scope == "per_layer" and default.to_dict()["max_ratio"] is None
    with pytest.raises(ValueError, match=r"removing at most max_ratio=0.05 of each channel space leaves .* got target_macs=0.3"):
        prune(model, target_macs=0.3, scope="global", max_ratio=0.05, input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"max_ratio caps global ranking; it needs scope='global', got scope='per_layer'"):
        prune(model, target_macs=0.5, max_ratio=0.5)
    with pytest.raises(ValueError, match=r"max_ratio must be a number in \(0, 1\], got 1.5"):
        prune(model, target_macs=0.5, scope="global", max_ratio=1.5)


def test_criteria_rank_by_what_they_say():
    from smallnets.compress.structured import unit_scores

    model = _model("mobilenet_v1", {"width_mult": 0.5, "cifar": True})
    graph = trace_channels(model, (3, 32, 32))
    layer = next(layer for layer in graph.layers if layer.name == "stages.0.0.pw.conv")
    dead = set(graph.unit_of[layer.out_ids[:4]].tolist())
    modules = dict(model.named_modules())
    with torch.no_grad():  # four channel groups every BatchNorm on them says are dead
        for norm in graph.norms:
            hit = torch.tensor([u in dead for u in graph.unit_of[norm.ids].tolist()])
            modules[norm.name].weight[hit] = 1e-3
    scores = unit_scores(graph, model, "bn_scale")
    assert dead == set(torch.argsort(scores)[:4].tolist())
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    taylor = unit_scores(graph, model, "taylor", data=data)
    assert taylor.shape == scores.shape and bool((taylor >= 0).all()) and not torch.equal(taylor, scores)
    pruned, report = prune(model, target_macs=0.6, criterion="taylor", data=data, input_size=(3, 32, 32))
    assert report.criterion == "taylor" and report.macs_ratio <= 0.6


def test_protect_keeps_a_layers_channels():
    model = _model("mobilenet_v2", {"width_mult": 0.5, "cifar": True})
    pruned, _ = prune(model, target_macs=0.5, protect=["stem", "stages.1.*"], input_size=(3, 32, 32))
    assert pruned.spec.stem.out_chs == model.spec.stem.out_chs
    for new, old in zip(pruned.spec.stages[1], model.spec.stages[1]):
        assert (new.in_chs, new.hidden_chs, new.out_chs) == (old.in_chs, old.hidden_chs, old.out_chs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_macs": 1.5}, "target_macs must be a number in (0, 1), got 1.5"),
        ({"ratio": 0.0}, "ratio must be a number in (0, 1), got 0.0"),
        ({"ratio": float("nan")}, "ratio must be a number in (0, 1), got nan"),
        ({}, "give exactly one of target_macs and ratio"),
        ({"ratio": 0.3, "target_macs": 0.5}, "give exactly one of target_macs and ratio"),
        ({"ratio": 0.3, "criterion": "l2"}, "criterion must be one of"),
        ({"ratio": 0.3, "scope": "local"}, "scope must be one of"),
        ({"ratio": 0.3, "protect": ["stemm"]}, "protect must name modules of the model"),
        ({"ratio": 0.3, "criterion": "taylor"}, "criterion 'taylor' needs data"),
        ({"target_macs": 0.001}, "target_macs must be reachable"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, message):
    model = _model("mobilenet_v1", {"width_mult": 0.25, "cifar": True})
    with pytest.raises(ValueError, match=None) as err:
        prune(model, input_size=(3, 32, 32), **kwargs)
    assert message in str(err.value)


def test_bn_scale_needs_batchnorm():
    model = _model("squeezenet1_1", {"cifar": True})
    with pytest.raises(ValueError, match="criterion 'bn_scale' scores channels by the scale of their BatchNorm"):
        prune(model, ratio=0.3, criterion="bn_scale", input_size=(3, 32, 32))


def test_unknown_ops_are_refused_not_guessed():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc((self.conv(x) * self.scale).mean((2, 3)))

    with pytest.raises(NotImplementedError, match="uses a parameter of ''"):
        trace_channels(Odd(), (3, 8, 8))


def test_multiple_of_rounds_each_channel_space_down():
    model = _model("mobilenet_v2", {"width_mult": 0.5, "cifar": True})
    plain, plain_report = prune(model, target_macs=0.6, input_size=(3, 32, 32))
    rounded, report = prune(model, target_macs=0.6, multiple_of=8, input_size=(3, 32, 32))
    assert report.macs_after <= plain_report.macs_after
    hidden = [b.hidden_chs for b in rounded.spec.blocks if b.expand]
    assert all(h % 8 == 0 for h in hidden) and hidden != [b.hidden_chs for b in plain.spec.blocks if b.expand]
    with pytest.raises(ValueError, match="multiple_of must be an integer >= 1, got 0"):
        prune(model, target_macs=0.6, multiple_of=0, input_size=(3, 32, 32))


def test_batchnorm_recalibration_measures_the_statistics_again():
    from smallnets.compress.structured import recalibrate_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.Dropout(0.5))
    batches = [(torch.randn(8, 3, 5, 5) * 3 + 1, torch.zeros(8)) for _ in range(4)]
    net[1].running_mean.fill_(100.0)
    net.eval()
    assert recalibrate_batchnorm(net, batches, max_batches=3) == 24
    with torch.no_grad():
        feats = torch.cat([net[0](x) for x, _ in batches[:3]])
    torch.testing.assert_close(net[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert net[1].momentum == 0.1 and not net.training
    with pytest.raises(ValueError, match="max_batches must be an integer >= 1, got 0"):
        recalibrate_batchnorm(net, batches, max_batches=0)


def test_the_public_names_are_importable_from_smallnets_compress():
    import importlib
    import subprocess
    import sys

    import smallnets.compress as compress

    assert compress.prune is prune
    for name in compress.__all__:  # each resolves to the function or class its submodule defines
        value = getattr(compress, name)
        assert value.__module__.startswith("smallnets.compress."), (name, value.__module__)
        assert getattr(importlib.import_module(value.__module__), name) is value
    with pytest.raises(AttributeError, match="has no attribute 'prunee'"):
        compress.prunee  # noqa: B018
    # reading a compressed file (checkpoint -> compress.packed) does not pull in the pruning tracer
    code = "import sys, smallnets.compress.packed; print('smallnets.compress.structured' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
