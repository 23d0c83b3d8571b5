"""EfficientNet-B0 to B7 (Tan & Le 2019, arXiv:1905.11946) as specs: the B0 table under compound
scaling, as torchvision builds it; B1-B7 are the B0 spec passed through the official coefficients."""

from __future__ import annotations

from dataclasses import dataclass

from smallnets._checks import check_bool
from smallnets.arch.inverted import Conv, Stage, _ConvNetSpec, check_common_knobs, cifar_stem, scale_depth, scale_width, table_blocks
from smallnets.arch.spec import Entry, Published

PAPER = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, arXiv:1905.11946"

# EfficientNet-B0, paper Table 1, after the stem (conv3x3/s2, 32 channels); input sides for 224 px.
B0_STEM = 32
B0_TABLE = (
    Stage(expand=1, kernel=3, out=16, repeats=1, stride=1),  # 112 -> 112
    Stage(expand=6, kernel=3, out=24, repeats=2, stride=2),  # 112 -> 56
    Stage(expand=6, kernel=5, out=40, repeats=2, stride=2),  # 56 -> 28
    Stage(expand=6, kernel=3, out=80, repeats=3, stride=2),  # 28 -> 14
    Stage(expand=6, kernel=5, out=112, repeats=3, stride=1),  # 14 -> 14
    Stage(expand=6, kernel=5, out=192, repeats=4, stride=2),  # 14 -> 7
    Stage(expand=6, kernel=3, out=320, repeats=1, stride=1),  # 7 -> 7
)
SE_RATIO = 0.25  # squeeze width = a quarter of the block's input channels
NECK_EXPANSION = 4  # final 1x1 conv: 4 x the last block's channels (1280 for B0)


@dataclass(frozen=True)
class Coefficients:
    """One EfficientNet variant: its scaling coefficients and what paper Table 2 reports for it."""

    name: str
    width: float  # width multiplier (the official code's rounding of beta ** phi)
    depth: float  # depth multiplier (alpha ** phi, rounded likewise)
    resolution: int  # input side in pixels
    dropout: float  # before the classifier
    top1: float  # paper Table 2, ImageNet top-1 (%)
    params: float  # paper Table 2
    macs: float  # paper Table 2 "FLOPs", which are mult-adds


# The official coefficient table (TF reference efficientnet_params, also torchvision's).
COEFFICIENTS = (
    Coefficients(name="efficientnet_b0", width=1.0, depth=1.0, resolution=224, dropout=0.2, top1=77.1, params=5.3e6, macs=0.39e9),
    Coefficients(name="efficientnet_b1", width=1.0, depth=1.1, resolution=240, dropout=0.2, top1=79.1, params=7.8e6, macs=0.70e9),
    Coefficients(name="efficientnet_b2", width=1.1, depth=1.2, resolution=260, dropout=0.3, top1=80.1, params=9.2e6, macs=1.0e9),
    Coefficients(name="efficientnet_b3", width=1.2, depth=1.4, resolution=300, dropout=0.3, top1=81.6, params=12e6, macs=1.8e9),
    Coefficients(name="efficientnet_b4", width=1.4, depth=1.8, resolution=380, dropout=0.4, top1=82.9, params=19e6, macs=4.2e9),
    Coefficients(name="efficientnet_b5", width=1.6, depth=2.2, resolution=456, dropout=0.4, top1=83.6, params=30e6, macs=9.9e9),
    Coefficients(name="efficientnet_b6", width=1.8, depth=2.6, resolution=528, dropout=0.5, top1=84.0, params=43e6, macs=19e9),
    Coefficients(name="efficientnet_b7", width=2.0, depth=3.1, resolution=600, dropout=0.5, top1=84.3, params=66e6, macs=37e9),
)


@dataclass(frozen=True, kw_only=True)
class EfficientNetSpec(_ConvNetSpec):
    """Stem, MBConv stages (SiLU, SE, stochastic depth), 1x1 conv to 4x the last width, GAP, dropout, FC.

    ``same_padding``: TensorFlow's "SAME" padding (strided convs pad the odd pixel bottom/right),
    for TF-ported checkpoints.
    """

    family = "efficientnet"
    same_padding: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool("same_padding", self.same_padding)


def efficientnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.2,
    cifar: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    same_padding: bool = False,
) -> EfficientNetSpec:
    """EfficientNet from the B0 table: channels ``make_divisible(c * width_mult, 8)``, repeats
    ``ceil(n * depth_mult)``; ``efficientnet_b1..b7`` pin the official (width, depth) pairs.

    Stochastic depth grows linearly with the block index i of N blocks: ``drop_path_rate * i / N``.
    ``bn_eps`` / ``bn_momentum`` (PyTorch convention) are 1e-3 / 0.01 for torchvision's B5-B7; timm's
    TF ports use eps 1e-3 with ``same_padding=True``.
    """
    check_common_knobs(width_mult=width_mult, depth_mult=depth_mult, drop_rate=drop_rate, cifar=cifar, drop_path_rate=drop_path_rate)
    base = EfficientNetSpec(num_classes=num_classes, in_chans=in_chans, stem=Conv(out_chs=B0_STEM, stride=2),
                            stages=table_blocks(B0_TABLE, B0_STEM, se_ratio=SE_RATIO), neck_chs=NECK_EXPANSION * B0_TABLE[-1].out,
                            act="silu", bn_eps=bn_eps, bn_momentum=bn_momentum, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                            same_padding=same_padding)  # fmt: skip
    spec = scale_width(scale_depth(base, depth_mult), width_mult, neck="expand4")
    return cifar_stem(spec) if cifar else spec


_GENERIC_DEFAULTS = {"width_mult": 1.0, "depth_mult": 1.0, "drop_rate": 0.2}


def _table2(c: Coefficients, knobs: dict | None = None) -> Published:
    side = c.resolution
    return Published(top1=c.top1, params=c.params, macs=c.macs, knobs=knobs or {}, input_size=(3, side, side), source="EfficientNet paper Table 2")


ENTRIES = (
    Entry(
        name="efficientnet",
        family="efficientnet",
        paper=PAPER,
        spec=efficientnet,
        # B0-B7 as configurations of the generic builder (knobs at their defaults are left out).
        published=tuple(
            _table2(c, {k: v for k, v in zip(_GENERIC_DEFAULTS, (c.width, c.depth, c.dropout)) if v != _GENERIC_DEFAULTS[k]})
            for c in COEFFICIENTS
        ),
    ),
    *(
        Entry(
            name=c.name,
            family="efficientnet",
            paper=PAPER,
            spec=efficientnet,
            input_size=(3, c.resolution, c.resolution),
            fixed={"width_mult": c.width, "depth_mult": c.depth},
            defaults={"drop_rate": c.dropout},
            published=(_table2(c),),
            representative=c.name == "efficientnet_b0",
        )
        for c in COEFFICIENTS
    ),
)
