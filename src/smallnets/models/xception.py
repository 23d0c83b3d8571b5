"""Xception: entry, middle and exit flows of depthwise separable convolutions (Chollet 2017, arXiv:1610.02357), built from its spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import nn

from smallnets.arch.xception import SeparableBlock, XceptionSpec
from smallnets.layers import ClassifierHead, ConvNormAct, ModuleFactory, SmallNet, init_weights


class SeparableConvNormAct(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1, then BN (and ``act``).

    Nothing between the depthwise and the pointwise conv: Section 4.7 / Figure 10 find that an
    intermediate ReLU or ELU hurts. Keys: ``dw.conv.*``, ``pw.conv.*``, ``pw.bn.*``.
    """

    def __init__(self, in_chs: int, out_chs: int, *, act: ModuleFactory | None = None):
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, groups=in_chs, norm=None, act=None, bias=False)
        self.pw = ConvNormAct(in_chs, out_chs, 1, act=act)


class XceptionBlock(nn.Module):
    """Figure 5 block: [ReLU, SeparableConv, BN] per separable conv, 3x3/s2 max-pool if strided, plus the shortcut.

    The shortcut is a 1x1 conv (stride ``stride``) + BN (``shortcut="conv"``, where the shape changes
    in the paper), else the identity. The first ReLU sees the block's input, which the identity
    shortcut also takes before any ReLU.
    """

    def __init__(self, block: SeparableBlock):
        super().__init__()
        widths = block.widths
        # registered before the main path, as the reference implementations do (same state-dict order)
        self.skip = nn.Identity() if block.shortcut == "identity" else ConvNormAct(block.in_chs, block.out_chs, 1, block.stride, act=None)
        self.main = nn.Sequential()
        for i in range(len(block.sep_chs)):
            self.main.add_module(f"act{i + 1}", nn.ReLU() if block.start_with_relu or i > 0 else nn.Identity())
            self.main.add_module(f"sep{i + 1}", SeparableConvNormAct(widths[i], widths[i + 1]))
        self.pool = nn.MaxPool2d(3, stride=block.stride, padding=1) if block.stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.main(x)) + self.skip(x)


class Xception(SmallNet):
    """Stem, entry flow (3 stages), middle flow, exit-flow block, neck (2 separable convs), GAP, dropout, FC.

    Layer for layer timm's ``legacy_xception`` (the Keras reference), as the spec describes it.
    """

    def __init__(self, spec: XceptionSpec):
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential()
        in_chs = spec.in_chans
        for i, conv in enumerate(spec.stem):
            self.stem.add_module(f"conv{i + 1}", ConvNormAct(in_chs, conv.out_chs, 3, conv.stride, padding=conv.padding))
            in_chs = conv.out_chs

        self.stages = nn.Sequential()
        for stage in spec.stages:
            self.stages.add_module(stage.name, nn.Sequential(*(XceptionBlock(block) for block in stage.blocks)))
            in_chs = stage.blocks[-1].out_chs

        self.neck = nn.Sequential()
        for i, out_chs in enumerate(spec.neck_chs):
            self.neck.add_module(f"sep{i + 1}", SeparableConvNormAct(in_chs, out_chs, act=nn.ReLU))
            in_chs = out_chs
        self.num_features = spec.num_features
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)  # timm's init for convs and BN (He-normal fan-out, unit BN)


def spec_for_shapes(spec: XceptionSpec, shapes: Mapping[str, tuple[int, ...]]) -> XceptionSpec:
    """``spec`` with every stem conv's, separable conv's and neck conv's width read from the state-dict
    ``shapes`` (a pruned model's)."""
    stem = tuple(replace(conv, out_chs=shapes[f"stem.conv{i + 1}.conv.weight"][0]) for i, conv in enumerate(spec.stem))
    stages = []
    for stage in spec.stages:
        blocks = []
        for j, block in enumerate(stage.blocks):
            key = f"stages.{stage.name}.{j}.main."
            sep = tuple(shapes[f"{key}sep{k + 1}.pw.conv.weight"][0] for k in range(len(block.sep_chs)))
            blocks.append(replace(block, in_chs=shapes[key + "sep1.dw.conv.weight"][0], sep_chs=sep))
        stages.append(replace(stage, blocks=tuple(blocks)))
    neck = tuple(shapes[f"neck.sep{i + 1}.pw.conv.weight"][0] for i in range(len(spec.neck_chs)))
    return replace(spec, stem=stem, stages=tuple(stages), neck_chs=neck)
