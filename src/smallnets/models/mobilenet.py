"""MobileNetV1 (Howard et al. 2017, arXiv:1704.04861) and MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from smallnets._checks import check_bool, check_int
from smallnets.layers import ClassifierHead, ConvNormAct, ModuleFactory, SmallNet, init_weights, make_divisible
from smallnets.models._inverted import (
    InvertedBottleneck,
    Stage,
    build_stages,
    check_common_knobs,
    cifar_table,
    inverted_block,
    scale_table,
)
from smallnets.registry import Published, register_model

V1_PAPER = "Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications, arXiv:1704.04861"
V2_PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381"

# MobileNetV1 Table 1 after the stem (conv3x3/s2, 32 channels): one row per output width of the
# depthwise-separable layers, 13 in all.
V1_STEM = 32
# Figure 3 draws ReLU; the released TF-slim reference (and timm, whose checkpoints we load) uses ReLU6.
V1_ACT = nn.ReLU6
V1_TABLE = (
    Stage(out=64, repeats=1, stride=1),  # 112 -> 112
    Stage(out=128, repeats=2, stride=2),  # 112 -> 56
    Stage(out=256, repeats=2, stride=2),  # 56 -> 28
    Stage(out=512, repeats=6, stride=2),  # 28 -> 14
    Stage(out=1024, repeats=2, stride=2),  # 14 -> 7 (Table 1's second "dw/s2" here is stride 1: its input is 7x7)
)

# MobileNetV2 Table 2 (t, c, n, s) after the stem (conv3x3/s2, 32 channels); then a 1x1 conv to 1280.
V2_STEM = 32
V2_TABLE = (
    Stage(expand=1, out=16, repeats=1, stride=1),  # 112 -> 112
    Stage(expand=6, out=24, repeats=2, stride=2),  # 112 -> 56
    Stage(expand=6, out=32, repeats=3, stride=2),  # 56 -> 28
    Stage(expand=6, out=64, repeats=4, stride=2),  # 28 -> 14
    Stage(expand=6, out=96, repeats=3, stride=1),  # 14 -> 14
    Stage(expand=6, out=160, repeats=3, stride=2),  # 14 -> 7
    Stage(expand=6, out=320, repeats=1, stride=1),  # 7 -> 7
)
V2_LAST = 1280


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 Figure 3 (right): depthwise 3x3 - BN - act, then pointwise 1x1 - BN - act. No shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, *, act: ModuleFactory = V1_ACT):
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, act=act)
        self.pw = ConvNormAct(in_chs, out_chs, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(SmallNet):
    """Stem, 13 depthwise-separable layers (or full 3x3 convs: the paper's "Conv MobileNet"), GAP, FC."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        separable: bool = True,
        drop_rate: float = 0.0,
        cifar: bool = False,
        head_chs: int | None = None,
    ):
        super().__init__()
        check_common_knobs(width_mult=width_mult, depth_mult=depth_mult, drop_rate=drop_rate, cifar=cifar)
        check_bool("separable", separable)
        if head_chs is not None:
            check_int("head_chs", head_chs)
        table = scale_table(V1_TABLE, width_mult, depth_mult)  # alpha applies to every layer, stem included
        table = cifar_table(table) if cifar else table
        stem_chs = make_divisible(V1_STEM * width_mult, 8)

        def make_block(row: Stage, in_chs: int, stride: int, drop_path: float) -> nn.Module:
            if separable:
                return DepthwiseSeparable(in_chs, row.out, stride)
            return ConvNormAct(in_chs, row.out, 3, stride, act=V1_ACT)  # Table 4's "Conv MobileNet": one full 3x3 conv per pair

        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=1 if cifar else 2, act=V1_ACT)
        self.stages, self.num_features = build_stages(table, stem_chs, make_block)
        self.neck = nn.Identity()
        if head_chs is not None:  # timm's "h" variants: a 1x1 conv-BN-ReLU head before pooling
            self.neck = ConvNormAct(self.num_features, head_chs, 1, act=V1_ACT)
            self.num_features = head_chs
        self.classifier = ClassifierHead(self.num_features, num_classes, drop_rate)
        init_weights(self)


class MobileNetV2(SmallNet):
    """Stem, 17 inverted bottlenecks (ReLU6, linear projection), 1x1 conv to 1280, GAP, dropout, FC; as torchvision."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        cifar: bool = False,
        fix_stem_head: bool = False,
    ):
        super().__init__()
        check_common_knobs(width_mult=width_mult, depth_mult=depth_mult, drop_rate=drop_rate, cifar=cifar, drop_path_rate=drop_path_rate)
        check_bool("fix_stem_head", fix_stem_head)
        table = scale_table(V2_TABLE, width_mult, depth_mult)
        if fix_stem_head:  # the first and last rows keep their single block
            table = (replace(table[0], repeats=V2_TABLE[0].repeats), *table[1:-1], replace(table[-1], repeats=V2_TABLE[-1].repeats))
        table = cifar_table(table) if cifar else table
        stem_chs = V2_STEM if fix_stem_head else make_divisible(V2_STEM * width_mult, 8)
        # The paper applies the width multiplier to every layer but the last conv when it is < 1.
        last_chs = V2_LAST if fix_stem_head else make_divisible(V2_LAST * max(1.0, width_mult), 8)

        def make_block(row: Stage, in_chs: int, stride: int, drop_path: float) -> InvertedBottleneck:
            return inverted_block(row, in_chs, stride, drop_path, act=nn.ReLU6)

        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=1 if cifar else 2, act=nn.ReLU6)
        self.stages, stages_chs = build_stages(table, stem_chs, make_block, drop_path_rate)
        self.neck = ConvNormAct(stages_chs, last_chs, 1, act=nn.ReLU6)
        self.num_features = last_chs
        self.classifier = ClassifierHead(last_chs, num_classes, drop_rate)
        init_weights(self)


@register_model(
    "mobilenet_v1",
    family="mobilenet_v1",
    paper=V1_PAPER,
    published=(
        Published(top1=70.6, params=4.2e6, macs=569e6, source="MobileNetV1 paper Table 6"),
        Published(top1=68.4, params=2.6e6, macs=325e6, knobs={"width_mult": 0.75}, source="MobileNetV1 paper Table 6"),
        Published(top1=63.7, params=1.3e6, macs=149e6, knobs={"width_mult": 0.5}, source="MobileNetV1 paper Table 6"),
        Published(top1=50.6, params=0.5e6, macs=41e6, knobs={"width_mult": 0.25}, source="MobileNetV1 paper Table 6"),
        Published(top1=69.1, params=4.2e6, macs=418e6, input_size=(3, 192, 192), source="MobileNetV1 paper Table 7"),
        Published(top1=67.2, params=4.2e6, macs=291e6, input_size=(3, 160, 160), source="MobileNetV1 paper Table 7"),
        Published(top1=64.4, params=4.2e6, macs=186e6, input_size=(3, 128, 128), source="MobileNetV1 paper Table 7"),
        Published(top1=71.7, params=29.3e6, macs=4866e6, knobs={"separable": False}, source="MobileNetV1 paper Table 4 (Conv MobileNet)"),
    ),
    representative=True,
)
def mobilenet_v1(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    separable: bool = True,
    drop_rate: float = 0.0,
    cifar: bool = False,
    head_chs: int | None = None,
) -> MobileNetV1:
    """MobileNetV1. ``width_mult`` is the paper's alpha (channels ``make_divisible(c * alpha, 8)``).

    The paper's resolution multiplier rho is simply the input size (224, 192, 160, 128 px): the
    network is fully convolutional up to global pooling. ``depth_mult`` scales every stage's
    repeats (ceil), so compound scaling applies (EfficientNet Table 3). ``separable=False`` is
    Table 4's "Conv MobileNet". ``head_chs`` adds a 1x1 conv head of that width before pooling (not
    in the paper; timm's ``mobilenetv1_100h``).
    """
    return MobileNetV1(
        num_classes,
        in_chans,
        width_mult=width_mult,
        depth_mult=depth_mult,
        separable=separable,
        drop_rate=drop_rate,
        cifar=cifar,
        head_chs=head_chs,
    )


@register_model(
    "mobilenet_v2",
    family="mobilenet_v2",
    paper=V2_PAPER,
    published=(
        Published(top1=72.0, params=3.4e6, macs=300e6, source="MobileNetV2 paper Table 4"),
        Published(top1=74.7, params=6.9e6, macs=585e6, knobs={"width_mult": 1.4}, source="MobileNetV2 paper Table 4"),
    ),
    representative=True,
)
def mobilenet_v2(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
    cifar: bool = False,
    fix_stem_head: bool = False,
) -> MobileNetV2:
    """MobileNetV2 exactly as torchvision builds it. ``width_mult`` rounds channels with ``make_divisible(c * alpha, 8)``
    (the final 1280 only grows); ``depth_mult`` scales repeats (ceil); ``drop_path_rate`` adds stochastic
    depth on the residual branches (linear in block index; 0 = the paper). ``fix_stem_head`` keeps the
    stem (32), the last conv (1280) and the depth of the first and last rows unscaled (not in the paper;
    timm's ``mobilenetv2_110d`` = width 1.1, depth 1.2 and ``mobilenetv2_120d`` = width 1.2, depth 1.4)."""
    return MobileNetV2(
        num_classes,
        in_chans,
        width_mult=width_mult,
        depth_mult=depth_mult,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        cifar=cifar,
        fix_stem_head=fix_stem_head,
    )
