"""CPU bf16 training speed: strided depthwise convolutions computed in fp32 (a switchable detour).

Under CPU bf16 autocast, oneDNN's backward pass of a *strided depthwise* convolution is 5-15x
slower than in fp32 (about 20 ms for any size at batch 128, measured on this project's 2-core
EPYC; ``benchmarks/train_throughput.py``). Inside ``fp32_strided_depthwise()`` every such
convolution that needs a gradient runs in fp32, channels-last (oneDNN's strided depthwise kernels
run 2-3x faster so; the dtype casts copy anyway), and hands a bf16 result back in the input's
layout, as autocast would have. Models stay plain ``nn.Conv2d``: the detour is a
``TorchFunctionMode`` around the training forward, which the trainer turns on
(``TrainConfig.fp32_strided_depthwise``) and anyone can turn off or use elsewhere.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from smallnets.layers import memory_format


class _Recast(torch.autograd.Function):
    """``x.to(dtype, memory_format=fmt)`` whose gradient comes back in ``x``'s dtype *and layout*.

    (Autograd's own ``to`` backward keeps the gradient's layout, so a channels-last detour would
    send a channels-last gradient into NCHW layers, whose backward kernels then run several times
    slower on mixed layouts.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dtype: torch.dtype, fmt: torch.memory_format) -> torch.Tensor:
        ctx.dtype, ctx.fmt = x.dtype, memory_format(x)
        return x.to(dtype, memory_format=fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.to(ctx.dtype, memory_format=ctx.fmt), None, None


_CONV2D_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _is_strided_depthwise(call: dict) -> bool:
    x, weight, groups, stride = call["input"], call["weight"], call.get("groups", 1), call.get("stride", 1)
    strided = any(s != 1 for s in stride) if isinstance(stride, (tuple, list)) else stride != 1
    return x.device.type == "cpu" and groups > 1 and weight.shape[1] == 1 and groups == x.shape[1] and strided


class fp32_strided_depthwise(TorchFunctionMode):  # noqa: N801  (used as a context manager, like torch.no_grad)
    """``with fp32_strided_depthwise(): loss = model(x)...``: see the module docstring. Outside CPU
    bf16 autocast, or without gradients, it changes nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            call = {**dict(zip(_CONV2D_ARGS, args)), **kwargs}
            if _is_strided_depthwise(call):
                x, bias = call["input"], call.get("bias")
                with torch.autocast("cpu", enabled=False):
                    y = F.conv2d(**{**call, "input": _Recast.apply(x, torch.float32, torch.channels_last), "weight": call["weight"].float(),
                                    "bias": None if bias is None else bias.float()})  # fmt: skip
                return _Recast.apply(y, torch.bfloat16, memory_format(x))
        return func(*args, **kwargs)
