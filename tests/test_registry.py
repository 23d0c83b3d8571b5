"""Registry behaviour: names, metadata, knob validation and the errors users see."""

from __future__ import annotations

import pytest
import torch

import smallnets
from smallnets.arch.spec import Entry
from smallnets.registry import Published, add_entry


def test_list_models_patterns():
    names = smallnets.list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    assert smallnets.list_models("mobilenet*") == [n for n in names if n.startswith("mobilenet")]
    assert "efficientnet_b3" in smallnets.list_models("efficientnet")  # bare words match anywhere
    assert smallnets.list_models("no_such_family*") == []


def test_model_info_metadata():
    info = smallnets.model_info("efficientnet_b3")
    assert info.family == "efficientnet"
    assert info.input_size == (3, 300, 300)
    assert "1905.11946" in info.paper
    pub = info.published_for()
    assert pub is not None and pub.top1 == pytest.approx(81.6)
    with pytest.raises(TypeError):
        info.knobs["x"] = 1  # metadata is read-only


def test_published_for_knob_variants():
    info = smallnets.model_info("mobilenet_v1")
    assert info.published_for().top1 == pytest.approx(70.6)
    assert info.published_for({"width_mult": 0.5}).top1 == pytest.approx(63.7)
    assert info.published_for({}, (3, 160, 160)).top1 == pytest.approx(67.2)
    assert info.published_for({"width_mult": 0.6}) is None


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"model name .*'mobilenet_v3'.*did you mean") as err:
        smallnets.create_model("mobilenet_v3")
    assert "'mobilenet_v1'" in str(err.value) and "'mobilenet_v2'" in str(err.value)
    with pytest.raises(ValueError, match="model name"):
        smallnets.model_info("resnet5000")


def test_unknown_knob_names_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown knob 'widht_mult' for mobilenet_v2; did you mean 'width_mult'"):
        smallnets.create_model("mobilenet_v2", widht_mult=0.5)


def test_fixed_knob_is_refused():
    with pytest.raises(ValueError, match=r"efficientnet_b3 fixes width_mult"):
        smallnets.create_model("efficientnet_b3", width_mult=2.0)


@pytest.mark.parametrize(
    "name, knobs, words",
    [
        ("mobilenet_v1", {"width_mult": -0.5}, "width_mult must be > 0, got -0.5"),
        ("mobilenet_v2", {"width_mult": 0}, "width_mult must be > 0, got 0"),
        ("mobilenet_v2", {"depth_mult": 0}, "depth_mult"),
        ("efficientnet", {"width_mult": -1.0}, "width_mult"),
        ("shufflenet_v1", {"groups": 5}, "groups"),
        ("shufflenet_v2", {"width_mult": 0.75}, "width_mult"),
        ("squeezenet1_0", {"bypass": "complx"}, "bypass"),
        ("squeezenet", {"squeeze_ratio": 0}, "squeeze_ratio"),
        ("densenet_cifar", {"depth": 41}, "depth"),
        ("densenet121", {"growth_rate": 0}, "growth_rate"),
    ],
)
def test_bad_knobs_name_argument_and_value(name, knobs, words):
    with pytest.raises(ValueError) as err:
        smallnets.create_model(name, **knobs)
    assert words in str(err.value)


@pytest.mark.parametrize("arg, value", [("num_classes", 0), ("num_classes", 2.5), ("in_chans", -1)])
def test_bad_common_args(arg, value):
    with pytest.raises(ValueError, match=f"{arg} must be an integer >= 1, got {value}"):
        smallnets.create_model("squeezenet1_1", **{arg: value})


def test_registry_refuses_duplicates_and_bad_builders():
    with pytest.raises(ValueError, match="already registered"):
        add_entry(Entry(name="mobilenet_v1", family="x", paper="y", spec=lambda num_classes=1, in_chans=3: None))
    with pytest.raises(TypeError, match="must accept 'in_chans'"):
        add_entry(Entry(name="tmp_no_in_chans", family="x", paper="y", spec=lambda num_classes=1: None))
    assert "tmp_no_in_chans" not in smallnets.list_models()


def test_create_model_does_not_mutate_knob_dict():
    knobs = {"width_mult": 0.5}
    with torch.device("meta"):
        smallnets.create_model("mobilenet_v1", **knobs)
    assert knobs == {"width_mult": 0.5}


def test_published_is_frozen():
    pub = Published(top1=1.0, source="x")
    with pytest.raises(AttributeError):
        pub.top1 = 2.0


def test_compound_scaling():
    s = smallnets.compound_scaling(1)
    assert s == pytest.approx((1.2, 1.1, 1.15))
    assert smallnets.compound_scaling(0) == (1.0, 1.0, 1.0)
    assert s.input_side(224) == 258
    # alpha * beta^2 * gamma^2 ~= 2: each unit of phi about doubles the mult-adds
    assert 1.2 * 1.1**2 * 1.15**2 == pytest.approx(1.92, abs=0.01)
    with pytest.raises(ValueError, match="alpha must be > 0, got 0"):
        smallnets.compound_scaling(1, alpha=0)


@pytest.mark.parametrize("value, divisor, expected", [(32 * 0.35, 8, 16), (1280 * 1.4, 8, 1792), (3, 8, 8), (20, 8, 24), (36, 8, 40), (12, 8, 16), (11.9, 8, 16), (4.0, 4, 4), (6, 8, 8)])
def test_make_divisible_edges(value, divisor, expected):
    assert smallnets.make_divisible(value, divisor) == expected
    assert expected % divisor == 0 and expected >= 0.9 * value


def test_round_repeats():
    assert smallnets.round_repeats(3, 1.0) == 3
    assert smallnets.round_repeats(3, 1.1) == 4  # ceil, as EfficientNet rounds depth
    assert smallnets.round_repeats(1, 3.1) == 4
    with pytest.raises(ValueError, match="depth_mult must be > 0"):
        smallnets.round_repeats(2, 0)


FLOAT_KNOBS = sorted(
    (name, knob)
    for name in smallnets.list_models()
    for knob, default in smallnets.model_info(name).knobs.items()
    if isinstance(default, float)
)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("name, knob", FLOAT_KNOBS)
def test_every_float_knob_refuses_non_finite_values(name, knob, value):
    # inf used to reach int(c * inf) and end in an OverflowError traceback; nan compared false
    with pytest.raises(ValueError, match=rf"{knob} must be a finite number, got {value!r}"):
        smallnets.create_model(name, **{knob: value})


def test_non_finite_scaling_arguments_are_refused():
    with pytest.raises(ValueError, match="must be a finite number, got inf"):
        smallnets.compound_scaling(float("inf"))
