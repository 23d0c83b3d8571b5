"""ShuffleNet v1 (Zhang et al. 2017, arXiv:1707.01083) and ShuffleNet v2 (Ma et al. 2018,
arXiv:1807.11164) as specs: the papers' tables, every unit with its explicit widths, the knobs,
and the published figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from smallnets._checks import check_bool, check_choice, check_int, check_positive, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stage_chain, check_stride, make_divisible

V1_PAPER = "Zhang et al. 2017, ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices, arXiv:1707.01083"
V2_PAPER = "Ma et al. 2018, ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design, arXiv:1807.11164"


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage row of ShuffleNet v1 Table 1 / v2 Table 5: ``repeats`` units, the first with ``stride``."""

    out: Mapping[float, int]  # output channels per column of the paper's table (v1: groups g; v2: width)
    repeats: int  # units in the stage
    stride: int  # stride of the first unit; the others are stride 1


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
    Stage(out={1: 144, 2: 200, 3: 240, 4: 272, 8: 384}, repeats=4, stride=2),  # stage 2: 56 -> 28
    Stage(out={1: 288, 2: 400, 3: 480, 4: 544, 8: 768}, repeats=8, stride=2),  # stage 3: 28 -> 14
    Stage(out={1: 576, 2: 800, 3: 960, 4: 1088, 8: 1536}, repeats=4, stride=2),  # stage 4: 14 -> 7
)

# ShuffleNet v2 Table 5 after the same stem: output channels per width multiplier, then conv5.
V2_WIDTHS = (0.5, 1.0, 1.5, 2.0)
V2_STEM = 24
V2_TABLE = (
    Stage(out={0.5: 48, 1.0: 116, 1.5: 176, 2.0: 244}, repeats=4, stride=2),  # stage 2: 56 -> 28
    Stage(out={0.5: 96, 1.0: 232, 1.5: 352, 2.0: 488}, repeats=8, stride=2),  # stage 3: 28 -> 14
    Stage(out={0.5: 192, 1.0: 464, 1.5: 704, 2.0: 976}, repeats=4, stride=2),  # stage 4: 14 -> 7
)
V2_LAST = {0.5: 1024, 1.0: 1024, 1.5: 1024, 2.0: 2048}  # conv5 1x1

V1_KINDS = ("residual", "down")
V2_KINDS = ("split", "down")


def _divides(where: str, groups_name: str, groups: int, **channels: int) -> None:
    for what, chs in channels.items():
        if chs % groups:
            raise ValueError(f"{where}: {groups_name}={groups} must divide {what}, got {what}={chs}")


def _kind(where: str, kind: object, kinds: tuple[str, ...]) -> None:
    if kind not in kinds:
        raise ValueError(f"{where}: kind must be one of {', '.join(map(repr, kinds))}; got {kind!r}")


# --------------------------------------------------------------------------------------------
# What v1 and v2 share: the stem, and a network of stages of units


@dataclass(frozen=True, kw_only=True)
class ShuffleStem:
    """Conv1 3x3 (``stride``) - BN - ReLU to ``out_chs``, then (``pool``) max-pool 3x3/s2."""

    out_chs: int
    stride: int = 2
    pool: bool = True

    def __post_init__(self) -> None:
        check_channels("ShuffleStem", out_chs=self.out_chs)
        check_stride("ShuffleStem", self.stride)
        check_bool("pool", self.pool)


@dataclass(frozen=True, kw_only=True)
class ShuffleV1Block:
    """A ShuffleNet v1 unit (Figure 2): 1x1 GConv (``pw1_groups``) to ``mid_chs`` - BN - ReLU, channel
    shuffle (``groups``; only when ``pw1_groups > 1``: after a dense conv a fixed permutation changes
    nothing the next weights could not absorb), 3x3 DWConv (``stride``) - BN, 1x1 GConv (``groups``) - BN.

    ``kind="residual"`` (Figure 2(b)): stride 1, ``relu(x + branch(x))``, so ``out_chs == in_chs``.
    ``kind="down"`` (Figure 2(c)): stride 2, ``relu(cat(avgpool3x3/s2(x), branch(x)))``: the shortcut is
    concatenated, so the branch makes ``out_chs - in_chs`` channels (``branch_out_chs``).
    """

    kind: str = "residual"
    in_chs: int
    out_chs: int
    mid_chs: int  # the bottleneck: pw1's output, the depthwise conv's width
    stride: int = 1
    groups: int  # pw2's groups and the shuffle's
    pw1_groups: int  # 1 for the network's first unit (its thin input is not grouped, Section 3.3)

    def __post_init__(self) -> None:
        where = f"ShuffleV1Block(kind={self.kind!r}, in_chs={self.in_chs}, out_chs={self.out_chs})"
        _kind(where, self.kind, V1_KINDS)
        check_channels(where, in_chs=self.in_chs, out_chs=self.out_chs, mid_chs=self.mid_chs, groups=self.groups, pw1_groups=self.pw1_groups)
        check_stride(where, self.stride)
        if self.kind == "residual":
            if self.stride != 1:
                raise ValueError(f"{where}: a residual unit has stride 1 (a stride-2 unit is kind='down'), got stride {self.stride}")
            if self.out_chs != self.in_chs:
                raise ValueError(f"{where}: a residual unit adds its input, so out_chs must equal in_chs {self.in_chs}, got {self.out_chs}")
        else:
            if self.stride != 2:
                raise ValueError(f"{where}: a down unit has stride 2 (its shortcut is avgpool 3x3/s2), got stride {self.stride}")
            if self.out_chs <= self.in_chs:
                raise ValueError(
                    f"{where}: a down unit concatenates its {self.in_chs}-channel shortcut, so out_chs must exceed in_chs, got {self.out_chs}"
                )
        _divides(where, "pw1_groups", self.pw1_groups, in_chs=self.in_chs, mid_chs=self.mid_chs)
        _divides(where, "groups", self.groups, mid_chs=self.mid_chs, branch_out_chs=self.branch_out_chs)

    @property
    def branch_out_chs(self) -> int:
        """Channels the branch makes: all of them (residual) or those the shortcut does not bring (down)."""
        return self.out_chs if self.kind == "residual" else self.out_chs - self.in_chs


@dataclass(frozen=True, kw_only=True)
class ShuffleV2Block:
    """A ShuffleNet v2 unit (Figure 3): a left part of ``left_chs`` channels and a right branch
    (1x1 to ``mid_chs`` - BN - ReLU, 3x3 DWConv (``stride``) - BN, 1x1 - BN - ReLU to ``out_chs - left_chs``),
    concatenated and shuffled with 2 groups (so ``out_chs`` is even).

    ``kind="split"`` (Figure 3(c)): stride 1; the input is split, its first ``left_chs`` channels pass
    untouched and the branch takes the other ``in_chs - left_chs``. ``kind="down"`` (Figure 3(d)): no
    split; the left part is a shortcut branch (3x3 DWConv (``stride``) - BN, 1x1 - BN - ReLU to
    ``left_chs``) and the right branch takes all ``in_chs``. The paper's units halve everything:
    ``left_chs = mid_chs = out_chs // 2``.
    """

    kind: str = "split"
    in_chs: int
    out_chs: int
    mid_chs: int  # the right branch's bottleneck: its first 1x1's output, the depthwise conv's width
    left_chs: int  # channels of the left part: the untouched split (split) or the shortcut branch's output (down)
    stride: int = 1

    def __post_init__(self) -> None:
        where = f"ShuffleV2Block(kind={self.kind!r}, in_chs={self.in_chs}, out_chs={self.out_chs})"
        _kind(where, self.kind, V2_KINDS)
        check_channels(where, in_chs=self.in_chs, out_chs=self.out_chs, mid_chs=self.mid_chs, left_chs=self.left_chs)
        check_stride(where, self.stride)
        if self.kind == "split":
            if self.stride != 1:
                raise ValueError(f"{where}: a split unit has stride 1 (a strided unit is kind='down'), got stride {self.stride}")
            if self.left_chs >= self.in_chs:
                raise ValueError(f"{where}: left_chs must leave the branch some of the {self.in_chs} input channels, got {self.left_chs}")
        if self.left_chs >= self.out_chs:
            raise ValueError(f"{where}: left_chs must leave the branch some of the {self.out_chs} output channels, got {self.left_chs}")
        _divides(where, "the channel shuffle's groups", 2, out_chs=self.out_chs)

    @property
    def branch_in_chs(self) -> int:
        return self.in_chs - self.left_chs if self.kind == "split" else self.in_chs

    @property
    def branch_out_chs(self) -> int:
        return self.out_chs - self.left_chs


@dataclass(frozen=True, kw_only=True)
class _ShuffleNetSpec(ArchSpec):
    """What v1 and v2 specs share: the stem, stages of units (each unit's input = the previous
    output), dropout before the classifier."""

    unit_type: ClassVar[type] = object  # the family's unit spec class

    stem: ShuffleStem
    stages: tuple[tuple[ShuffleV1Block | ShuffleV2Block, ...], ...]  # narrowed by each family
    drop_rate: float = 0.0  # dropout before the classifier

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        if not isinstance(self.stem, ShuffleStem):
            raise ValueError(f"{name}: stem must be a ShuffleStem, got {self.stem!r:.80}")
        check_stage_chain(name, self.stem.out_chs, self.stages, (self.unit_type,))

    @property
    def units(self) -> tuple:
        return tuple(u for stage in self.stages for u in stage)

    @property
    def stages_chs(self) -> int:
        return self.stages[-1][-1].out_chs


def cifar_stem(spec: _ShuffleNetSpec) -> _ShuffleNetSpec:
    """The small-input variant: conv1 at stride 1 and no max-pool (total stride 8: a 32x32 image ends as a 4x4 map)."""
    return dataclasses.replace(spec, stem=dataclasses.replace(spec.stem, stride=1, pool=False), resolution=32)


# --------------------------------------------------------------------------------------------
# ShuffleNet v1


@dataclass(frozen=True, kw_only=True)
class ShuffleNetV1Spec(_ShuffleNetSpec):
    """Stem, stages of ShuffleNet v1 units (Table 1), GAP, dropout, FC (no conv after the stages)."""

    family = "shufflenet_v1"
    unit_type = ShuffleV1Block
    stages: tuple[tuple[ShuffleV1Block, ...], ...]

    @property
    def num_features(self) -> int:
        return self.stages_chs


def shufflenet_v1(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    groups: int = 3,
    width_mult: float = 1.0,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> ShuffleNetV1Spec:
    """ShuffleNet v1: ``groups`` is the paper's g (1, 2, 3, 4, 8), ``width_mult`` its scale factor s
    (0.25x-2x). Defaults are the headline ShuffleNet 1x (g = 3).

    Width ``s`` scales every layer, conv1 included (``24 * s``). The paper does not say how it
    rounds; here every width is ``make_divisible(c * s, groups)`` so that group convs split evenly
    (stride-2 branches make ``out - in`` channels, so conv1 must be a multiple of g too), and
    bottlenecks are ``make_divisible(out / 4, groups)`` of the rounded unit output. Conv1 keeps at
    least ``V1_MIN_STEM`` channels: see there. The network's first unit has a dense first 1x1.
    """
    check_int("groups", groups)
    check_choice("groups", groups, V1_GROUPS)
    check_range("width_mult", width_mult, 0.25, 2.0)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    stem_chs = max(make_divisible(V1_STEM * width_mult, groups), V1_MIN_STEM // groups * groups)
    stages, chs, index = [], stem_chs, 0
    for row in V1_TABLE:
        out_chs = make_divisible(row.out[groups] * width_mult, groups)
        mid_chs = make_divisible(out_chs / 4, groups)  # bottleneck: a quarter of the unit's output
        units = []
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            units.append(ShuffleV1Block(kind="residual" if stride == 1 else "down", in_chs=chs, out_chs=out_chs, mid_chs=mid_chs,
                                        stride=stride, groups=groups, pw1_groups=1 if index == 0 else groups))  # fmt: skip
            chs, index = out_chs, index + 1
        stages.append(tuple(units))
    spec = ShuffleNetV1Spec(num_classes=num_classes, in_chans=in_chans, stem=ShuffleStem(out_chs=stem_chs), stages=tuple(stages), drop_rate=drop_rate)
    return cifar_stem(spec) if cifar else spec


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


# --------------------------------------------------------------------------------------------
# ShuffleNet v2


@dataclass(frozen=True, kw_only=True)
class ShuffleNetV2Spec(_ShuffleNetSpec):
    """Stem, stages of ShuffleNet v2 units (Table 5), conv5 1x1 - BN - ReLU to ``neck_chs``, GAP, dropout, FC."""

    family = "shufflenet_v2"
    unit_type = ShuffleV2Block
    stages: tuple[tuple[ShuffleV2Block, ...], ...]
    neck_chs: int  # conv5's output channels

    def __post_init__(self) -> None:
        super().__post_init__()
        check_channels(type(self).__name__, neck_chs=self.neck_chs)

    @property
    def num_features(self) -> int:
        return self.neck_chs


def shufflenet_v2(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    width_mult: float = 1.0,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> ShuffleNetV2Spec:
    """ShuffleNet v2 at one of the paper's widths (0.5x, 1x, 1.5x, 2x), layer for layer torchvision's."""
    check_positive("width_mult", width_mult)
    check_choice("width_mult", width_mult, V2_WIDTHS)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    stages, chs = [], V2_STEM
    for row in V2_TABLE:
        out_chs = row.out[width_mult]
        half = out_chs // 2
        units = []
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            kind = "split" if stride == 1 else "down"
            units.append(ShuffleV2Block(kind=kind, in_chs=chs, out_chs=out_chs, mid_chs=half, left_chs=half, stride=stride))
            chs = out_chs
        stages.append(tuple(units))
    spec = ShuffleNetV2Spec(num_classes=num_classes, in_chans=in_chans, stem=ShuffleStem(out_chs=V2_STEM), stages=tuple(stages),
                            neck_chs=V2_LAST[width_mult], drop_rate=drop_rate)  # fmt: skip
    return cifar_stem(spec) if cifar else spec


ENTRIES = (
    Entry(
        name="shufflenet_v1",
        family="shufflenet_v1",
        paper=V1_PAPER,
        spec=shufflenet_v1,
        published=_v1_published(),
        representative=True,
    ),
    Entry(
        name="shufflenet_v2",
        family="shufflenet_v2",
        paper=V2_PAPER,
        spec=shufflenet_v2,
        published=(
            Published(top1=69.4, macs=146e6, source="ShuffleNet V2 paper Table 8"),
            Published(top1=60.3, macs=41e6, knobs={"width_mult": 0.5}, source="ShuffleNet V2 paper Table 8"),
            Published(top1=72.6, macs=299e6, knobs={"width_mult": 1.5}, source="ShuffleNet V2 paper Table 8"),
            Published(top1=74.9, macs=591e6, knobs={"width_mult": 2.0}, source="ShuffleNet V2 paper Table 8"),
        ),
        representative=True,
    ),
)

__all__ = ["ShuffleNetV1Spec", "ShuffleNetV2Spec", "ShuffleStem", "ShuffleV1Block", "ShuffleV2Block", "V1_TABLE", "V2_TABLE",
           "cifar_stem", "shufflenet_v1", "shufflenet_v2"]  # fmt: skip
