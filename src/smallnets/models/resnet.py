"""ResNet and ResNeXt (He et al. 2016, arXiv:1512.03385; Xie et al. 2017, arXiv:1611.05431), built from the spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from smallnets.arch.residual_attention import ResidualAttentionSpec
from smallnets.arch.resnet import Basic, Bottleneck, ResNetSpec
from smallnets.layers import (
    ClassifierHead,
    ConvNormAct,
    SmallNet,
    init_weights,
    is_meta,
)

_ReLU = partial(nn.ReLU, inplace=True)


class PadShortcut(nn.Module):
    """Option A: the input subsampled at ``stride`` (the pixels a 1x1 conv at that stride would read), with
    ``extra`` zero channels appended ("extra zero entries padded for increasing dimensions"); no parameters."""

    def __init__(self, stride: int, extra: int):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, 1, self.stride) if self.stride > 1 else x  # a 1x1 window at the stride: plain subsampling
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra={self.extra}"


def _shortcut(block: Basic | Bottleneck) -> nn.Module:
    """The identity, option B's projection (1x1 conv at the block's stride + BN, no activation) or option A's padding."""
    if block.shortcut == "identity":
        return nn.Identity()
    if block.shortcut == "pad":
        return PadShortcut(block.stride, block.out_chs - block.in_chs)
    return ConvNormAct(block.in_chs, block.out_chs, 1, block.stride, act=None)


class BasicBlock(nn.Module):
    """Figure 2 left: 3x3 conv - BN - ReLU, 3x3 conv - BN, add the shortcut, ReLU.

    Parts in torchvision's registration order (conv1, bn1, conv2, bn2, downsample), so its state
    dicts pair module by module: ``conv1.conv``, ``conv1.bn``, ``conv2.*``, ``shortcut.*``.
    """

    def __init__(self, block: Basic):
        super().__init__()
        self.conv1 = ConvNormAct(block.in_chs, block.mid_chs, 3, block.stride, act=_ReLU)
        self.conv2 = ConvNormAct(block.mid_chs, block.out_chs, 3, act=None)
        self.shortcut = _shortcut(block)
        self.act = _ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """Figure 5 right (ResNeXt Figure 3(c) with ``groups``): 1x1 conv - BN - ReLU, 3x3 conv (grouped, at
    the block's stride: torchvision's V1.5) - BN - ReLU, 1x1 conv - BN, add the shortcut, ReLU."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = ConvNormAct(block.in_chs, block.reduce_chs, 1, act=_ReLU)
        self.conv2 = ConvNormAct(block.reduce_chs, block.spatial_chs, 3, block.stride, block.groups, act=_ReLU)
        self.conv3 = ConvNormAct(block.spatial_chs, block.out_chs, 1, act=None)
        self.shortcut = _shortcut(block)
        self.act = _ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def residual_stem(spec: ResNetSpec | ResidualAttentionSpec) -> nn.Sequential:
    """ImageNet: 7x7/2 conv - BN - ReLU - 3x3/2 max-pool (Table 1's conv1); CIFAR: 3x3/1 conv - BN - ReLU.
    Also the Residual Attention Network's (its Table 2's conv1 is the same)."""
    stem = nn.Sequential()
    if spec.stem == "cifar":
        stem.add_module("conv", nn.Conv2d(spec.in_chans, spec.stem_chs, 3, padding=1, bias=False))
    else:
        stem.add_module("conv", nn.Conv2d(spec.in_chans, spec.stem_chs, 7, stride=2, padding=3, bias=False))
    stem.add_module("bn", nn.BatchNorm2d(spec.stem_chs))
    stem.add_module("act", _ReLU())
    if spec.stem == "imagenet":
        stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
    return stem


class ResNet(SmallNet):
    """Stem, stages of residual blocks (ImageNet: torchvision's layer1 ... layer4), GAP, dropout, FC; no neck.

    Layer for layer torchvision's ``resnet*`` / ``resnext*``, as the spec describes it: its
    checkpoints convert key for key (``smallnets.pretrained``).
    """

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        self.stem = residual_stem(spec)
        self.stages = nn.Sequential(
            *(nn.Sequential(*(BasicBlock(b) if isinstance(b, Basic) else BottleneckBlock(b) for b in stage)) for stage in spec.stages)
        )
        self.neck = nn.Identity()
        self.num_features = spec.num_features
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)  # He-normal (fan-out) convs and unit BN, as torchvision initialises ResNets
        if spec.zero_init_residual and not is_meta(self):
            for block in self.stages.modules():
                if isinstance(block, BasicBlock):
                    nn.init.zeros_(block.conv2.bn.weight)
                elif isinstance(block, BottleneckBlock):
                    nn.init.zeros_(block.conv3.bn.weight)


def spec_for_shapes(spec: ResNetSpec, shapes: Mapping[str, tuple[int, ...]]) -> ResNetSpec:
    """``spec`` with the stem's and every block's widths read from the state-dict ``shapes`` (a pruned
    model's: each block may then have its own inner widths; a stage's blocks share its residual width)."""
    stages = []
    for i, stage in enumerate(spec.stages):
        blocks = []
        for j, block in enumerate(stage):
            key = f"stages.{i}.{j}."
            out1, in_chs = shapes[key + "conv1.conv.weight"][:2]
            if isinstance(block, Basic):
                blocks.append(replace(block, in_chs=in_chs, mid_chs=out1, out_chs=shapes[key + "conv2.conv.weight"][0]))
            else:
                spatial = shapes[key + "conv2.conv.weight"][0]
                # one channel per group (d = 1) is a depthwise conv: it keeps channels one by one, each its own group
                groups = out1 if block.groups == block.reduce_chs == block.spatial_chs else block.groups
                blocks.append(replace(block, in_chs=in_chs, reduce_chs=out1, spatial_chs=spatial, groups=groups,
                                      out_chs=shapes[key + "conv3.conv.weight"][0]))  # fmt: skip
        stages.append(tuple(blocks))
    return replace(spec, stem_chs=shapes["stem.conv.weight"][0], stages=tuple(stages))
