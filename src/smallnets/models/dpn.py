"""Dual Path Networks: blocks with a residual path and a densely connected path (Chen et al. 2017,
arXiv:1707.01629), built from their spec."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from smallnets.arch.dpn import DPNSpec, DualPathBlock, DualPathStage
from smallnets.layers import ConvNormAct, ModuleFactory, SmallNet, check_divides, init_weights

ACTS: dict[str, ModuleFactory] = {"elu": nn.ELU, "relu": nn.ReLU}

Paths = tuple[torch.Tensor, torch.Tensor]  # (residual path, dense path)


class NormActConv(nn.Sequential):
    """BN, ReLU, then the conv (no bias): the pre-activation unit every DPN block is made of.
    Keys: ``bn.*``, ``conv.*`` (registered in that order, as the reference does)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1, *, eps: float = 1e-3):
        super().__init__()
        check_divides("groups", groups, in_chs=in_chs, out_chs=out_chs)
        self.bn = nn.BatchNorm2d(in_chs, eps=eps)
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False)


class DualPathModule(nn.Module):
    """Figure 2(e): one shared bottleneck (1x1, grouped 3x3, 1x1) whose output is split: the first
    ``residual`` channels are added to the residual path, the other ``inc`` appended to the dense path.

    The bottleneck reads both paths concatenated. A projection block (a stage's first) starts both
    paths from a 1x1 conv of its input (``proj``, registered first, as the reference does); the others
    carry on the paths they are given.
    """

    def __init__(self, block: DualPathBlock, *, eps: float = 1e-3):
        super().__init__()
        self.residual, self.inc = block.residual, block.inc
        self.proj = NormActConv(block.in_chs, block.residual + 2 * block.inc, 1, block.stride, eps=eps) if block.projection else None
        self.conv1 = NormActConv(block.in_chs, block.bottleneck, 1, eps=eps)
        self.conv2 = NormActConv(block.bottleneck, block.bottleneck, 3, block.stride, block.groups, eps=eps)
        self.conv3 = NormActConv(block.bottleneck, block.residual + block.inc, 1, eps=eps)

    def forward(self, x: torch.Tensor | Paths) -> Paths:
        x_in = torch.cat(x, dim=1) if isinstance(x, tuple) else x
        if self.proj is None:
            resid, dense = x
        else:
            resid, dense = self.proj(x_in).split((self.residual, 2 * self.inc), dim=1)
        new_resid, new_dense = self.conv3(self.conv2(self.conv1(x_in))).split((self.residual, self.inc), dim=1)
        return resid + new_resid, torch.cat((dense, new_dense), dim=1)


class DualPathStageModule(nn.Sequential):
    """A stage's blocks, passing the two paths along; it returns them concatenated (one feature map)."""

    def __init__(self, stage: DualPathStage, *, eps: float = 1e-3):
        super().__init__(*(DualPathModule(block, eps=eps) for block in stage.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = x
        for block in self:
            paths = block(paths)
        return torch.cat(paths, dim=1)


class DPN(SmallNet):
    """Stem (conv-BN-ReLU, max-pool), conv2 ... conv5 of dual path blocks, neck (BN-ELU of the
    concatenated paths), GAP, dropout, 1x1-conv classifier: layer for layer timm's ``dpn*``."""

    def __init__(self, spec: DPNSpec):
        super().__init__()
        self.spec = spec
        bn = partial(nn.BatchNorm2d, eps=spec.bn_eps)
        self.stem = ConvNormAct(spec.in_chans, spec.num_init_features, spec.stem_kernel, spec.stem_stride, norm=bn)
        self.stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1) if spec.stem_pool else nn.Identity())
        self.stages = nn.Sequential()
        for stage in spec.stages:
            self.stages.add_module(stage.name, DualPathStageModule(stage, eps=spec.bn_eps))
        self.num_features = spec.num_features
        self.neck = nn.Sequential()
        self.neck.add_module("bn", bn(self.num_features))
        self.neck.add_module("act", ACTS[spec.neck_act]())
        # a 1x1 conv on the pooled features, as the reference ("to allow the extra pooling scheme")
        self.classifier = nn.Sequential()
        self.classifier.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.classifier.add_module("drop", nn.Dropout(spec.drop_rate))
        self.classifier.add_module("fc", nn.Conv2d(self.num_features, spec.num_classes, 1))
        self.classifier.add_module("flatten", nn.Flatten(1))
        init_weights(self)  # He-normal (fan-out) convs, the classifier conv included; unit BN
