"""Shared layers: the switchable fp32 detour for strided depthwise convs, TF "SAME" padding, channel shuffle in either memory format."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import smallnets
from smallnets.fast_cpu import fp32_strided_depthwise
from smallnets.layers import ConvNormAct, channel_shuffle


def _grads(conv: torch.nn.Conv2d, x0: torch.Tensor, gy: torch.Tensor, *, autocast: bool, plain: bool = False):
    x = x0.clone().requires_grad_()
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if plain:
            y = conv(x)
        else:
            with fp32_strided_depthwise():
                y = conv(x)
    y.backward(gy.to(y.dtype))
    return y.detach(), x.grad, conv.weight.grad.clone()


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_depthwise_under_bf16_autocast_is_at_least_as_accurate_as_the_plain_path(channels_last):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False)
    x0 = torch.randn(4, 16, 12, 12)
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    gy = torch.randn(4, 16, 6, 6)
    ref = _grads(conv, x0, gy, autocast=False)
    fast = _grads(conv, x0, gy, autocast=True)
    plain = _grads(conv, x0, gy, autocast=True, plain=True)
    assert fast[0].dtype == plain[0].dtype == torch.bfloat16  # hands autocast's dtype on
    # the fp32 detour runs channels-last inside, but the output and the input's gradient keep the
    # input's layout (a mixed-layout gradient slows every backward kernel before it)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert fast[0].is_contiguous(memory_format=fmt) and fast[1].is_contiguous(memory_format=fmt)
    assert fast[1].dtype == x0.dtype
    for i in range(3):
        err_fast = float((fast[i].float() - ref[i].float()).norm() / ref[i].float().norm())
        err_plain = float((plain[i].float() - ref[i].float()).norm() / ref[i].float().norm())
        assert err_fast < 5e-3 and err_fast <= err_plain * 1.01
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference keeps the plain (fast) path
        plain_y = conv(x0)
        with fp32_strided_depthwise():
            assert torch.equal(conv(x0), plain_y)


def test_every_model_is_made_of_plain_convolutions():
    # quantization and export tools match exact module types (type(m) is nn.Conv2d)
    for name in ("mobilenet_v2", "efficientnet_b0", "shufflenet_v2", "squeezenet1_1", "densenet121", "xception"):
        with torch.device("meta"):
            model = smallnets.create_model(name)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(type(m) is torch.nn.Conv2d for m in convs), name


def test_the_detour_touches_only_strided_depthwise_convs():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    for conv in (torch.nn.Conv2d(8, 8, 3, 1, 1, groups=8), torch.nn.Conv2d(8, 8, 3, 2, 1), torch.nn.Conv2d(8, 16, 1)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = conv(x)
            with fp32_strided_depthwise():
                detour = conv(x)
        assert torch.equal(plain, detour)


@pytest.mark.parametrize("size", [7, 8, 224, 225])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_padding_matches_tensorflow(size, kernel):
    torch.manual_seed(0)
    unit = ConvNormAct(3, 4, kernel, 2, padding="same", norm=None, act=None)
    conv = unit.conv
    x = torch.randn(1, 3, size, size)
    # TensorFlow: out = ceil(in / stride); pad_total = max((out - 1) * stride + k - in, 0), odd pixel after
    out = -(-size // 2)
    total = max((out - 1) * 2 + kernel - size, 0)
    expected = F.conv2d(F.pad(x, [total // 2, total - total // 2] * 2), conv.weight, conv.bias, stride=2)
    y = unit(x)
    assert y.shape[-1] == out and torch.allclose(y, expected, atol=1e-6)
    assert ConvNormAct(3, 4, 3, 1, padding="same").conv.padding == (1, 1)  # stride 1: plain symmetric padding
    assert not hasattr(ConvNormAct(3, 4, 3, 1, padding="same"), "pad")
    assert set(unit.state_dict()) == {"conv.weight", "conv.bias"}  # the pad part has no parameters: keys unchanged


def test_tf_efficientnet_differs_only_in_padding():
    torch.manual_seed(0)
    a = smallnets.create_model("efficientnet_b0", num_classes=10).eval()
    b = smallnets.create_model("efficientnet_b0", num_classes=10, same_padding=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert a(x).shape == b(x).shape
        sa, sb = a.stem(x), b.stem(x)  # the stride-2 stem pads (0, 1) instead of (1, 1): shifted by a pixel
        assert sa.shape == sb.shape and float((sa - sb).norm() / sa.norm()) > 0.1


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_is_the_same_permutation_in_either_memory_format(groups):
    x = torch.randn(2, 12, 5, 4)
    a = channel_shuffle(x, groups)
    b = channel_shuffle(x.contiguous(memory_format=torch.channels_last), groups)
    assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)
    # channel j of the output is channel (j % groups) * (c / groups) + j // groups of the input
    c = 12
    assert all(torch.equal(a[:, j], x[:, (j % groups) * (c // groups) + j // groups]) for j in range(c))


def test_mobilenet_v1_head_chs_adds_a_conv_head():
    base = smallnets.create_model("mobilenet_v1")
    headed = smallnets.create_model("mobilenet_v1", head_chs=1024)
    extra = sum(p.numel() for p in headed.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == 1024 * 1024 + 2 * 1024  # 1x1 conv without bias, BN scale and shift
    with pytest.raises(ValueError, match="head_chs"):
        smallnets.create_model("mobilenet_v1", head_chs=0)


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2", "densenet121", "efficientnet_b0"])
def test_stage_feature_maps_with_channels_and_strides(name):
    model = smallnets.create_model(name).eval()
    info = model.feature_info()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        maps = model.forward_stages(x)
        features = model.forward_features(x)
    assert len(info) == len(maps) == len(model.stages)
    for spec, fmap in zip(info, maps):
        assert fmap.shape[1] == spec["channels"] and 96 // fmap.shape[-1] == spec["stride"]
    assert [s["stride"] for s in info] == sorted(s["stride"] for s in info) and info[-1]["stride"] == 32
    with torch.no_grad():  # the last stage feeds the neck: forward_features is neck(last map)
        assert torch.allclose(model.neck(maps[-1]), features)


def test_the_trainer_runs_strided_depthwise_convs_in_fp32_unless_switched_off(tmp_path):
    from PIL import Image
    from torch.overrides import TorchFunctionMode

    from smallnets.training import RunConfig, Trainer
    from smallnets.training.config import TrainConfig

    assert TrainConfig().fp32_strided_depthwise is True

    class Observer(TorchFunctionMode):  # outside the trainer's mode: sees the convolutions it finally runs
        def __init__(self):
            super().__init__()
            self.autocast = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.conv2d and torch.is_grad_enabled():
                call = {**dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args)), **(kwargs or {})}
                depthwise = call["input"].shape[1] == call.get("groups", 1) > 1
                if depthwise and call.get("stride", 1) not in (1, (1, 1)):
                    self.autocast.append(torch.is_autocast_enabled("cpu"))
            return func(*args, **(kwargs or {}))

    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (100 * (c == "a"), 10 * i, 50)).save(tmp_path / "d" / c / f"{i}.png")
    for switch in (True, False):
        cfg = RunConfig.from_dict({"model": {"name": "mobilenet_v2", "width_mult": 0.35, "cifar": True},
                                   "data": {"path": str(tmp_path / "d"), "batch_size": 4, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "c")},
                                   "train": {"epochs": 1, "precision": "bf16", "progress": False, "out": str(tmp_path / "runs"), "name": f"s{switch}",
                                             "fp32_strided_depthwise": switch}})  # fmt: skip
        trainer = Trainer(cfg)
        with Observer() as seen:
            trainer.fit(max_steps=1)
        # switched on, every strided depthwise conv of the training forward ran outside bf16 autocast (in fp32)
        assert seen.autocast and all(not a for a in seen.autocast) == switch and (switch or all(seen.autocast)), (switch, seen.autocast)
