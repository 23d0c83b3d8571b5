"""What MobileNetV1/V2 and EfficientNet share: blocks built from their specs, and the network around them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import nn

from smallnets.arch.inverted import Inverted, Separable, _ConvNetSpec
from smallnets.layers import ClassifierHead, ConvNormAct, DropPath, ModuleFactory, SmallNet, SqueezeExcite

ACTIVATIONS: dict[str, ModuleFactory] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 Figure 3 (right): depthwise 3x3 - BN - act, then pointwise 1x1 - BN - act. No shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, *, act: ModuleFactory = nn.ReLU6, norm: ModuleFactory = nn.BatchNorm2d):
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, norm=norm, act=act)
        self.pw = ConvNormAct(in_chs, out_chs, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class InvertedBottleneck(nn.Module):
    """MobileNetV2's inverted bottleneck, EfficientNet's MBConv: [expand 1x1] -> depthwise kxk -> [SE] -> linear 1x1.

    Without an expansion (``Inverted.expand`` false) or SE (``se_chs == 0``) those parts are
    ``nn.Identity``. No shortcut: this is the block that changes stride or channels.
    """

    def __init__(self, block: Inverted, *, act: ModuleFactory = nn.ReLU6, norm: ModuleFactory = nn.BatchNorm2d, same_padding: bool = False):
        super().__init__()
        hidden = block.hidden_chs
        self.expand = ConvNormAct(block.in_chs, hidden, 1, norm=norm, act=act) if block.expand else nn.Identity()
        self.dw = ConvNormAct(hidden, hidden, block.kernel, block.stride, groups=hidden, norm=norm, act=act, padding="same" if same_padding else None)
        self.se = SqueezeExcite(hidden, block.se_chs, act=act) if block.se_chs else nn.Identity()
        self.project = ConvNormAct(hidden, block.out_chs, 1, norm=norm, act=None)  # linear bottleneck: no activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(self.expand(x))))


class InvertedResidual(InvertedBottleneck):
    """The inverted bottleneck with its identity shortcut (stride 1, same channels); DropPath on the branch."""

    def __init__(self, block: Inverted, *, drop_path: float = 0.0, **kwargs):
        super().__init__(block, **kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(super().forward(x))


class ConvNet(SmallNet):
    """Stem conv, stages of blocks, optional 1x1 neck conv, GAP, dropout, FC: built from a spec.

    Stochastic depth grows linearly with the global block index i (0-based) over all N blocks:
    ``p_i = drop_path_rate * i / N``, as the EfficientNet reference implementations do.
    """

    def __init__(self, spec: _ConvNetSpec, *, same_padding: bool = False):
        super().__init__()
        self.spec = spec
        act = ACTIVATIONS[spec.act]
        norm = functools.partial(nn.BatchNorm2d, eps=spec.bn_eps, momentum=spec.bn_momentum)
        pad = "same" if same_padding else None
        self.stem = ConvNormAct(spec.in_chans, spec.stem.out_chs, spec.stem.kernel, spec.stem.stride, norm=norm, act=act, padding=pad)
        total, index, stages = len(spec.blocks), 0, []
        for stage in spec.stages:
            blocks = []
            for b in stage:
                if isinstance(b, Separable):
                    if b.separable:
                        blocks.append(DepthwiseSeparable(b.in_chs, b.out_chs, b.stride, act=act, norm=norm))
                    else:  # MobileNetV1 Table 4's "Conv MobileNet": one full 3x3 conv per pair
                        blocks.append(ConvNormAct(b.in_chs, b.out_chs, 3, b.stride, norm=norm, act=act))
                elif b.shortcut:
                    blocks.append(InvertedResidual(b, drop_path=spec.drop_path_rate * index / total, act=act, norm=norm, same_padding=same_padding))
                else:
                    blocks.append(InvertedBottleneck(b, act=act, norm=norm, same_padding=same_padding))
                index += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.neck = ConvNormAct(spec.stages_chs, spec.neck_chs, 1, norm=norm, act=act) if spec.neck_chs is not None else nn.Identity()
        self.num_features = spec.num_features
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)


def spec_for_shapes(spec: _ConvNetSpec, shapes: Mapping[str, tuple[int, ...]]) -> _ConvNetSpec:
    """``spec`` with every width read from the state-dict ``shapes`` of a model of its structure (a
    pruned one): what stays is the structure (kinds, kernels, strides, shortcuts), what changes is
    each block's channel counts."""
    stem = replace(spec.stem, out_chs=shapes["stem.conv.weight"][0])
    stages = []
    for i, stage in enumerate(spec.stages):
        blocks = []
        for j, b in enumerate(stage):
            key = f"stages.{i}.{j}."
            if isinstance(b, Separable):
                if b.separable:
                    b = replace(b, in_chs=shapes[key + "dw.conv.weight"][0], out_chs=shapes[key + "pw.conv.weight"][0])
                else:
                    out_chs, in_chs = shapes[key + "conv.weight"][:2]
                    b = replace(b, in_chs=in_chs, out_chs=out_chs)
            else:
                hidden = shapes[key + "dw.conv.weight"][0]
                b = replace(b, in_chs=shapes[key + "expand.conv.weight"][1] if b.expand else hidden, hidden_chs=hidden,
                            out_chs=shapes[key + "project.conv.weight"][0], se_chs=shapes[key + "se.reduce.weight"][0] if b.se_chs else 0)  # fmt: skip
            blocks.append(b)
        stages.append(tuple(blocks))
    neck = shapes["neck.conv.weight"][0] if spec.neck_chs is not None else None
    return replace(spec, stem=stem, stages=tuple(stages), neck_chs=neck)
