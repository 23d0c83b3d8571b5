"""PyramidNet: residual units whose width grows a little at every unit (Han, Kim & Kim 2017, arXiv:1610.02915), built from its spec."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from smallnets.arch.pyramidnet import PyramidBasic, PyramidBottleneck, PyramidNetSpec
from smallnets.layers import ClassifierHead, ConvNormAct, SmallNet, init_weights

_ReLU = partial(nn.ReLU, inplace=True)


class ZeroPadChannels(nn.Module):
    """Append ``extra`` all-zero channels: the paper's zero-padded identity shortcut (Section 3.2, Figure 5(b))."""

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra={self.extra}"


def _shortcut(unit: PyramidBasic | PyramidBottleneck) -> nn.Sequential:
    """2x2 average pool where the unit downsamples, then zero channels up to the unit's width; no parameters."""
    shortcut = nn.Sequential()
    if unit.stride != 1:
        shortcut.add_module("pool", nn.AvgPool2d(2, stride=2, ceil_mode=True))
    if unit.out_chs != unit.in_chs:
        shortcut.add_module("pad", ZeroPadChannels(unit.out_chs - unit.in_chs))
    return shortcut


class PyramidalBasicUnit(nn.Module):
    """Figure 6(d): BN, 3x3 conv - BN - ReLU, 3x3 conv - BN, plus the zero-padded shortcut; no ReLU after the addition.

    Parts in the authors' registration order (bn1, conv1, bn2, conv2, bn3): keys ``bn.*``, ``conv1.conv``,
    ``conv1.bn``, ``conv2.conv``, ``conv2.bn``.
    """

    def __init__(self, unit: PyramidBasic):
        super().__init__()
        self.bn = nn.BatchNorm2d(unit.in_chs)
        self.conv1 = ConvNormAct(unit.in_chs, unit.mid_chs, 3, unit.stride, act=_ReLU)
        self.conv2 = ConvNormAct(unit.mid_chs, unit.out_chs, 3, act=None)
        self.shortcut = _shortcut(unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.bn(x))) + self.shortcut(x)


class PyramidalBottleneckUnit(nn.Module):
    """Figure 6(e): BN, 1x1 conv - BN - ReLU, 3x3 conv (at the unit's stride) - BN - ReLU, 1x1 conv (4x) - BN,
    plus the zero-padded shortcut; no ReLU after the addition."""

    def __init__(self, unit: PyramidBottleneck):
        super().__init__()
        self.bn = nn.BatchNorm2d(unit.in_chs)
        self.conv1 = ConvNormAct(unit.in_chs, unit.reduce_chs, 1, act=_ReLU)
        self.conv2 = ConvNormAct(unit.reduce_chs, unit.spatial_chs, 3, unit.stride, act=_ReLU)
        self.conv3 = ConvNormAct(unit.spatial_chs, unit.out_chs, 1, act=None)
        self.shortcut = _shortcut(unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(self.bn(x)))) + self.shortcut(x)


def _stem(spec: PyramidNetSpec) -> nn.Sequential:
    """CIFAR: 3x3 conv - BN (Table 1's conv1; the first unit begins with BN, so no ReLU here). ImageNet:
    7x7/2 conv - BN - ReLU - 3x3/2 max-pool. Small: 3x3/1 conv - BN - ReLU."""
    stem = nn.Sequential()
    if spec.stem == "imagenet":
        stem.add_module("conv", nn.Conv2d(spec.in_chans, spec.stem_chs, 7, stride=2, padding=3, bias=False))
    else:
        stem.add_module("conv", nn.Conv2d(spec.in_chans, spec.stem_chs, 3, padding=1, bias=False))
    stem.add_module("bn", nn.BatchNorm2d(spec.stem_chs))
    if spec.stem != "cifar":
        stem.add_module("act", _ReLU())
    if spec.stem == "imagenet":
        stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
    return stem


class PyramidNet(SmallNet):
    """Stem, groups of pyramidal units, neck (the final BN - ReLU: the units end without one), GAP, dropout, FC.

    Layer for layer the authors' PyTorch implementation (dyhan0920/PyramidNet-PyTorch), as the spec describes it.
    """

    def __init__(self, spec: PyramidNetSpec):
        super().__init__()
        self.spec = spec
        self.stem = _stem(spec)
        self.stages = nn.Sequential(
            *(nn.Sequential(*(PyramidalBasicUnit(u) if isinstance(u, PyramidBasic) else PyramidalBottleneckUnit(u) for u in stage))
              for stage in spec.stages)
        )  # fmt: skip
        self.num_features = spec.num_features
        self.neck = nn.Sequential()
        self.neck.add_module("bn", nn.BatchNorm2d(self.num_features))
        self.neck.add_module("act", _ReLU())
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)  # He-normal (fan-out) convs and unit BN, as the authors initialise them
