"""ResNet (He et al. 2016, arXiv:1512.03385) and ResNeXt (Xie et al. 2017, arXiv:1611.05431) as specs:
Table 1's stages, every residual block with its explicit widths, the knobs, and the published figures."""

from __future__ import annotations

from dataclasses import dataclass

from smallnets._checks import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_range,
)
from smallnets.arch.spec import (
    ArchSpec,
    Entry,
    Published,
    check_channels,
    check_stage_chain,
    check_stride,
    make_divisible,
    round_repeats,
)

PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
RESNEXT_PAPER = "Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks, arXiv:1611.05431"

# A block's shortcut: the identity; "conv", a 1x1 conv (at the block's stride) + BN, the paper's option B
# (torchvision's downsample); "pad", option A: the input subsampled at the block's stride, zero channels
# appended up to out_chs (no parameters; Section 4.2's CIFAR networks)
SHORTCUTS = ("identity", "conv", "pad")
# The stem: "imagenet" is Table 1's conv1 (7x7/2, 64) - BN - ReLU and 3x3/2 max-pool; "cifar" a 3x3/1 conv -
# BN - ReLU and no pooling (the usual adaptation for 32x32 inputs: the stages then end at 32, 16, 8, 4 px).
STEMS = ("imagenet", "cifar")
EXPANSION = 4  # a bottleneck block's output is 4x its base width (Table 1: 64 -> 256)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A row of Table 1: ``repeats`` blocks of base width ``width`` (the 3x3 convs' width), the first at ``stride``."""

    width: int  # basic blocks: every conv's output; bottleneck: the 1x1 reduce / 3x3 width, the block output is 4x it
    repeats: int
    stride: int


# Table 1 (sides at 224 input: conv1 and the max-pool end at 56). The first block of conv3_x ... conv5_x
# downsamples; torchvision's "V1.5" places that stride on the bottleneck's 3x3 conv (the paper: on the first 1x1).
STEM_CHS = 64
STAGE_WIDTHS = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride): conv2_x 56 -> 56, conv3_x -> 28, conv4_x -> 14, conv5_x -> 7
DEPTHS = {  # depth -> (block, repeats of conv2_x ... conv5_x)
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def table(depth: int) -> tuple[Stage, ...]:
    """Table 1's four rows for ``depth`` layers."""
    _, repeats = DEPTHS[depth]
    return tuple(Stage(width=w, repeats=n, stride=s) for (w, s), n in zip(STAGE_WIDTHS, repeats))


def _check_shortcut(where: str, shortcut: str, stride: int, in_chs: int, out_chs: int) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"{where}: shortcut must be one of {', '.join(map(repr, SHORTCUTS))}; got {shortcut!r}")
    if shortcut == "identity" and (stride != 1 or in_chs != out_chs):
        raise ValueError(
            f"{where}: shortcut 'identity' needs stride 1 and in_chs == out_chs, got stride {stride}, {in_chs} -> {out_chs}; use shortcut 'conv'"
        )
    if shortcut == "pad" and out_chs < in_chs:
        raise ValueError(f"{where}: shortcut 'pad' needs out_chs >= in_chs (it appends zero channels), got {in_chs} -> {out_chs}; use shortcut 'conv'")


@dataclass(frozen=True, kw_only=True)
class Basic:
    """Figure 2 left (ResNet-18/34): 3x3 conv (at ``stride``) to ``mid_chs`` - BN - ReLU, 3x3 conv to
    ``out_chs`` - BN, plus the shortcut, then ReLU."""

    in_chs: int
    mid_chs: int
    out_chs: int
    stride: int = 1
    shortcut: str = "identity"  # one of SHORTCUTS

    def __post_init__(self) -> None:
        where = f"Basic(in_chs={self.in_chs!r}, mid_chs={self.mid_chs!r}, out_chs={self.out_chs!r})"
        check_channels(where, in_chs=self.in_chs, mid_chs=self.mid_chs, out_chs=self.out_chs)
        check_stride(where, self.stride)
        _check_shortcut(where, self.shortcut, self.stride, self.in_chs, self.out_chs)


@dataclass(frozen=True, kw_only=True)
class Bottleneck:
    """Figure 5 right / ResNeXt Figure 3(c): 1x1 conv to ``reduce_chs`` - BN - ReLU, 3x3 conv of ``groups``
    groups (at ``stride``) to ``spatial_chs`` - BN - ReLU, 1x1 conv to ``out_chs`` - BN, plus the
    shortcut, then ReLU. ResNet: ``groups=1``; ResNeXt: ``groups`` is the cardinality C."""

    in_chs: int
    reduce_chs: int  # the first 1x1 conv's output (ResNeXt: C x d)
    spatial_chs: int  # the 3x3 conv's output (the same as reduce_chs unless pruned)
    out_chs: int
    groups: int = 1
    stride: int = 1
    shortcut: str = "identity"  # one of SHORTCUTS

    def __post_init__(self) -> None:
        where = f"Bottleneck(in_chs={self.in_chs!r}, reduce_chs={self.reduce_chs!r}, spatial_chs={self.spatial_chs!r}, out_chs={self.out_chs!r})"
        check_channels(where, in_chs=self.in_chs, reduce_chs=self.reduce_chs, spatial_chs=self.spatial_chs, out_chs=self.out_chs)
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ValueError(f"{where}: groups must be an integer >= 1, got {self.groups!r}")
        for name, chs in (("reduce_chs", self.reduce_chs), ("spatial_chs", self.spatial_chs)):
            if chs % self.groups:
                raise ValueError(f"{where}: groups must divide {name}: {chs} is not divisible by groups={self.groups}")
        check_stride(where, self.stride)
        _check_shortcut(where, self.shortcut, self.stride, self.in_chs, self.out_chs)


Block = Basic | Bottleneck


@dataclass(frozen=True, kw_only=True)
class ResNetSpec(ArchSpec):
    """Stem (conv - BN - ReLU [- max-pool]), stages of residual blocks (each block's input = the previous
    output), GAP, dropout, FC; no neck."""

    family = "resnet"
    stem_chs: int = STEM_CHS
    stem: str = "imagenet"  # one of STEMS
    stages: tuple[tuple[Block, ...], ...]
    drop_rate: float = 0.0  # dropout before the classifier (not in the paper; torchvision has none)
    zero_init_residual: bool = False  # start each block's last BN at scale 0, so every block starts as the identity

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_channels(name, stem_chs=self.stem_chs)
        check_choice(f"{name}: stem", self.stem, STEMS)
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_bool("zero_init_residual", self.zero_init_residual)
        check_stage_chain(name, self.stem_chs, self.stages, (Basic, Bottleneck))

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def num_features(self) -> int:
        return self.stages[-1][-1].out_chs


def residual_stages(rows: tuple[Stage, ...], in_chs: int, block: str, *, groups: int = 1, width_per_group: int = 64,
                    projection: str = "conv") -> tuple[tuple[Block, ...], ...]:  # fmt: skip
    """The table's rows as blocks with explicit widths: the first block of a row takes its stride and
    width change (through the ``projection`` shortcut: "conv" or "pad"), the others are stride 1 with the identity.

    Bottleneck widths are torchvision's: the 3x3 conv has ``int(width * width_per_group / 64) * groups``
    channels (ResNeXt's C x d; ``groups=1, width_per_group=64`` is ResNet's ``width``), the output 4 x width.
    """
    stages = []
    for row in rows:
        out_chs = row.width if block == "basic" else row.width * EXPANSION
        inner = int(row.width * (width_per_group / 64.0)) * groups
        if inner < groups:
            raise ValueError(f"width_per_group={width_per_group} leaves a stage of base width {row.width} with no channels per group")
        blocks = []
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            shortcut = "identity" if stride == 1 and in_chs == out_chs else projection
            if block == "basic":
                blocks.append(Basic(in_chs=in_chs, mid_chs=row.width, out_chs=out_chs, stride=stride, shortcut=shortcut))
            else:
                blocks.append(Bottleneck(in_chs=in_chs, reduce_chs=inner, spatial_chs=inner, out_chs=out_chs, groups=groups, stride=stride,
                                         shortcut=shortcut))  # fmt: skip
            in_chs = out_chs
        stages.append(tuple(blocks))
    return tuple(stages)


def resnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    depth: int = 50,
    groups: int = 1,
    width_per_group: int = 64,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    drop_rate: float = 0.0,
    zero_init_residual: bool = False,
    cifar: bool = False,
) -> ResNetSpec:
    """ResNet-``depth`` of Table 1, layer for layer torchvision's (V1.5: the stride on the bottleneck's 3x3 conv;
    option B shortcuts: a 1x1 conv + BN where the shape changes).

    ``groups`` (cardinality C) and ``width_per_group`` (d) make ResNeXt's grouped bottleneck (``groups=32,
    width_per_group=4`` is 32x4d; ``width_per_group=128`` is torchvision's Wide ResNet-50-2 layout);
    basic blocks (depth 18, 34) take neither. ``width_mult`` scales the stem and every stage's base width
    (``make_divisible(c * w, 8)``), ``depth_mult`` every stage's repeats (ceil), so EfficientNet's compound
    scaling applies (its Table 3 scales ResNet-50). ``drop_rate``: dropout before the FC (0 = the paper).
    ``zero_init_residual``: each block's last BN starts at 0 (Goyal et al. 2017; torchvision's option).
    ``cifar``: 3x3/1 stem conv without max-pool (32 -> 32, 16, 8, 4).
    """
    check_choice("depth", depth, DEPTHS)
    check_int("groups", groups, 1)
    check_int("width_per_group", width_per_group, 1)
    check_positive("width_mult", width_mult)
    check_positive("depth_mult", depth_mult)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("zero_init_residual", zero_init_residual)
    check_bool("cifar", cifar)
    block, _ = DEPTHS[depth]
    if block == "basic" and (groups != 1 or width_per_group != 64):
        raise ValueError(f"groups and width_per_group apply to bottleneck blocks (depth 50, 101, 152): depth {depth} has basic blocks, "
                         f"got groups={groups}, width_per_group={width_per_group}")  # fmt: skip
    rows = tuple(Stage(width=make_divisible(r.width * width_mult), repeats=round_repeats(r.repeats, depth_mult), stride=r.stride) for r in table(depth))
    stem_chs = make_divisible(STEM_CHS * width_mult)
    stages = residual_stages(rows, stem_chs, block, groups=groups, width_per_group=width_per_group)
    return ResNetSpec(num_classes=num_classes, in_chans=in_chans, resolution=32 if cifar else 224, stem_chs=stem_chs,
                      stem="cifar" if cifar else "imagenet", stages=stages, drop_rate=drop_rate, zero_init_residual=zero_init_residual)  # fmt: skip


# Section 4.2's CIFAR networks: a 3x3 conv to 16 maps, then 2n layers at each of 32, 16 and 8 px with 16, 32
# and 64 filters (n basic blocks per stage), GAP, FC: 6n + 2 weighted layers.
CIFAR_STEM_CHS = 16
CIFAR_TABLE = (
    Stage(width=16, repeats=1, stride=1),  # 32 -> 32 (repeats: n, set by depth)
    Stage(width=32, repeats=1, stride=2),  # 32 -> 16
    Stage(width=64, repeats=1, stride=2),  # 16 -> 8
)


def resnet_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    *,
    depth: int = 56,
    shortcut: str = "pad",
    drop_rate: float = 0.0,
    zero_init_residual: bool = False,
    cifar: bool = True,
) -> ResNetSpec:
    """He et al.'s CIFAR-10 ResNets (Section 4.2, Table 6): ``depth`` = 6n + 2 (20, 32, 44, 56, 110, 1202),
    basic blocks, 16 / 32 / 64 filters. ``shortcut``: where the width changes, "pad" is the paper's
    option A (identity on the subsampled input, zero channels appended: no parameters, the published
    counts), "conv" option B (1x1 conv + BN). ``cifar`` is always True here (the model is built for 32x32).

    Option A's zero channels cannot be traced by the structured pruner: prune the ``shortcut="conv"`` variant.
    """
    check_int("depth", depth, 8)
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
    check_choice("shortcut", shortcut, ("pad", "conv"))
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("zero_init_residual", zero_init_residual)
    check_bool("cifar", cifar)
    if not cifar:
        raise ValueError("cifar must be True for resnet_cifar (it is the 32x32 design); use resnet18 ... resnet152 for ImageNet")
    rows = tuple(Stage(width=r.width, repeats=(depth - 2) // 6, stride=r.stride) for r in CIFAR_TABLE)
    stages = residual_stages(rows, CIFAR_STEM_CHS, "basic", projection=shortcut)
    return ResNetSpec(num_classes=num_classes, in_chans=in_chans, resolution=32, stem_chs=CIFAR_STEM_CHS, stem="cifar", stages=stages,
                      drop_rate=drop_rate, zero_init_residual=zero_init_residual)  # fmt: skip


def _card(name: str, top1: float) -> tuple[Published, ...]:
    return (Published(top1=top1, source=f"torchvision model card, {name} IMAGENET1K_V1 (224 crop of a 256 resize)"),)


_VARIANTS = {  # name -> (fixed builder arguments, paper, published top-1)
    "resnet18": ({"depth": 18}, PAPER, _card("ResNet18_Weights", 69.758)),
    "resnet34": ({"depth": 34}, PAPER, _card("ResNet34_Weights", 73.314)),
    "resnet50": ({"depth": 50}, PAPER, _card("ResNet50_Weights", 76.130)),
    "resnet101": ({"depth": 101}, PAPER, _card("ResNet101_Weights", 77.374)),
    "resnet152": ({"depth": 152}, PAPER, _card("ResNet152_Weights", 78.312)),
    "resnext50_32x4d": ({"depth": 50, "groups": 32, "width_per_group": 4}, RESNEXT_PAPER, _card("ResNeXt50_32X4D_Weights", 77.618)),
    "resnext101_32x8d": ({"depth": 101, "groups": 32, "width_per_group": 8}, RESNEXT_PAPER, _card("ResNeXt101_32X8D_Weights", 79.312)),
}

# Table 6, CIFAR-10 with standard augmentation: depth -> (test error %, params as printed); option A shortcuts
_CIFAR_TABLE_6 = {20: (8.75, 0.27e6), 32: (7.51, 0.46e6), 44: (7.17, 0.66e6), 56: (6.97, 0.85e6), 110: (6.43, 1.7e6), 1202: (7.93, 19.4e6)}
_CIFAR_PUBLISHED = tuple(
    Published(
        top1=round(100 - err, 2),
        params=params,
        knobs={} if depth == 56 else {"depth": depth},
        dataset="cifar10+",
        source="ResNet paper Table 6 (100 - test error, option A shortcuts" + ("; best of 5 runs, mean 6.61)" if depth == 110 else ")"),
    )
    for depth, (err, params) in _CIFAR_TABLE_6.items()
)
_REPRESENTATIVES = ("resnet50", "resnext50_32x4d")  # ResNeXt is its own classic family in ``compare --baselines``

ENTRIES = (
    *(
        Entry(
            name=name,
            family="resnext" if paper == RESNEXT_PAPER else "resnet",
            paper=paper,
            spec=resnet,
            fixed=fixed,
            published=published,
            representative=name in _REPRESENTATIVES,
            baseline=True,
        )
        for name, (fixed, paper, published) in _VARIANTS.items()
    ),
    Entry(
        name="resnet",
        family="resnet",
        paper=f"{PAPER}; {RESNEXT_PAPER}",
        spec=resnet,
        published=tuple(
            Published(top1=pub.top1, source=pub.source, knobs={k: v for k, v in fixed.items() if not (k == "depth" and v == 50)})
            for fixed, _, (pub,) in _VARIANTS.values()
        ),
        baseline=True,
    ),
    Entry(name="resnet_cifar", family="resnet", paper=PAPER, spec=resnet_cifar, input_size=(3, 32, 32), published=_CIFAR_PUBLISHED, baseline=True),
)

__all__ = ["CIFAR_STEM_CHS", "CIFAR_TABLE", "DEPTHS", "EXPANSION", "SHORTCUTS", "STAGE_WIDTHS", "STEMS", "STEM_CHS", "Basic", "Block", "Bottleneck", "ResNetSpec", "Stage",
           "residual_stages", "resnet", "resnet_cifar", "table"]  # fmt: skip
