"""ShuffleNet v1 (Zhang et al. 2017, arXiv:1707.01083) and ShuffleNet v2 (Ma et al. 2018, arXiv:1807.11164)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from smallnets._checks import check_bool, check_choice, check_int, check_positive, check_range
from smallnets.layers import ChannelShuffle, ClassifierHead, ConvNormAct, SmallNet, check_divides, init_weights, make_divisible
from smallnets.registry import Published, register_model

V1_PAPER = "Zhang et al. 2017, ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices, arXiv:1707.01083"
V2_PAPER = "Ma et al. 2018, ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design, arXiv:1807.11164"


@dataclass(frozen=True)
class Stage:
    """One stage row of ShuffleNet v1 Table 1 / v2 Table 5: ``repeats`` units, the first with ``stride``."""

    repeats: int  # units in the stage
    stride: int  # stride of the first unit; the others are stride 1
    out: Mapping[float, int]  # output channels per column of the paper's table (v1: groups g; v2: width)


# ShuffleNet v1 Table 1 after the stem (conv1 3x3/s2 24 channels, max-pool 3x3/s2): output
# channels per group number g. The paper keeps complexity roughly constant (~140 MFLOPs) across g.
V1_GROUPS = (1, 2, 3, 4, 8)
V1_STEM = 24
# Conv1 never drops below 12 channels (the 0.5x width), rounded down to a multiple of g (8 for
# g=8). Table 2 gives 13 MFLOPs at 0.25x for every g: a 6-channel conv1 (24 x 0.25) gives only
# 11.0M at g=3 (-15%), a 12-channel one 13.2-13.4M for g=1..4; for g=8, 8 channels give 12.4M
# where 16 would give 15.7M. At s >= 0.5 the floor never binds.
V1_MIN_STEM = 12
V1_TABLE = (
    Stage(repeats=4, stride=2, out={1: 144, 2: 200, 3: 240, 4: 272, 8: 384}),  # stage 2: 56 -> 28
    Stage(repeats=8, stride=2, out={1: 288, 2: 400, 3: 480, 4: 544, 8: 768}),  # stage 3: 28 -> 14
    Stage(repeats=4, stride=2, out={1: 576, 2: 800, 3: 960, 4: 1088, 8: 1536}),  # stage 4: 14 -> 7
)

# ShuffleNet v2 Table 5 after the same stem: output channels per width multiplier, then conv5.
V2_WIDTHS = (0.5, 1.0, 1.5, 2.0)
V2_STEM = 24
V2_TABLE = (
    Stage(repeats=4, stride=2, out={0.5: 48, 1.0: 116, 1.5: 176, 2.0: 244}),  # stage 2: 56 -> 28
    Stage(repeats=8, stride=2, out={0.5: 96, 1.0: 232, 1.5: 352, 2.0: 488}),  # stage 3: 28 -> 14
    Stage(repeats=4, stride=2, out={0.5: 192, 1.0: 464, 1.5: 704, 2.0: 976}),  # stage 4: 14 -> 7
)
V2_LAST = {0.5: 1024, 1.0: 1024, 1.5: 1024, 2.0: 2048}  # conv5 1x1


# --------------------------------------------------------------------------------------------
# What v1 and v2 share: the stem and the stage loop


def shuffle_stem(in_chans: int, out_chs: int, cifar: bool) -> nn.Sequential:
    """Conv1 3x3/s2 - BN - ReLU, then max-pool 3x3/s2 (total stride 4). ``cifar``: stride 1, no pool."""
    stem = nn.Sequential()
    stem.add_module("conv", ConvNormAct(in_chans, out_chs, 3, stride=1 if cifar else 2))
    stem.add_module("pool", nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1))
    return stem


# (in_chs, out_chs, stride, index) -> unit; ``index`` counts units over the whole network from 0.
UnitFactory = Callable[[int, int, int, int], nn.Module]


def build_stages(widths: Sequence[tuple[Stage, int]], in_chs: int, make_unit: UnitFactory) -> tuple[nn.Sequential, int]:
    """One ``nn.Sequential`` per (row, output channels); returns the stages and their output channels."""
    stages, index = [], 0
    for row, out_chs in widths:
        units = []
        for i in range(row.repeats):
            units.append(make_unit(in_chs, out_chs, row.stride if i == 0 else 1, index))
            in_chs, index = out_chs, index + 1
        stages.append(nn.Sequential(*units))
    return nn.Sequential(*stages), in_chs


# --------------------------------------------------------------------------------------------
# ShuffleNet v1


class ShuffleV1Branch(nn.Sequential):
    """Figure 2(b)/(c) residual branch: 1x1 GConv - BN - ReLU, shuffle, 3x3 DWConv - BN, 1x1 GConv - BN.

    ``pw1_groups`` is 1 for the network's first unit (its 24-channel input is too thin to group,
    Section 3.3). The shuffle only follows a grouped conv: after a dense conv a fixed channel
    permutation changes nothing the conv's weights could not absorb, so it is an ``nn.Identity``.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, stride: int, groups: int, pw1_groups: int):
        super().__init__()
        check_divides("groups", pw1_groups, in_chs=in_chs, bottleneck_chs=mid_chs)
        check_divides("groups", groups, bottleneck_chs=mid_chs, branch_out_chs=out_chs)
        self.pw1 = ConvNormAct(in_chs, mid_chs, 1, groups=pw1_groups)
        self.shuffle = ChannelShuffle(groups) if pw1_groups > 1 else nn.Identity()
        self.dw = ConvNormAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act=None)
        self.pw2 = ConvNormAct(mid_chs, out_chs, 1, groups=groups, act=None)


class ShuffleV1Unit(nn.Module):
    """Figure 2(b): stride 1, ``relu(x + branch(x))``."""

    def __init__(self, chs: int, mid_chs: int, groups: int, pw1_groups: int):
        super().__init__()
        self.branch = ShuffleV1Branch(chs, mid_chs, chs, 1, groups, pw1_groups)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class ShuffleV1DownUnit(nn.Module):
    """Figure 2(c): stride 2, ``relu(cat(avgpool3x3/s2(x), branch(x)))``; the branch makes ``out - in`` channels."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, groups: int, pw1_groups: int):
        super().__init__()
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)
        self.branch = ShuffleV1Branch(in_chs, mid_chs, out_chs - in_chs, 2, groups, pw1_groups)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat((self.shortcut(x), self.branch(x)), dim=1))


class ShuffleNetV1(SmallNet):
    """Stem, three stages of ShuffleNet units (Table 1), GAP, FC.

    Width ``s`` scales every layer, conv1 included (``24 * s``). The paper does not say how it
    rounds; here every width is ``make_divisible(c * s, groups)`` so that group convs split evenly
    (stride-2 branches make ``out - in`` channels, so conv1 must be a multiple of g too), and
    bottlenecks are ``make_divisible(out / 4, groups)`` of the rounded unit output. Conv1 keeps at
    least ``V1_MIN_STEM`` channels: see there.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        groups: int = 3,
        width_mult: float = 1.0,
        drop_rate: float = 0.0,
        cifar: bool = False,
    ):
        super().__init__()
        check_int("groups", groups)
        check_choice("groups", groups, V1_GROUPS)
        check_range("width_mult", width_mult, 0.25, 2.0)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        check_bool("cifar", cifar)
        stem_chs = max(make_divisible(V1_STEM * width_mult, groups), V1_MIN_STEM // groups * groups)
        widths = [(row, make_divisible(row.out[groups] * width_mult, groups)) for row in V1_TABLE]

        def make_unit(in_chs: int, out_chs: int, stride: int, index: int) -> nn.Module:
            mid_chs = make_divisible(out_chs / 4, groups)  # bottleneck: a quarter of the unit's output
            pw1_groups = 1 if index == 0 else groups
            if stride == 1:
                return ShuffleV1Unit(out_chs, mid_chs, groups, pw1_groups)
            return ShuffleV1DownUnit(in_chs, out_chs, mid_chs, groups, pw1_groups)

        self.stem = shuffle_stem(in_chans, stem_chs, cifar)
        self.stages, self.num_features = build_stages(widths, stem_chs, make_unit)
        self.neck = nn.Identity()
        self.classifier = ClassifierHead(self.num_features, num_classes, drop_rate)
        init_weights(self)


def _v1_published() -> tuple[Published, ...]:
    """ShuffleNet v1 Table 2 top-1 (100 - classification error) for every width and g; knobs at their defaults are left out."""
    table2 = {  # width -> {groups: top-1}
        1.0: {1: 66.4, 2: 67.3, 3: 67.4, 4: 67.2, 8: 67.6},
        0.5: {1: 54.9, 2: 55.6, 3: 56.8, 4: 58.4, 8: 57.7},
        0.25: {1: 42.9, 2: 43.2, 3: 45.0, 4: 45.8, 8: 47.3},
    }
    mflops = {  # (width, groups) -> complexity as printed (Table 1 for 1x, Table 2 for the rest)
        (1.0, 1): 143, (1.0, 2): 140, (1.0, 3): 137, (1.0, 4): 133, (1.0, 8): 137,
        (0.5, 3): 38, (0.5, 4): 38, (0.25, 3): 13, (0.25, 8): 13,
    }  # fmt: skip
    defaults = {"groups": 3, "width_mult": 1.0}
    published = []
    for width, row in table2.items():
        for groups, top1 in row.items():
            knobs = {k: v for k, v in {"groups": groups, "width_mult": width}.items() if v != defaults[k]}
            macs = mflops.get((width, groups))
            source = "ShuffleNet v1 paper Table 2 (complexity: Table 1 for 1x, Table 2 otherwise)"
            published.append(Published(top1=top1, knobs=knobs, macs=macs * 1e6 if macs else None, source=source))
    published.append(Published(top1=73.7, knobs={"width_mult": 2.0}, macs=524e6, source="ShuffleNet v1 paper Table 5"))
    return tuple(published)


@register_model("shufflenet_v1", family="shufflenet_v1", paper=V1_PAPER, published=_v1_published(), representative=True)
def shufflenet_v1(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    groups: int = 3,
    width_mult: float = 1.0,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> ShuffleNetV1:
    """ShuffleNet v1: ``groups`` is the paper's g (1, 2, 3, 4, 8), ``width_mult`` its scale factor s
    (0.25x-2x). Defaults are the headline ShuffleNet 1x (g = 3)."""
    return ShuffleNetV1(num_classes, in_chans, groups=groups, width_mult=width_mult, drop_rate=drop_rate, cifar=cifar)


# --------------------------------------------------------------------------------------------
# ShuffleNet v2


class ShuffleV2Branch(nn.Sequential):
    """Figure 3(c)/(d) right branch: 1x1 - BN - ReLU, 3x3 DWConv - BN, 1x1 - BN - ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.pw1 = ConvNormAct(in_chs, out_chs, 1)
        self.dw = ConvNormAct(out_chs, out_chs, 3, stride, groups=out_chs, act=None)
        self.pw2 = ConvNormAct(out_chs, out_chs, 1)


class ShuffleV2Unit(nn.Module):
    """Figure 3(c): split channels in halves, transform the second, concat, shuffle (groups 2)."""

    def __init__(self, chs: int):
        super().__init__()
        check_divides("channel split", 2, chs=chs)
        self.branch = ShuffleV2Branch(chs // 2, chs // 2, 1)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, x = x.chunk(2, dim=1)
        return self.shuffle(torch.cat((keep, self.branch(x)), dim=1))


class ShuffleV2DownUnit(nn.Module):
    """Figure 3(d): no split; ``shortcut`` (the left branch: 3x3 DWConv/s2 - BN, 1x1 - BN - ReLU) and the
    right branch each give half the output; concat, shuffle (groups 2)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2):
        super().__init__()
        check_divides("channel split", 2, out_chs=out_chs)
        half = out_chs // 2
        self.shortcut = nn.Sequential()
        self.shortcut.add_module("dw", ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, act=None))
        self.shortcut.add_module("pw", ConvNormAct(in_chs, half, 1))
        self.branch = ShuffleV2Branch(in_chs, half, stride)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(torch.cat((self.shortcut(x), self.branch(x)), dim=1))


class ShuffleNetV2(SmallNet):
    """Stem, three stages of ShuffleNet v2 units (Table 5), conv5 1x1, GAP, FC; exactly torchvision's network."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        width_mult: float = 1.0,
        drop_rate: float = 0.0,
        cifar: bool = False,
    ):
        super().__init__()
        check_positive("width_mult", width_mult)
        check_choice("width_mult", width_mult, V2_WIDTHS)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        check_bool("cifar", cifar)
        widths = [(row, row.out[width_mult]) for row in V2_TABLE]

        def make_unit(in_chs: int, out_chs: int, stride: int, index: int) -> nn.Module:
            return ShuffleV2Unit(out_chs) if stride == 1 else ShuffleV2DownUnit(in_chs, out_chs, stride)

        self.stem = shuffle_stem(in_chans, V2_STEM, cifar)
        self.stages, stages_chs = build_stages(widths, V2_STEM, make_unit)
        self.num_features = V2_LAST[width_mult]
        self.neck = ConvNormAct(stages_chs, self.num_features, 1)
        self.classifier = ClassifierHead(self.num_features, num_classes, drop_rate)
        init_weights(self)


@register_model(
    "shufflenet_v2",
    family="shufflenet_v2",
    paper=V2_PAPER,
    published=(
        Published(top1=69.4, macs=146e6, source="ShuffleNet V2 paper Table 8"),
        Published(top1=60.3, macs=41e6, knobs={"width_mult": 0.5}, source="ShuffleNet V2 paper Table 8"),
        Published(top1=72.6, macs=299e6, knobs={"width_mult": 1.5}, source="ShuffleNet V2 paper Table 8"),
        Published(top1=74.9, macs=591e6, knobs={"width_mult": 2.0}, source="ShuffleNet V2 paper Table 8"),
    ),
    representative=True,
)
def shufflenet_v2(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    width_mult: float = 1.0,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> ShuffleNetV2:
    """ShuffleNet v2 at one of the paper's widths (0.5x, 1x, 1.5x, 2x), layer for layer torchvision's."""
    return ShuffleNetV2(num_classes, in_chans, width_mult=width_mult, drop_rate=drop_rate, cifar=cifar)
