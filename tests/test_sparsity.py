"""Unstructured magnitude pruning (smallnets.compress.sparsity): exact counts, shared global
thresholds, protect / per-layer overrides, unchanged state-dict keys, the cubic schedule of Zhu &
Gupta 2017 (eq. 1) and gradual pruning inside a real SGD loop, resumed from the zeros alone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from smallnets import create_model
from smallnets.compress.sparsity import (
    GradualPruning,
    apply_masks,
    cubic_sparsity,
    magnitude_masks,
    prunable_weights,
    prune_magnitude,
    sparsity_report,
)


def tiny(seed: int = 0) -> nn.Sequential:
    """Conv, depthwise conv, pointwise conv and a classifier: every kind of prunable weight."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def mnv2() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mobilenet_v2", num_classes=10, width_mult=0.35, cifar=True)


def pruned_counts(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int((~m).sum()) for n, m in masks.items()}


# --------------------------------------------------------------------------------------------
# Which weights


def test_prunable_weights_are_conv_and_linear_weights_only():
    model = tiny()
    assert list(prunable_weights(model)) == ["0.weight", "3.weight", "6.weight", "10.weight"]
    assert list(prunable_weights(model, skip_depthwise=True)) == ["0.weight", "6.weight", "10.weight"]
    assert list(prunable_weights(model, include=("linear",))) == ["10.weight"]
    assert all(p is dict(model.named_parameters())[n] for n, p in prunable_weights(model).items())


def test_prunable_weights_of_a_zoo_model_cover_every_conv_and_linear(mnv2):
    names = prunable_weights(mnv2)
    expected = [f"{n}.weight" for n, m in mnv2.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(names) == expected
    assert not any(n.endswith("bias") or ".bn." in n for n in names)
    depthwise = [n for n, m in mnv2.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and not any(f"{n}.weight" in prunable_weights(mnv2, skip_depthwise=True) for n in depthwise)


@pytest.mark.parametrize("include", [(), ("conv", "lin"), "conv", ["linear", 3]])
def test_prunable_weights_refuse_bad_include(include):
    with pytest.raises((ValueError, TypeError), match="include"):
        prunable_weights(tiny(), include=include)


# --------------------------------------------------------------------------------------------
# One shot


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.95])
def test_global_prunes_the_exact_count(mnv2, sparsity):
    masks = magnitude_masks(mnv2, sparsity)
    weights = prunable_weights(mnv2)
    assert masks.keys() == weights.keys()
    assert all(m.dtype == torch.bool and m.shape == weights[n].shape for n, m in masks.items())
    total = sum(w.numel() for w in weights.values())
    assert sum(pruned_counts(masks).values()) == round(sparsity * total)


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.6, 0.9])
def test_per_layer_prunes_the_exact_count_in_every_layer(mnv2, sparsity):
    masks = magnitude_masks(mnv2, sparsity, scope="per_layer")
    weights = prunable_weights(mnv2)
    assert pruned_counts(masks) == {n: round(sparsity * w.numel()) for n, w in weights.items()}
    for name, mask in masks.items():  # within a layer the smallest go
        w = weights[name].detach().abs()
        if 0 < int((~mask).sum()) < w.numel():
            assert w[~mask].max() <= w[mask].min()


def test_global_threshold_is_shared_across_layers():
    model = tiny()
    with torch.no_grad():
        model[6].weight.mul_(10.0)  # a layer with larger weights
    masks = magnitude_masks(model, 0.5)
    weights = prunable_weights(model)
    pruned = torch.cat([weights[n].detach().abs()[~m] for n, m in masks.items()])
    kept = torch.cat([weights[n].detach().abs()[m] for n, m in masks.items()])
    assert pruned.max() <= kept.min()  # one threshold over all layers
    fraction = {n: int((~m).sum()) / m.numel() for n, m in masks.items()}
    assert fraction["6.weight"] < 0.5 < fraction["0.weight"]
    assert fraction["6.weight"] < min(v for n, v in fraction.items() if n != "6.weight")


def test_ties_are_broken_so_the_exact_count_goes():
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.Linear(5, 3, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # all tied
    masks = magnitude_masks(model, 0.4)
    assert sum(pruned_counts(masks).values()) == round(0.4 * 35)
    assert all(torch.equal(a, b) for a, b in zip(masks.values(), magnitude_masks(model, 0.4).values()))  # deterministic
    assert pruned_counts(masks) == {"0.weight": 14, "1.weight": 0}  # earlier positions go first


def test_already_zero_weights_count_as_pruned_first():
    model = tiny()
    with torch.no_grad():
        model[0].weight[:2] = 0  # 54 zeros
        model[10].weight[0] = 0  # 16 zeros
    weights = prunable_weights(model)
    zeros = {n: w == 0 for n, w in weights.items()}
    masks = magnitude_masks(model, 0.3)
    total = sum(w.numel() for w in weights.values())
    assert sum(pruned_counts(masks).values()) == round(0.3 * total)
    assert all(not masks[n][z].any() for n, z in zeros.items())  # every zero is among the pruned
    few = magnitude_masks(model, 10 / total)  # asks for fewer than the zeros: only zeros go
    assert all(not bool(weights[n][~m].any()) for n, m in few.items())


def test_protect_keeps_layers_whole_and_prunes_the_rest_exactly(mnv2):
    head = [n for n in prunable_weights(mnv2) if n.startswith("classifier")]
    stem = "stem.conv.weight"
    masks = magnitude_masks(mnv2, 0.5, protect=[stem, "classifier*"])
    assert head and all(bool(masks[n].all()) for n in [stem, *head])
    pool = [n for n in masks if n not in (stem, *head)]
    assert sum(pruned_counts(masks)[n] for n in pool) == round(0.5 * sum(masks[n].numel() for n in pool))


def test_layer_sparsity_overrides_one_layer(mnv2):
    names = list(prunable_weights(mnv2))
    target = names[3]
    masks = magnitude_masks(mnv2, 0.5, layer_sparsity={target: 0.1})
    assert pruned_counts(masks)[target] == round(0.1 * masks[target].numel())
    rest = [n for n in names if n != target]
    assert sum(pruned_counts(masks)[n] for n in rest) == round(0.5 * sum(masks[n].numel() for n in rest))
    per_layer = magnitude_masks(mnv2, 0.5, scope="per_layer", layer_sparsity={target: 0.8}, protect=[names[0]])
    assert pruned_counts(per_layer)[target] == round(0.8 * masks[target].numel())
    assert pruned_counts(per_layer)[names[0]] == 0


def test_unknown_names_are_refused_with_close_matches(mnv2):
    with pytest.raises(ValueError, match=r"protect must name .*got 'stem\.conv\.weigth'; did you mean 'stem\.conv\.weight'"):
        magnitude_masks(mnv2, 0.5, protect=["stem.conv.weigth"])
    with pytest.raises(ValueError, match=r"protect .*got 'head\*'"):
        magnitude_masks(mnv2, 0.5, protect=["head*"])
    with pytest.raises(ValueError, match=r"layer_sparsity must name .*did you mean 'classifier\.fc\.weight'"):
        magnitude_masks(mnv2, 0.5, layer_sparsity={"clasifier.fc.weight": 0.2})
    with pytest.raises(ValueError, match=r"layer_sparsity\['classifier\.fc\.weight'\] must be in \[0, 1\), got 1\.5"):
        magnitude_masks(mnv2, 0.5, layer_sparsity={"classifier.fc.weight": 1.5})
    with pytest.raises(ValueError, match="both"):
        magnitude_masks(mnv2, 0.5, layer_sparsity={"classifier.fc.weight": 0.2}, protect=["classifier.fc.weight"])
    with pytest.raises(TypeError, match="protect must be a sequence"):
        magnitude_masks(mnv2, 0.5, protect="classifier.fc.weight")


@pytest.mark.parametrize("bad", [1.0, 1.2, -0.1, float("nan"), float("inf"), True, "0.5", None])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity must be"):
        magnitude_masks(tiny(), bad)
    with pytest.raises(ValueError, match="sparsity must be"):
        prune_magnitude(tiny(), bad)


def test_error_messages_name_argument_rule_and_value():
    with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 1\), got 1\.2$"):
        magnitude_masks(tiny(), 1.2)
    with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 1\), got -0\.1$"):
        magnitude_masks(tiny(), -0.1)
    with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 1\), got 1\.0$"):
        magnitude_masks(tiny(), 1.0)
    with pytest.raises(ValueError, match="sparsity must be a finite number, got nan"):
        magnitude_masks(tiny(), float("nan"))
    with pytest.raises(ValueError, match=r"scope must be one of 'global', 'per_layer'; got 'perlayer'; did you mean 'per_layer'"):
        magnitude_masks(tiny(), 0.5, scope="perlayer")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        magnitude_masks({"w": torch.ones(3)}, 0.5)
    with pytest.raises(ValueError, match="model must have prunable weights"):
        magnitude_masks(nn.Sequential(nn.ReLU()), 0.5)
    model = tiny()
    with torch.no_grad():
        model[6].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite.*'6.weight'"):
        magnitude_masks(model, 0.5)


def test_prune_magnitude_copies_by_default_and_keeps_the_state_dict_format(mnv2):
    before = {k: v.clone() for k, v in mnv2.state_dict().items()}
    pruned, report = prune_magnitude(mnv2, 0.6)
    assert pruned is not mnv2
    assert all(torch.equal(before[k], v) for k, v in mnv2.state_dict().items())  # the input is unchanged
    assert list(pruned.state_dict()) == list(before)  # same keys, same order
    assert all(pruned.state_dict()[k].shape == v.shape and pruned.state_dict()[k].dtype == v.dtype for k, v in before.items())
    assert not any(parametrize.is_parametrized(m) for m in pruned.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in pruned.modules())
    assert all(type(p) is nn.Parameter for p in pruned.parameters())
    total = sum(w.numel() for w in prunable_weights(mnv2).values())
    assert report["total"]["zeros"] == round(0.6 * total) and report["total"]["weights"] == total
    assert report["pruning"]["sparsity"] == 0.6 and report["pruning"]["scope"] == "global"
    for k, v in pruned.state_dict().items():  # only prunable weights changed, and only to zero
        if k not in report["layers"]:
            assert torch.equal(v, before[k])
        else:
            assert torch.equal(v[v != before[k]], torch.zeros_like(v[v != before[k]]))
    again, _ = prune_magnitude(pruned, 0.6, inplace=True)
    assert again is pruned


def test_apply_masks_zeros_in_place_and_validates():
    model = tiny()
    masks = magnitude_masks(model, 0.5, scope="per_layer")
    weight = model[0].weight
    apply_masks(model, masks)
    assert model[0].weight is weight  # same Parameter, edited in place
    assert all(bool((w[~masks[n]] == 0).all()) and bool((w[masks[n]] != 0).all()) for n, w in prunable_weights(model).items())
    with pytest.raises(ValueError, match=r"masks must name .*got '0\.wieght'; did you mean '0\.weight'"):
        apply_masks(model, {"0.wieght": masks["0.weight"]})
    with pytest.raises(ValueError, match=r"masks\['0\.weight'\] must have the weight's shape"):
        apply_masks(model, {"0.weight": masks["0.weight"][:1]})
    with pytest.raises(TypeError, match=r"masks\['0\.weight'\] must be a boolean tensor"):
        apply_masks(model, {"0.weight": masks["0.weight"].float()})


def test_sparsity_report_counts_zeros_and_skipped_macs():
    model = tiny()
    masks = magnitude_masks(model, 0.5, scope="per_layer")
    report = sparsity_report(model, masks, input_size=(3, 6, 6))  # masks counted without applying them
    assert all(bool((w != 0).all()) for w in prunable_weights(model).values())
    layers = report["layers"]
    assert {n: r["zeros"] for n, r in layers.items()} == pruned_counts(masks)
    # MACs per weight: a conv's output H*W (6*6 here, padding keeps it), a linear layer's 1
    assert {n: r["macs"] for n, r in layers.items()} == {"0.weight": 216 * 36, "3.weight": 72 * 36, "6.weight": 128 * 36, "10.weight": 160}
    assert layers["3.weight"]["kind"] == "depthwise3x3" and layers["10.weight"]["kind"] == "fc"
    skipped = 108 * 36 + 36 * 36 + 64 * 36 + 80
    assert report["total"]["macs_skipped"] == skipped
    assert report["total"]["macs_skipped_fraction"] == pytest.approx(skipped / (416 * 36 + 160))
    assert report["total"]["sparsity"] == pytest.approx(288 / 576)
    plain = sparsity_report(model)
    assert plain["total"]["zeros"] == 0 and plain["total"]["macs"] is None
    apply_masks(model, masks)
    applied = sparsity_report(model, macs_per_weight={"0.weight": 36, "3.weight": 36, "6.weight": 36, "10.weight": 1})
    assert applied["total"]["zeros"] == 288 and applied["total"]["macs_skipped"] == skipped
    with pytest.raises(ValueError, match="macs_per_weight must cover every prunable weight"):
        sparsity_report(model, macs_per_weight={"0.weight": 36})
    with pytest.raises(ValueError, match="input_size and macs_per_weight must not both be given"):
        sparsity_report(model, input_size=(3, 6, 6), macs_per_weight={"0.weight": 36})


def test_sparsity_report_of_a_zoo_model(mnv2):
    pruned, report = prune_magnitude(mnv2, 0.5, scope="per_layer", input_size=(3, 32, 32))
    assert report["total"]["macs"] == sum(r["macs"] for r in report["layers"].values())
    from smallnets import count_macs

    assert report["total"]["macs"] == count_macs(mnv2, (3, 32, 32))
    assert 0.4 < report["total"]["macs_skipped_fraction"] < 0.6
    assert report["input_size"] == [3, 32, 32] and "macs" in report["macs_convention"]


# --------------------------------------------------------------------------------------------
# Cubic schedule (Zhu & Gupta 2017, eq. 1)


def paper(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3


def test_cubic_schedule_matches_the_formula_at_its_knots_and_holds_between():
    s_i, s_f, t0, n, dt = 0.1, 0.9, 20, 8, 10
    kw = dict(initial=s_i, final=s_f, begin_step=t0, end_step=t0 + n * dt, frequency=dt)
    for k in range(n + 1):
        knot = t0 + k * dt
        assert cubic_sparsity(knot, **kw) == pytest.approx(paper(knot, s_i, s_f, t0, n, dt), abs=1e-12)
        if k < n:
            assert all(cubic_sparsity(t, **kw) == cubic_sparsity(knot, **kw) for t in range(knot, knot + dt))
    assert cubic_sparsity(t0 + n * dt, **kw) == s_f
    assert all(cubic_sparsity(t, **kw) == s_i for t in range(t0))
    assert all(cubic_sparsity(t, **kw) == s_f for t in range(t0 + n * dt, t0 + n * dt + 50))
    values = [cubic_sparsity(t, **kw) for t in range(200)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    steps = [b - a for a, b in zip(values[t0::dt], values[t0 + dt :: dt])]  # prunes fastest early
    assert all(a >= b for a, b in zip(steps, steps[1:]))


def test_cubic_schedule_with_a_short_last_interval():
    kw = dict(final=0.8, begin_step=0, end_step=25, frequency=10)
    assert [cubic_sparsity(t, **kw) for t in (0, 9, 10, 19, 20, 24, 25)] == pytest.approx(
        [0.0, 0.0, 0.8 * (1 - 0.6**3), 0.8 * (1 - 0.6**3), 0.8 * (1 - 0.2**3), 0.8 * (1 - 0.2**3), 0.8]
    )


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(step=-1), "step must be an integer >= 0"),
        (dict(step=1.5), "step must be an integer >= 0"),
        (dict(final=1.0), r"final must be in \[0, 1\), got 1.0"),
        (dict(initial=0.95), "initial must be <= final"),
        (dict(end_step=10), "end_step must be an integer > begin_step=10, got 10"),
        (dict(frequency=0), "frequency must be an integer >= 1, got 0"),
        (dict(begin_step=-5), "begin_step must be an integer >= 0"),
    ],
)
def test_cubic_schedule_refuses_bad_arguments(kw, match):
    args = dict(step=0, final=0.9, begin_step=10, end_step=100, frequency=10) | kw
    step = args.pop("step")
    with pytest.raises(ValueError, match=match):
        cubic_sparsity(step, **args)


# --------------------------------------------------------------------------------------------
# Gradual pruning in a real training loop


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def train(model, hook, data, steps, *, check):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in steps:
        x, y = data[step]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        hook.after_backward(model, step)
        opt.step()
        hook.after_step(model, step)
        check(step)


def zeros(model) -> int:
    return sum(int((w == 0).sum()) for w in prunable_weights(model).values())


def test_gradual_pruning_reaches_the_final_sparsity_and_keeps_pruned_weights_zero():
    model, data, total_steps = tiny(), batches(24), 24
    total = sum(w.numel() for w in prunable_weights(model).values())
    hook = GradualPruning(0.8, begin=0.125, end=0.75, frequency=4)  # steps 3 .. 18
    hook.start(model, total_steps)
    assert (hook.begin_step, hook.end_step) == (3, 18)
    seen: list[dict[str, torch.Tensor]] = []

    def check(step):
        weights = prunable_weights(model)
        masks = hook.masks
        assert all(bool((w[~masks[n]] == 0).all()) for n, w in weights.items())  # exactly zero, every step
        for earlier in seen:  # masks only grow; what was pruned is still zero
            assert all(bool((weights[n][~m] == 0).all()) and not bool((masks[n] & ~m).any()) for n, m in earlier.items())
        scheduled = hook.sparsity_at(step + 1)
        assert scheduled == cubic_sparsity(step + 1, final=0.8, begin_step=3, end_step=18, frequency=4)
        assert sum(int((~m).sum()) for m in masks.values()) == round(scheduled * total)
        assert zeros(model) == round(scheduled * total)
        seen.append(masks)

    train(model, hook, data, range(total_steps), check=check)
    assert zeros(model) == round(0.8 * total)
    assert sparsity_report(model)["total"]["sparsity"] == pytest.approx(round(0.8 * total) / total)
    described = hook.describe()
    assert described["sparsity"] == 0.8 and described["pruned"] == round(0.8 * total) and described["weights"] == total
    assert described["begin_step"] == 3 and described["end_step"] == 18 and described["frequency"] == 4


def test_gradual_pruning_zeroes_the_gradients_of_pruned_weights():
    model = tiny()
    apply_masks(model, magnitude_masks(model, 0.5))
    hook = GradualPruning(0.5, initial_sparsity=0.5, begin=0, end=10, frequency=5)  # int steps: no start needed
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    hook.after_backward(model, 0)
    for name, w in prunable_weights(model).items():
        assert bool((w.grad[w == 0] == 0).all())
        assert bool((w.grad[w != 0] != 0).any())


def test_gradual_pruning_resumes_from_the_zeros_alone():
    data, total_steps = batches(24), 24
    settings = dict(initial_sparsity=0.2, begin=0.0, end=0.75, frequency=3, scope="per_layer", protect=["10.weight"])
    straight = tiny()
    hook = GradualPruning(0.7, **settings)
    hook.start(straight, total_steps)
    train(straight, hook, data, range(total_steps), check=lambda step: None)

    model = tiny()
    first = GradualPruning(0.7, **settings)
    first.start(model, total_steps)
    train(model, first, data, range(10), check=lambda step: None)  # "checkpoint" after 10 steps, between knots
    checkpoint = {k: v.clone() for k, v in model.state_dict().items()}
    resumed = tiny(seed=5)
    resumed.load_state_dict(checkpoint)
    pruned_at_checkpoint = {n: w == 0 for n, w in prunable_weights(resumed).items()}
    second = GradualPruning(0.7, **settings)  # a new object: nothing carried but the weights
    second.start(resumed, total_steps)
    assert pruned_counts(second.masks) == {n: int(z.sum()) for n, z in pruned_at_checkpoint.items()}

    def check(step):
        weights = prunable_weights(resumed)
        assert all(bool((weights[n][z] == 0).all()) for n, z in pruned_at_checkpoint.items())

    train(resumed, second, data, range(10, total_steps), check=check)
    weights = prunable_weights(resumed)
    assert bool((weights["10.weight"] != 0).all())  # protected
    for name, w in weights.items():
        if name != "10.weight":
            assert int((w == 0).sum()) == round(0.7 * w.numel())
    # the momentum buffer was lost on resume, so weights differ a little, but the zeros do not
    assert {n: int((w == 0).sum()) for n, w in weights.items()} == {n: int((w == 0).sum()) for n, w in prunable_weights(straight).items()}


def test_gradual_pruning_on_a_zoo_model_in_place():
    model = create_model("mobilenet_v2", num_classes=10, width_mult=0.35, cifar=True)
    keys = list(model.state_dict())
    hook = GradualPruning(0.5, begin=0, end=4, frequency=2, skip_depthwise=True)
    hook.start(model, 4)
    for step in range(4):  # the schedule alone, without training
        hook.after_step(model, step)
    weights = prunable_weights(model, skip_depthwise=True)
    assert zeros(model) == round(0.5 * sum(w.numel() for w in weights.values()))
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(final_sparsity=1.0), r"final_sparsity must be in \[0, 1\), got 1.0"),
        (dict(final_sparsity=float("nan")), "final_sparsity must be a finite number"),
        (dict(initial_sparsity=-0.1), r"initial_sparsity must be in \[0, 1\), got -0.1"),
        (dict(initial_sparsity=0.95), "initial_sparsity must be <= final_sparsity"),
        (dict(begin=1.5), r"begin must be a fraction of the total steps \(a float in \[0, 1\]\) or a step"),
        (dict(end=-3), "end must be a fraction"),
        (dict(begin=0.8, end=0.5), "end must be after begin"),
        (dict(frequency=0), "frequency must be an integer >= 1, got 0"),
        (dict(frequency=2.5), "frequency must be an integer >= 1, got 2.5"),
        (dict(scope="layer"), "scope must be one of 'global', 'per_layer'"),
        (dict(protect="fc"), "protect must be a sequence"),
    ],
)
def test_gradual_pruning_refuses_bad_arguments(kw, match):
    args = dict(final_sparsity=0.9) | kw
    with pytest.raises((ValueError, TypeError), match=match):
        GradualPruning(args.pop("final_sparsity"), **args)


def test_gradual_pruning_refuses_bad_calls():
    model = tiny()
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1, got 0"):
        GradualPruning(0.5).start(model, 0)
    with pytest.raises(ValueError, match=r"end must be within total_steps=10 .*got end=20"):
        GradualPruning(0.5, begin=0, end=20).start(model, 10)
    with pytest.raises(ValueError, match=r"end must be after begin, got begin=0.5 \(step 1\) and end=0.6 \(step 1\)"):
        GradualPruning(0.5, begin=0.5, end=0.6).start(model, 2)
    with pytest.raises(ValueError, match=r"call start\(model, total_steps\) first"):
        GradualPruning(0.5).after_step(model, 0)
    with pytest.raises(ValueError, match=r"protect must name .*did you mean '10\.weight'"):
        GradualPruning(0.5, protect=["10.weigth"]).start(model, 10)
    hook = GradualPruning(0.5, begin=0, end=4)
    hook.start(model, 10)
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        hook.after_step(model, -1)
    with pytest.raises(ValueError, match="model must have the prunable weights it had at start"):
        hook.after_step(nn.Sequential(model), 0)
    assert math.isclose(hook.describe()["final_sparsity"], 0.5)
