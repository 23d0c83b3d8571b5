"""Cost profiler: parameters, mult-adds, model size, activation memory and measured latency.

Counting convention (the papers'): MACs are the multiply-accumulates of convolution and fully
connected layers only, for one image; BatchNorm, activations, pooling, elementwise adds and SE
rescales are not counted. FLOPs = 2 x MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MACS_CONVENTION = (
    "MACs = multiply-accumulates of conv and linear layers only, batch 1 (the papers' mult-adds); "
    "BatchNorm, activations, pooling, elementwise adds and SE rescales are not counted; FLOPs = 2 x MACs"
)


@dataclass(frozen=True)
class LayerCost:
    name: str  # module path in the model, e.g. "stages.3.0.pw.conv"
    kind: str  # conv1x1 / conv3x3 / depthwise3x3 / grouped1x1 / fc ...
    in_shape: tuple[int, ...]  # without the batch dimension
    out_shape: tuple[int, ...]
    weights: int  # weight elements only (no bias), as MobileNetV1 Table 2 counts
    params: int  # weights + bias
    macs: int


def layer_kind(module: nn.Module) -> str:
    """Classify a conv / linear layer the way the papers break costs down."""
    if isinstance(module, nn.Linear):
        return "fc"
    k = "x".join(str(s) for s in module.kernel_size)
    if module.groups == 1:
        return f"conv{k}"
    if module.groups == module.in_channels:
        return f"depthwise{k}"
    return f"grouped{k}"


def count_layers(model: nn.Module, input_size=(3, 224, 224)) -> list[LayerCost]:
    """Run one image of ``input_size`` through ``model`` (eval, no grad) and cost every conv / linear call."""
    records: list[LayerCost] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        batch = output.shape[0]
        per_output = module.weight[0].numel()  # (in / groups) * kernel area, or in_features
        weights = module.weight.numel()
        bias = module.bias.numel() if module.bias is not None else 0
        records.append(
            LayerCost(
                name=names[module],
                kind=layer_kind(module),
                in_shape=tuple(inputs[0].shape[1:]),
                out_shape=tuple(output.shape[1:]),
                weights=weights,
                params=weights + bias,
                macs=output.numel() // batch * per_output,
            )
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records


def count_params(model: nn.Module) -> int:
    """Trainable parameters (conv/linear weights and biases, BN affine; not BN running statistics)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size=(3, 224, 224)) -> int:
    return sum(r.macs for r in count_layers(model, input_size))
