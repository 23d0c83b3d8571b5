"""Residual Attention Network: attention modules of a trunk branch and a bottom-up top-down soft mask
(Wang et al. 2017, arXiv:1704.06904), built from the spec."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from smallnets.arch.residual_attention import AttentionModule, PreActUnit, ResidualAttentionSpec
from smallnets.layers import ClassifierHead, ConvNormAct, SmallNet, init_weights
from smallnets.models.resnet import residual_stem

_ReLU = partial(nn.ReLU, inplace=True)


def _preact(chs: int) -> nn.Sequential:
    preact = nn.Sequential()
    preact.add_module("bn", nn.BatchNorm2d(chs))
    preact.add_module("act", _ReLU())
    return preact


class PreActBottleneck(nn.Module):
    """BN - ReLU, then 1x1 conv - BN - ReLU, 3x3 conv (the unit's stride) - BN - ReLU, 1x1 conv; plus the
    identity, or a 1x1 conv (at the stride) of the pre-activated input where the shape changes (as the
    released network's ``branch2``). Keys: ``preact.bn``, ``conv1.conv/bn``, ``conv2.conv/bn``, ``conv3``, ``shortcut``."""

    def __init__(self, unit: PreActUnit):
        super().__init__()
        self.preact = _preact(unit.in_chs)
        self.conv1 = ConvNormAct(unit.in_chs, unit.mid_chs, 1, act=_ReLU)
        self.conv2 = ConvNormAct(unit.mid_chs, unit.mid_chs, 3, unit.stride, act=_ReLU)
        self.conv3 = nn.Conv2d(unit.mid_chs, unit.out_chs, 1, bias=False)
        self.project = unit.shortcut == "conv"
        self.shortcut = nn.Conv2d(unit.in_chs, unit.out_chs, 1, unit.stride, bias=False) if self.project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.preact(x)
        return self.conv3(self.conv2(self.conv1(a))) + self.shortcut(a if self.project else x)


def _units(chs: int, mid_chs: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(PreActUnit(in_chs=chs, mid_chs=mid_chs, out_chs=chs)) for _ in range(n)))


class MaskLevel(nn.Module):
    """One level of the soft mask's hourglass: 3x3/2 max-pool, ``r`` units (bottom-up); then ``inner`` (the
    levels below, returned at this level's resolution plus this level's skip unit; the lowest level: none);
    ``r`` units (top-down) and bilinear upsampling back to the input's size."""

    def __init__(self, chs: int, mid_chs: int, r: int, inner: nn.Module):
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.down = _units(chs, mid_chs, r)
        self.inner = inner
        self.up = _units(chs, mid_chs, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.inner(self.down(self.pool(x))))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)


class SkipMerge(nn.Module):
    """The skip connection between the bottom-up and top-down parts at one level: the deeper levels' upsampled
    output plus a residual unit of this level's bottom-up features."""

    def __init__(self, chs: int, mid_chs: int, deeper: MaskLevel):
        super().__init__()
        self.deeper = deeper
        self.skip = _units(chs, mid_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deeper(x) + self.skip(x)


class SoftMask(nn.Module):
    """The mask branch: the hourglass of ``mask_levels`` levels, then BN - ReLU - 1x1 conv - BN - ReLU - 1x1 conv
    and a sigmoid: M(x) in [0, 1], the size of the trunk's output."""

    def __init__(self, module: AttentionModule):
        super().__init__()
        c, mid, r = module.chs, module.mid_chs, module.mask_units
        level: nn.Module = MaskLevel(c, mid, r, nn.Identity())  # the lowest level
        for _ in range(module.mask_levels - 1):
            level = MaskLevel(c, mid, r, SkipMerge(c, mid, level))
        self.hourglass = level
        self.head = nn.Sequential()
        self.head.add_module("preact", _preact(c))
        self.head.add_module("conv1", ConvNormAct(c, c, 1, act=_ReLU))
        self.head.add_module("conv2", nn.Conv2d(c, c, 1, bias=False))
        self.head.add_module("gate", nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hourglass(x))


class AttentionBlock(nn.Module):
    """An attention module (Figure 2): p units, then trunk T (t units) and soft mask M from the same features,
    attention residual learning H = (1 + M) * T (Equation 3), then p units."""

    def __init__(self, module: AttentionModule):
        super().__init__()
        self.pre = _units(module.chs, module.mid_chs, module.pre)
        self.trunk = _units(module.chs, module.mid_chs, module.trunk)
        self.mask = SoftMask(module)
        self.post = _units(module.chs, module.mid_chs, module.post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return self.post((1 + self.mask(x)) * self.trunk(x))


class ResidualAttentionNet(SmallNet):
    """Stem, four stages (a residual unit, then attention modules; the last: three units), neck (BN - ReLU),
    GAP, dropout, FC. Unit for unit the authors' released Caffe network, as the spec describes it."""

    def __init__(self, spec: ResidualAttentionSpec):
        super().__init__()
        self.spec = spec
        self.stem = residual_stem(spec)  # Table 2's conv1 is ResNet's
        self.stages = nn.Sequential(
            *(nn.Sequential(*(PreActBottleneck(b) if isinstance(b, PreActUnit) else AttentionBlock(b) for b in stage)) for stage in spec.stages)
        )
        self.num_features = spec.num_features
        self.neck = _preact(self.num_features)
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)
