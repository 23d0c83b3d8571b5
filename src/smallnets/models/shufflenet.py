"""ShuffleNet v1 (Zhang et al. 2017, arXiv:1707.01083) and ShuffleNet v2 (Ma et al. 2018, arXiv:1807.11164), built from their specs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import torch
from torch import nn

from smallnets.arch.shufflenet import ShuffleNetV1Spec, ShuffleNetV2Spec, ShuffleStem, ShuffleV1Block, ShuffleV2Block, _ShuffleNetSpec
from smallnets.layers import ChannelShuffle, ClassifierHead, ConvNormAct, SmallNet, init_weights

# --------------------------------------------------------------------------------------------
# What v1 and v2 share: the stem and the stage loop


def shuffle_stem(in_chans: int, stem: ShuffleStem) -> nn.Sequential:
    """Conv1 3x3 - BN - ReLU, then max-pool 3x3/s2 (total stride 4); the CIFAR stem: stride 1, no pool."""
    seq = nn.Sequential()
    seq.add_module("conv", ConvNormAct(in_chans, stem.out_chs, 3, stride=stem.stride))
    seq.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1) if stem.pool else nn.Identity())
    return seq


def build_stages(spec: _ShuffleNetSpec, make_unit: Callable[[ShuffleV1Block | ShuffleV2Block], nn.Module]) -> nn.Sequential:
    """One ``nn.Sequential`` of units per stage of the spec."""
    return nn.Sequential(*(nn.Sequential(*(make_unit(unit) for unit in stage)) for stage in spec.stages))


# --------------------------------------------------------------------------------------------
# ShuffleNet v1


class ShuffleV1Branch(nn.Sequential):
    """Figure 2(b)/(c) residual branch: 1x1 GConv - BN - ReLU, shuffle, 3x3 DWConv - BN, 1x1 GConv - BN.

    The shuffle only follows a grouped conv (``pw1_groups > 1``): after a dense conv a fixed
    channel permutation changes nothing the conv's weights could not absorb, so it is an ``nn.Identity``.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, stride: int, groups: int, pw1_groups: int):
        super().__init__()
        self.pw1 = ConvNormAct(in_chs, mid_chs, 1, groups=pw1_groups)
        self.shuffle = ChannelShuffle(groups) if pw1_groups > 1 else nn.Identity()
        self.dw = ConvNormAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act=None)
        self.pw2 = ConvNormAct(mid_chs, out_chs, 1, groups=groups, act=None)

    @classmethod
    def of(cls, unit: ShuffleV1Block) -> ShuffleV1Branch:
        return cls(unit.in_chs, unit.mid_chs, unit.branch_out_chs, unit.stride, unit.groups, unit.pw1_groups)


class ShuffleV1Unit(nn.Module):
    """Figure 2(b): stride 1, ``relu(x + branch(x))``."""

    def __init__(self, unit: ShuffleV1Block):
        super().__init__()
        self.branch = ShuffleV1Branch.of(unit)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class ShuffleV1DownUnit(nn.Module):
    """Figure 2(c): stride 2, ``relu(cat(avgpool3x3/s2(x), branch(x)))``; the branch makes ``out - in`` channels."""

    def __init__(self, unit: ShuffleV1Block):
        super().__init__()
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)
        self.branch = ShuffleV1Branch.of(unit)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat((self.shortcut(x), self.branch(x)), dim=1))


class ShuffleNetV1(SmallNet):
    """Stem, three stages of ShuffleNet units (Table 1), GAP, FC."""

    def __init__(self, spec: ShuffleNetV1Spec):
        super().__init__()
        self.spec = spec
        self.stem = shuffle_stem(spec.in_chans, spec.stem)
        self.stages = build_stages(spec, lambda unit: ShuffleV1Unit(unit) if unit.kind == "residual" else ShuffleV1DownUnit(unit))
        self.num_features = spec.num_features
        self.neck = nn.Identity()
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)


# --------------------------------------------------------------------------------------------
# ShuffleNet v2


class ShuffleV2Branch(nn.Sequential):
    """Figure 3(c)/(d) right branch: 1x1 - BN - ReLU, 3x3 DWConv - BN, 1x1 - BN - ReLU."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.pw1 = ConvNormAct(in_chs, mid_chs, 1)
        self.dw = ConvNormAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act=None)
        self.pw2 = ConvNormAct(mid_chs, out_chs, 1)

    @classmethod
    def of(cls, unit: ShuffleV2Block) -> ShuffleV2Branch:
        return cls(unit.branch_in_chs, unit.mid_chs, unit.branch_out_chs, unit.stride)


class ShuffleV2Unit(nn.Module):
    """Figure 3(c): split the channels (the paper: in halves), transform the second part, concat, shuffle (groups 2)."""

    def __init__(self, unit: ShuffleV2Block):
        super().__init__()
        self.split_chs = (unit.left_chs, unit.branch_in_chs)
        self.branch = ShuffleV2Branch.of(unit)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, x = x.split(self.split_chs, dim=1)
        return self.shuffle(torch.cat((keep, self.branch(x)), dim=1))


class ShuffleV2DownUnit(nn.Module):
    """Figure 3(d): no split; ``shortcut`` (the left branch: 3x3 DWConv - BN, 1x1 - BN - ReLU) and the
    right branch (the paper: half the output each); concat, shuffle (groups 2)."""

    def __init__(self, unit: ShuffleV2Block):
        super().__init__()
        in_chs = unit.in_chs
        self.shortcut = nn.Sequential()
        self.shortcut.add_module("dw", ConvNormAct(in_chs, in_chs, 3, unit.stride, groups=in_chs, act=None))
        self.shortcut.add_module("pw", ConvNormAct(in_chs, unit.left_chs, 1))
        self.branch = ShuffleV2Branch.of(unit)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(torch.cat((self.shortcut(x), self.branch(x)), dim=1))


class ShuffleNetV2(SmallNet):
    """Stem, three stages of ShuffleNet v2 units (Table 5), conv5 1x1, GAP, FC; exactly torchvision's network."""

    def __init__(self, spec: ShuffleNetV2Spec):
        super().__init__()
        self.spec = spec
        self.stem = shuffle_stem(spec.in_chans, spec.stem)
        self.stages = build_stages(spec, lambda unit: ShuffleV2Unit(unit) if unit.kind == "split" else ShuffleV2DownUnit(unit))
        self.num_features = spec.num_features
        self.neck = ConvNormAct(spec.stages_chs, self.num_features, 1)
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)


def spec_for_shapes(spec: _ShuffleNetSpec, shapes: Mapping[str, tuple[int, ...]]) -> _ShuffleNetSpec:
    """``spec`` with the stem's and every unit's widths read from the state-dict ``shapes`` (a pruned
    model's); v1 units keep their groups, v2 units their kind."""
    stem = replace(spec.stem, out_chs=shapes["stem.conv.conv.weight"][0])
    stages, chs = [], stem.out_chs
    for i, stage in enumerate(spec.stages):
        units = []
        for j, unit in enumerate(stage):
            key = f"stages.{i}.{j}."
            mid = shapes[key + "branch.pw1.conv.weight"][0]
            branch_out = shapes[key + "branch.pw2.conv.weight"][0]
            if isinstance(unit, ShuffleV1Block):
                out = branch_out if unit.kind == "residual" else chs + branch_out
                unit = replace(unit, in_chs=chs, mid_chs=mid, out_chs=out)
            else:
                left = chs - shapes[key + "branch.pw1.conv.weight"][1] if unit.kind == "split" else shapes[key + "shortcut.pw.conv.weight"][0]
                unit = replace(unit, in_chs=chs, mid_chs=mid, left_chs=left, out_chs=left + branch_out)
            units.append(unit)
            chs = unit.out_chs
        stages.append(tuple(units))
    extra = {"neck_chs": shapes["neck.conv.weight"][0]} if isinstance(spec, ShuffleNetV2Spec) else {}
    return replace(spec, stem=stem, stages=tuple(stages), **extra)
