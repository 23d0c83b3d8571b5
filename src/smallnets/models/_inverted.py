"""What MobileNetV1/V2 and EfficientNet share: the stage table, its width/depth scaling, the stage loop and the inverted bottleneck."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from smallnets._checks import check_bool, check_positive, check_range
from smallnets.layers import ConvNormAct, DropPath, ModuleFactory, SqueezeExcite, make_divisible, round_repeats


@dataclass(frozen=True)
class Stage:
    """One row of a MobileNet / EfficientNet table: ``repeats`` blocks, the first with ``stride``."""

    out: int  # output channels (at width 1.0)
    repeats: int  # blocks in the stage (at depth 1.0)
    stride: int  # stride of the first block; the others are stride 1
    expand: int = 1  # hidden channels = expand * input channels (inverted bottlenecks)
    kernel: int = 3  # depthwise kernel size


def scale_table(table: Sequence[Stage], width_mult: float, depth_mult: float) -> tuple[Stage, ...]:
    """The table with every stage's channels rounded by ``make_divisible(out * width_mult, 8)`` and
    its repeats by ``ceil(repeats * depth_mult)``: the width / depth multipliers of all three papers."""
    return tuple(replace(s, out=make_divisible(s.out * width_mult, 8), repeats=round_repeats(s.repeats, depth_mult)) for s in table)


def cifar_table(table: Sequence[Stage]) -> tuple[Stage, ...]:
    """The table with its first stride-2 stage at stride 1 (with a stride-1 stem: total stride 8)."""
    first = next(i for i, s in enumerate(table) if s.stride == 2)
    return tuple(replace(s, stride=1) if i == first else s for i, s in enumerate(table))


# (row, in_chs, stride, drop_path) -> block; the block's output channels are ``row.out``.
BlockFactory = Callable[[Stage, int, int, float], nn.Module]


def build_stages(table: Sequence[Stage], in_chs: int, make_block: BlockFactory, drop_path_rate: float = 0.0) -> tuple[nn.Sequential, int]:
    """One ``nn.Sequential`` per row; returns the stages and their output channels.

    Stochastic depth grows linearly with the global block index i (0-based) over all N blocks:
    ``p_i = drop_path_rate * i / N``, as the EfficientNet reference implementations do.
    """
    total = sum(s.repeats for s in table)
    stages, index = [], 0
    for row in table:
        blocks = []
        for i in range(row.repeats):
            blocks.append(make_block(row, in_chs, row.stride if i == 0 else 1, drop_path_rate * index / total))
            in_chs, index = row.out, index + 1
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), in_chs


class InvertedBottleneck(nn.Module):
    """MobileNetV2's inverted bottleneck, EfficientNet's MBConv: expand 1x1 -> depthwise kxk -> [SE] -> linear 1x1.

    The expansion is omitted (``nn.Identity``) when ``expand == 1``; SE is omitted when
    ``se_ratio == 0``. Its squeeze width is a fraction of the block's *input* channels, as in
    EfficientNet. No shortcut: this is the block that changes stride or channels.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        *,
        expand: int = 6,
        kernel: int = 3,
        se_ratio: float = 0.0,
        act: ModuleFactory = nn.ReLU6,
        norm: ModuleFactory = nn.BatchNorm2d,
        same_padding: bool = False,
    ):
        super().__init__()
        hidden = int(round(in_chs * expand))
        self.expand = ConvNormAct(in_chs, hidden, 1, norm=norm, act=act) if expand != 1 else nn.Identity()
        self.dw = ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, norm=norm, act=act, padding="same" if same_padding else None)
        self.se = SqueezeExcite(hidden, max(1, int(in_chs * se_ratio)), act=act) if se_ratio > 0 else nn.Identity()
        self.project = ConvNormAct(hidden, out_chs, 1, norm=norm, act=None)  # linear bottleneck: no activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(self.expand(x))))


class InvertedResidual(InvertedBottleneck):
    """The inverted bottleneck with its identity shortcut (stride 1, same channels); DropPath on the branch."""

    def __init__(self, chs: int, *, drop_path: float = 0.0, **kwargs):
        super().__init__(chs, chs, 1, **kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(super().forward(x))


def inverted_block(row: Stage, in_chs: int, stride: int, drop_path: float, **kwargs) -> InvertedBottleneck:
    """The block for a table position: with the shortcut exactly when stride is 1 and channels are kept."""
    if stride == 1 and in_chs == row.out:
        return InvertedResidual(in_chs, expand=row.expand, kernel=row.kernel, drop_path=drop_path, **kwargs)
    return InvertedBottleneck(in_chs, row.out, stride, expand=row.expand, kernel=row.kernel, **kwargs)


def check_common_knobs(*, width_mult: float, depth_mult: float, drop_rate: float, cifar: bool, drop_path_rate: float = 0.0) -> None:
    """The knobs all three families share; each error names the argument, the rule and the value."""
    check_positive("width_mult", width_mult)
    check_positive("depth_mult", depth_mult)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
