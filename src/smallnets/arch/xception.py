"""Xception (Chollet 2017, arXiv:1610.02357) as a spec: Figure 5's flows, every block with its
explicit separable-conv widths, the knobs, and the published figure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from smallnets._checks import check_bool, check_int, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stride

PAPER = "Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357"

SHORTCUTS = ("identity", "conv")  # a block's shortcut: the identity, or a 1x1 conv (stride = the block's) + BN


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A stage of Figure 5: ``repeats`` residual blocks of ``convs`` separable convs each, all ending at ``out`` channels."""

    name: str  # stage name: the flow it belongs to (its key in the state dict)
    out: int  # output channels of every block in the stage
    repeats: int  # residual blocks
    convs: int  # ReLU - SeparableConv - BN units per block
    stride: int  # of the first block (3x3/s2 max-pool at its end); the others are stride 1
    start_with_relu: bool = True  # False for the very first block: the stem already ends in a ReLU
    grow_first: bool = True  # widen at the first separable conv (else at the last)


@dataclass(frozen=True, kw_only=True)
class StemConv:
    """One stem conv: 3x3 at ``stride`` with ``padding`` - BN - ReLU to ``out_chs``."""

    out_chs: int
    stride: int = 1
    padding: int = 0  # the paper's stem convs are unpadded ("valid")

    def __post_init__(self) -> None:
        where = f"StemConv(out_chs={self.out_chs!r})"
        check_channels(where, out_chs=self.out_chs)
        check_stride(where, self.stride)
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or self.padding < 0:
            raise ValueError(f"{where}: padding must be an integer >= 0, got {self.padding!r}")


# Figure 5's stem (conv 3x3/s2 32, conv 3x3 64, both unpadded), then the flows. Every stride change
# opens a stage, so the entry flow is three stages; the middle flow is one.
STEM = (
    StemConv(out_chs=32, stride=2),  # 299 -> 149
    StemConv(out_chs=64, stride=1),  # 149 -> 147
)
XCEPTION_TABLE = (
    Stage(name="entry1", out=128, repeats=1, convs=2, stride=2, start_with_relu=False),  # 147 -> 74
    Stage(name="entry2", out=256, repeats=1, convs=2, stride=2),  # 74 -> 37
    Stage(name="entry3", out=728, repeats=1, convs=2, stride=2),  # 37 -> 19
    Stage(name="middle", out=728, repeats=8, convs=3, stride=1),  # 19 -> 19, "repeated eight times"
    Stage(name="exit", out=1024, repeats=1, convs=2, stride=2, grow_first=False),  # 19 -> 10 (728, then 1024)
)
EXIT_CONVS = (1536, 2048)  # exit flow's closing separable convs (each followed by BN, ReLU): the neck


@dataclass(frozen=True, kw_only=True)
class SeparableBlock:
    """One Figure 5 block with its explicit widths: ``len(sep_chs)`` x [ReLU, SeparableConv, BN], the
    i-th separable conv going from the previous one's width (``in_chs`` for the first) to ``sep_chs[i]``;
    a 3x3/s2 max-pool at its end when ``stride`` is 2; plus the shortcut.

    ``start_with_relu=False`` drops the first ReLU (the network's first block: the stem ends in one).
    ``shortcut``: ``"identity"`` (needs stride 1 and ``in_chs == sep_chs[-1]``) or ``"conv"`` (1x1 conv at
    ``stride`` + BN, ``in_chs -> sep_chs[-1]``).
    """

    in_chs: int
    sep_chs: tuple[int, ...]  # output channels of each separable conv, in order
    stride: int = 1
    start_with_relu: bool = True
    shortcut: str

    def __post_init__(self) -> None:
        where = f"SeparableBlock(in_chs={self.in_chs!r}, sep_chs={self.sep_chs!r})"
        check_channels(where, in_chs=self.in_chs)
        if not isinstance(self.sep_chs, tuple) or not self.sep_chs:
            raise ValueError(f"{where}: sep_chs must be a non-empty list of channel counts, got {self.sep_chs!r:.80}")
        check_channels(where, **{f"sep_chs[{i}]": c for i, c in enumerate(self.sep_chs)})
        check_stride(where, self.stride)
        if not isinstance(self.start_with_relu, bool):
            raise ValueError(f"{where}: start_with_relu must be True or False, got {self.start_with_relu!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"{where}: shortcut must be one of {', '.join(map(repr, SHORTCUTS))}; got {self.shortcut!r}")
        if self.shortcut == "identity" and (self.stride != 1 or self.in_chs != self.out_chs):
            raise ValueError(
                f"{where}: shortcut 'identity' needs stride 1 and in_chs == sep_chs[-1], got stride {self.stride}, "
                f"{self.in_chs} -> {self.out_chs}; use shortcut 'conv'"
            )

    @property
    def out_chs(self) -> int:
        return self.sep_chs[-1]

    @property
    def widths(self) -> tuple[int, ...]:
        """Input then output channels of each separable conv: ``(in_chs, *sep_chs)``."""
        return (self.in_chs, *self.sep_chs)


@dataclass(frozen=True, kw_only=True)
class FlowStage:
    """A named stage (``entry1`` ... ``middle`` ... ``exit``): its blocks, in order."""

    name: str
    blocks: tuple[SeparableBlock, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "." in self.name:
            raise ValueError(f"FlowStage: name must be a non-empty string without '.', got {self.name!r}")
        if not isinstance(self.blocks, tuple) or not self.blocks:
            raise ValueError(f"FlowStage {self.name!r}: blocks must be a non-empty list of blocks, got {self.blocks!r:.80}")
        for j, block in enumerate(self.blocks):
            if not isinstance(block, SeparableBlock):
                raise ValueError(f"FlowStage {self.name!r}: blocks[{j}] must be a SeparableBlock, got {block!r:.80}")


@dataclass(frozen=True, kw_only=True)
class XceptionSpec(ArchSpec):
    """Stem convs, the flows' stages of blocks (each block's input = the previous output), the neck
    (exit flow's closing separable convs, each - BN - ReLU), GAP, dropout, FC."""

    family = "xception"
    resolution: int = 299
    stem: tuple[StemConv, ...]
    stages: tuple[FlowStage, ...]
    neck_chs: tuple[int, ...] = EXIT_CONVS
    drop_rate: float = 0.5  # dropout before the classifier (Section 4.3)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        if not isinstance(self.stem, tuple) or not self.stem or not all(isinstance(c, StemConv) for c in self.stem):
            raise ValueError(f"{name}: stem must be a non-empty list of StemConv, got {self.stem!r:.80}")
        if not isinstance(self.stages, tuple) or not self.stages or not all(isinstance(s, FlowStage) for s in self.stages):
            raise ValueError(f"{name}: stages must be a non-empty list of FlowStage, got {self.stages!r:.80}")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: stage names must be unique, got {names}")
        if not isinstance(self.neck_chs, tuple):
            raise ValueError(f"{name}: neck_chs must be a list of channel counts, got {self.neck_chs!r:.80}")
        check_channels(name, **{f"neck_chs[{i}]": c for i, c in enumerate(self.neck_chs)})
        chs = self.stem[-1].out_chs
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                if block.in_chs != chs:
                    raise ValueError(
                        f"{name}: stages[{i}].blocks[{j}] ({stage.name}.{j}).in_chs must be the previous layer's {chs} channels, got {block.in_chs}"
                    )
                chs = block.out_chs

    @property
    def blocks(self) -> tuple[SeparableBlock, ...]:
        return tuple(b for stage in self.stages for b in stage.blocks)

    @property
    def num_features(self) -> int:
        return self.neck_chs[-1] if self.neck_chs else self.stages[-1].blocks[-1].out_chs


def flow_stages(table: tuple[Stage, ...], in_chs: int) -> tuple[FlowStage, ...]:
    """The table's rows as blocks with explicit widths: ``grow_first`` widens at the first separable
    conv, else at the last; the shortcut is the identity where the shape stays, else a 1x1 conv."""
    stages = []
    for row in table:
        blocks = []
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            sep_chs = (row.out,) * row.convs if row.grow_first else (in_chs,) * (row.convs - 1) + (row.out,)
            shortcut = "identity" if in_chs == row.out and stride == 1 else "conv"
            blocks.append(SeparableBlock(in_chs=in_chs, sep_chs=sep_chs, stride=stride, start_with_relu=row.start_with_relu, shortcut=shortcut))
            in_chs = row.out
        stages.append(FlowStage(name=row.name, blocks=tuple(blocks)))
    return tuple(stages)


def cifar_stem(spec: XceptionSpec) -> XceptionSpec:
    """The small-input variant: every stem conv padded and at stride 1, and the first block at stride 1
    (its shortcut keeps its 1x1 conv where the width changes): 32 -> 32 -> 16 -> 8 -> 8 -> 4."""
    stem = tuple(dataclasses.replace(c, stride=1, padding=1) for c in spec.stem)
    first = spec.stages[0]
    block = first.blocks[0]
    block = dataclasses.replace(block, stride=1, shortcut="identity" if block.in_chs == block.out_chs else "conv")
    stages = (dataclasses.replace(first, blocks=(block, *first.blocks[1:])), *spec.stages[1:])
    return dataclasses.replace(spec, stem=stem, stages=stages, resolution=32)


def xception(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    middle_repeats: int = 8,
    drop_rate: float = 0.5,
    cifar: bool = False,
) -> XceptionSpec:
    """Xception at 299x299, layer for layer timm's ``legacy_xception`` (the Keras reference).
    ``middle_repeats``: blocks in the middle flow (the paper's 8). ``drop_rate``: Section 4.3's
    dropout 0.5 before the logistic layer on ImageNet (timm uses 0). ``cifar``: both stem convs
    padded and at stride 1, and the first entry block at stride 1 (32 -> 32 -> 16 -> 8 -> 8 -> 4)."""
    check_int("middle_repeats", middle_repeats, 1)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    table = tuple(dataclasses.replace(row, repeats=middle_repeats) if row.name == "middle" else row for row in XCEPTION_TABLE)
    spec = XceptionSpec(num_classes=num_classes, in_chans=in_chans, stem=STEM, stages=flow_stages(table, STEM[-1].out_chs),
                        neck_chs=EXIT_CONVS, drop_rate=drop_rate)  # fmt: skip
    return cifar_stem(spec) if cifar else spec


ENTRIES = (
    Entry(
        name="xception",
        family="xception",
        paper=PAPER,
        spec=xception,
        input_size=(3, 299, 299),
        published=(Published(top1=79.0, params=22_855_952, source="Xception paper Table 1 (top-1), Table 3 (params)"),),
        representative=True,
    ),
)

__all__ = ["EXIT_CONVS", "STEM", "XCEPTION_TABLE", "FlowStage", "SeparableBlock", "Stage", "StemConv", "XceptionSpec", "xception"]
