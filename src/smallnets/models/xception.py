"""Xception: entry, middle and exit flows of depthwise separable convolutions (Chollet 2017, arXiv:1610.02357)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from smallnets._checks import check_bool, check_int, check_range
from smallnets.layers import ClassifierHead, ConvNormAct, ModuleFactory, SmallNet, init_weights
from smallnets.registry import Published, register_model

PAPER = "Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357"


@dataclass(frozen=True)
class Flow:
    """A stage of Figure 5: ``blocks`` residual blocks of ``convs`` separable convs each, all ending at ``out`` channels."""

    name: str  # stage name: the flow it belongs to
    out: int  # output channels of every block in the stage
    blocks: int  # residual blocks
    convs: int  # ReLU - SeparableConv - BN units per block
    stride: int  # of the first block (3x3/s2 max-pool at its end); the others are stride 1
    start_with_relu: bool = True  # False for the very first block: the stem already ends in a ReLU
    grow_first: bool = True  # widen at the first separable conv (else at the last)


# Figure 5 after the stem (conv 3x3/s2 32, conv 3x3 64, both unpadded: 299 -> 149 -> 147). Every
# stride change opens a stage, so the entry flow is three stages; the middle flow is one.
XCEPTION_TABLE = (
    Flow(name="entry1", out=128, blocks=1, convs=2, stride=2, start_with_relu=False),  # 147 -> 74
    Flow(name="entry2", out=256, blocks=1, convs=2, stride=2),  # 74 -> 37
    Flow(name="entry3", out=728, blocks=1, convs=2, stride=2),  # 37 -> 19
    Flow(name="middle", out=728, blocks=8, convs=3, stride=1),  # 19 -> 19, "repeated eight times"
    Flow(name="exit", out=1024, blocks=1, convs=2, stride=2, grow_first=False),  # 19 -> 10 (728, then 1024)
)
STEM = (32, 64)
EXIT_CONVS = (1536, 2048)  # exit flow's closing separable convs (each followed by BN, ReLU): the neck


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
    """Figure 5 block: ``convs`` x [ReLU, SeparableConv, BN], 3x3/s2 max-pool if strided, plus the shortcut.

    The shortcut is a 1x1 conv (stride ``stride``) + BN where the shape changes, else the identity.
    The first ReLU sees the block's input, which the identity shortcut also takes before any ReLU.
    """

    def __init__(self, in_chs: int, out_chs: int, convs: int, stride: int, *, start_with_relu: bool = True, grow_first: bool = True):
        super().__init__()
        if grow_first:
            widths = [in_chs] + [out_chs] * convs
        else:
            widths = [in_chs] * convs + [out_chs]
        same_shape = in_chs == out_chs and stride == 1
        # registered before the main path, as the reference implementations do (same state-dict order)
        self.skip = nn.Identity() if same_shape else ConvNormAct(in_chs, out_chs, 1, stride, act=None)
        self.main = nn.Sequential()
        for i in range(convs):
            self.main.add_module(f"act{i + 1}", nn.ReLU() if start_with_relu or i > 0 else nn.Identity())
            self.main.add_module(f"sep{i + 1}", SeparableConvNormAct(widths[i], widths[i + 1]))
        self.pool = nn.MaxPool2d(3, stride=stride, padding=1) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.main(x)) + self.skip(x)


class Xception(SmallNet):
    """Stem, entry flow (3 stages), middle flow, exit-flow block, neck (2 separable convs), GAP, dropout, FC.

    Layer for layer timm's ``legacy_xception`` (the Keras reference). ``cifar``: both stem convs
    padded and at stride 1, and the first entry block at stride 1 (32 -> 32 -> 16 -> 8 -> 8 -> 4).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        middle_repeats: int = 8,
        drop_rate: float = 0.5,
        cifar: bool = False,
    ):
        super().__init__()
        check_int("middle_repeats", middle_repeats, 1)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        check_bool("cifar", cifar)
        table = [replace(row, blocks=middle_repeats) if row.name == "middle" else row for row in XCEPTION_TABLE]
        if cifar:
            table[0] = replace(table[0], stride=1)

        padding = 1 if cifar else 0  # the paper's stem convs are unpadded ("valid")
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvNormAct(in_chans, STEM[0], 3, 1 if cifar else 2, padding=padding))
        self.stem.add_module("conv2", ConvNormAct(STEM[0], STEM[1], 3, padding=padding))

        self.stages = nn.Sequential()
        in_chs = STEM[1]
        for row in table:
            blocks = []
            for i in range(row.blocks):
                stride = row.stride if i == 0 else 1
                blocks.append(
                    XceptionBlock(in_chs, row.out, row.convs, stride, start_with_relu=row.start_with_relu, grow_first=row.grow_first)
                )
                in_chs = row.out
            self.stages.add_module(row.name, nn.Sequential(*blocks))

        self.neck = nn.Sequential()
        for i, out_chs in enumerate(EXIT_CONVS):
            self.neck.add_module(f"sep{i + 1}", SeparableConvNormAct(in_chs, out_chs, act=nn.ReLU))
            in_chs = out_chs
        self.num_features = in_chs
        self.classifier = ClassifierHead(self.num_features, num_classes, drop_rate)
        init_weights(self)  # timm's init for convs and BN (He-normal fan-out, unit BN)


@register_model(
    "xception",
    family="xception",
    paper=PAPER,
    input_size=(3, 299, 299),
    published=(Published(top1=79.0, params=22_855_952, source="Xception paper Table 1 (top-1), Table 3 (params)"),),
    representative=True,
)
def xception(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    middle_repeats: int = 8,
    drop_rate: float = 0.5,
    cifar: bool = False,
) -> Xception:
    """Xception at 299x299. ``middle_repeats``: blocks in the middle flow (the paper's 8).
    ``drop_rate``: Section 4.3's dropout 0.5 before the logistic layer on ImageNet (timm uses 0)."""
    return Xception(num_classes, in_chans, middle_repeats=middle_repeats, drop_rate=drop_rate, cifar=cifar)
