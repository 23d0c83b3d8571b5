"""MobileNetV1 (Howard et al. 2017, arXiv:1704.04861) and MobileNetV2 (Sandler et al. 2018,
arXiv:1801.04381) as specs: the papers' tables, the knobs, and the published figures."""

from __future__ import annotations

from dataclasses import dataclass

from smallnets._checks import check_bool, check_int
from smallnets.arch.inverted import Conv, Separable, Stage, _ConvNetSpec, check_common_knobs, cifar_stem, scale_depth, scale_width, separable_blocks, table_blocks
from smallnets.arch.spec import Entry, Published

V1_PAPER = "Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications, arXiv:1704.04861"
V2_PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381"

# MobileNetV1 Table 1 after the stem (conv3x3/s2, 32 channels): one row per output width of the
# depthwise-separable layers, 13 in all.
V1_STEM = 32
V1_TABLE = (
    Stage(out=64, repeats=1, stride=1),  # 112 -> 112
    Stage(out=128, repeats=2, stride=2),  # 112 -> 56
    Stage(out=256, repeats=2, stride=2),  # 56 -> 28
    Stage(out=512, repeats=6, stride=2),  # 28 -> 14
    Stage(out=1024, repeats=2, stride=2),  # 14 -> 7 (Table 1's second "dw/s2" here is stride 1: its input is 7x7)
)
# Table 5's "Shallow MobileNet": the five separable layers of feature size 14x14x512 removed.
V1_SHALLOW = (*V1_TABLE[:3], Stage(out=512, repeats=1, stride=2), V1_TABLE[4])

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


@dataclass(frozen=True, kw_only=True)
class MobileNetV1Spec(_ConvNetSpec):
    """Stem, depthwise-separable layers, optional 1x1 head conv, GAP, dropout, FC.

    Figure 3 draws ReLU; the released TF-slim reference (and timm, whose checkpoints load) uses
    ReLU6, the default ``act``.
    """

    family = "mobilenet_v1"


@dataclass(frozen=True, kw_only=True)
class MobileNetV2Spec(_ConvNetSpec):
    """Stem, inverted bottlenecks (ReLU6, linear projection), 1x1 conv to 1280, GAP, dropout, FC; as torchvision."""

    family = "mobilenet_v2"


def mobilenet_v1(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    separable: bool = True,
    shallow: bool = False,
    drop_rate: float = 0.0,
    cifar: bool = False,
    head_chs: int | None = None,
) -> MobileNetV1Spec:
    """MobileNetV1. ``width_mult`` is the paper's alpha (channels ``make_divisible(c * alpha, 8)``,
    stem included).

    The paper's resolution multiplier rho is simply the input size (224, 192, 160, 128 px): the
    network is fully convolutional up to global pooling. ``depth_mult`` scales every stage's
    repeats (ceil), so compound scaling applies (EfficientNet Table 3). ``separable=False`` is
    Table 4's "Conv MobileNet" (one full 3x3 conv per pair). ``shallow=True`` is Table 5's
    "Shallow MobileNet": the five 14x14x512 layers after the first are removed (the 512 row keeps
    one layer; ``depth_mult`` then scales what is left). ``head_chs`` adds a 1x1 conv head of
    that width before pooling (not in the paper; timm's ``mobilenetv1_100h``).
    """
    check_common_knobs(width_mult=width_mult, depth_mult=depth_mult, drop_rate=drop_rate, cifar=cifar)
    check_bool("separable", separable)
    check_bool("shallow", shallow)
    if head_chs is not None:
        check_int("head_chs", head_chs)
    base = MobileNetV1Spec(num_classes=num_classes, in_chans=in_chans, stem=Conv(out_chs=V1_STEM, stride=2),
                           stages=separable_blocks(V1_SHALLOW if shallow else V1_TABLE, V1_STEM, separable=separable), neck_chs=head_chs,
                           act="relu6", drop_rate=drop_rate)  # fmt: skip
    spec = scale_width(scale_depth(base, depth_mult), width_mult, neck="keep")
    return cifar_stem(spec) if cifar else spec


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
) -> MobileNetV2Spec:
    """MobileNetV2 exactly as torchvision builds it. ``width_mult`` rounds channels with
    ``make_divisible(c * alpha, 8)`` (the final 1280 only grows: the paper applies the multiplier
    to every layer but the last conv when it is < 1); ``depth_mult`` scales repeats (ceil);
    ``drop_path_rate`` adds stochastic depth on the residual branches (linear in block index; 0 =
    the paper). ``fix_stem_head`` keeps the stem (32), the last conv (1280) and the depth of the
    first and last rows unscaled (not in the paper; timm's ``mobilenetv2_110d`` = width 1.1, depth
    1.2 and ``mobilenetv2_120d`` = width 1.2, depth 1.4)."""
    check_common_knobs(width_mult=width_mult, depth_mult=depth_mult, drop_rate=drop_rate, cifar=cifar, drop_path_rate=drop_path_rate)
    check_bool("fix_stem_head", fix_stem_head)
    base = MobileNetV2Spec(num_classes=num_classes, in_chans=in_chans, stem=Conv(out_chs=V2_STEM, stride=2),
                           stages=table_blocks(V2_TABLE, V2_STEM), neck_chs=V2_LAST, act="relu6",
                           drop_rate=drop_rate, drop_path_rate=drop_path_rate)  # fmt: skip
    rows = range(1, len(V2_TABLE) - 1) if fix_stem_head else None  # the first and last rows keep their single block
    spec = scale_width(scale_depth(base, depth_mult, stages=rows), width_mult, stem=not fix_stem_head, neck="keep" if fix_stem_head else "grow")
    return cifar_stem(spec) if cifar else spec


ENTRIES = (
    Entry(
        name="mobilenet_v1",
        family="mobilenet_v1",
        paper=V1_PAPER,
        spec=mobilenet_v1,
        published=(
            Published(top1=70.6, params=4.2e6, macs=569e6, source="MobileNetV1 paper Table 6"),
            Published(top1=68.4, params=2.6e6, macs=325e6, knobs={"width_mult": 0.75}, source="MobileNetV1 paper Table 6"),
            Published(top1=63.7, params=1.3e6, macs=149e6, knobs={"width_mult": 0.5}, source="MobileNetV1 paper Table 6"),
            Published(top1=50.6, params=0.5e6, macs=41e6, knobs={"width_mult": 0.25}, source="MobileNetV1 paper Table 6"),
            Published(top1=69.1, params=4.2e6, macs=418e6, input_size=(3, 192, 192), source="MobileNetV1 paper Table 7"),
            Published(top1=67.2, params=4.2e6, macs=291e6, input_size=(3, 160, 160), source="MobileNetV1 paper Table 7"),
            Published(top1=64.4, params=4.2e6, macs=186e6, input_size=(3, 128, 128), source="MobileNetV1 paper Table 7"),
            Published(top1=71.7, params=29.3e6, macs=4866e6, knobs={"separable": False}, source="MobileNetV1 paper Table 4 (Conv MobileNet)"),
            Published(top1=65.3, params=2.9e6, macs=307e6, knobs={"shallow": True}, source="MobileNetV1 paper Table 5 (Shallow MobileNet)"),
        ),
        representative=True,
    ),
    Entry(
        name="mobilenet_v2",
        family="mobilenet_v2",
        paper=V2_PAPER,
        spec=mobilenet_v2,
        published=(
            Published(top1=72.0, params=3.4e6, macs=300e6, source="MobileNetV2 paper Table 4"),
            Published(top1=74.7, params=6.9e6, macs=585e6, knobs={"width_mult": 1.4}, source="MobileNetV2 paper Table 4"),
        ),
        representative=True,
    ),
)

__all__ = ["MobileNetV1Spec", "MobileNetV2Spec", "Separable", "V1_TABLE", "V2_TABLE", "mobilenet_v1", "mobilenet_v2"]
