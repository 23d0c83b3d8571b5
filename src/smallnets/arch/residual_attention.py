"""Residual Attention Network (Wang et al. 2017, arXiv:1704.06904) as a spec: Table 2's stages of
pre-activation residual units and attention modules (trunk branch, bottom-up top-down soft mask
branch, output (1 + M) * T), every unit's widths explicit, the knobs and the published figures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from smallnets._checks import check_bool, check_choice, check_finite, check_int, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stage_chain, check_stride, make_divisible

PAPER = "Wang et al. 2017, Residual Attention Network for Image Classification, arXiv:1704.06904"

SHORTCUTS = ("identity", "conv")  # a unit's shortcut: the identity, or a 1x1 conv (at its stride) of the pre-activated input
# "imagenet": Table 2's conv1 (7x7/2, 64) - BN - ReLU and 3x3/2 max-pool (stages at 56, 28, 14, 7 px);
# "cifar": a 3x3/1 conv - BN - ReLU and no pooling (the 32 px adaptation: stages at 32, 16, 8, 4 px).
STEMS = ("imagenet", "cifar")
STEM_CHS = 64
BOTTLENECK = 4  # a residual unit's 1x1 / 3x3 convs are a quarter of its output width (Table 2: 64, 64, 256)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A row group of Table 2: one residual unit (at ``stride``) to ``out`` channels, then ``attention``
    attention modules whose soft mask max-pools ``mask_levels`` times; or ``units`` more residual units."""

    out: int
    stride: int
    attention: int = 0  # attention modules after the first unit
    mask_levels: int = 0  # max-pool / upsample pairs in each module's soft mask branch
    units: int = 1  # residual units (the last stage: 3)


# Table 2 (sides at 224 input). Each attention stage's mask branch pools down to the last stage's 7x7.
ATTENTION_MODULES = {56: (1, 1, 1), 92: (1, 2, 3)}  # attention modules per stage: Attention-56, Attention-92


def table(depth: int, width_mult: float = 1.0) -> tuple[Stage, ...]:
    """Table 2's rows for Attention-``depth`` (56 or 92); ``width_mult`` scales every output width (to multiples of 8)."""
    m1, m2, m3 = ATTENTION_MODULES[depth]

    def w(chs: int) -> int:
        return chs if width_mult == 1.0 else make_divisible(chs * width_mult, 8)

    return (
        Stage(out=w(256), stride=1, attention=m1, mask_levels=3),  # 56 -> 56; mask 56 -> 28 -> 14 -> 7 and back
        Stage(out=w(512), stride=2, attention=m2, mask_levels=2),  # 56 -> 28; mask 28 -> 14 -> 7 and back
        Stage(out=w(1024), stride=2, attention=m3, mask_levels=1),  # 28 -> 14; mask 14 -> 7 and back
        Stage(out=w(2048), stride=2, units=3),  # 14 -> 7: three residual units, no attention
    )


@dataclass(frozen=True, kw_only=True)
class PreActUnit:
    """A pre-activation bottleneck residual unit (He et al. 2016, Identity Mappings): BN - ReLU - 1x1 conv to
    ``mid_chs``, BN - ReLU - 3x3 conv (at ``stride``) to ``mid_chs``, BN - ReLU - 1x1 conv to ``out_chs``, plus
    the shortcut: the identity, or (``"conv"``, where the shape changes) a 1x1 conv of the pre-activated input."""

    in_chs: int
    mid_chs: int
    out_chs: int
    stride: int = 1
    shortcut: str = "identity"  # one of SHORTCUTS

    def __post_init__(self) -> None:
        where = f"PreActUnit(in_chs={self.in_chs!r}, mid_chs={self.mid_chs!r}, out_chs={self.out_chs!r})"
        check_channels(where, in_chs=self.in_chs, mid_chs=self.mid_chs, out_chs=self.out_chs)
        check_stride(where, self.stride)
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"{where}: shortcut must be one of {', '.join(map(repr, SHORTCUTS))}; got {self.shortcut!r}")
        if self.shortcut == "identity" and (self.stride != 1 or self.in_chs != self.out_chs):
            raise ValueError(f"{where}: shortcut 'identity' needs stride 1 and in_chs == out_chs, got stride {self.stride}, "
                             f"{self.in_chs} -> {self.out_chs}; use shortcut 'conv'")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class AttentionModule:
    """Figure 2 / Section 3: ``pre`` units, then the trunk branch (``trunk`` units) and the soft mask branch
    from the same input, ``(1 + M) * T``, then ``post`` units; every unit keeps ``chs`` channels (``mid_chs``
    inside).

    The mask branch (Figure 3): ``mask_levels`` times a 3x3/2 max-pool then ``mask_units`` units (bottom-up);
    at each level but the lowest a skip unit of that level's features; from the lowest level up,
    ``mask_units`` units, bilinear upsampling to the level above, plus its skip unit; then BN - ReLU - 1x1
    conv - BN - ReLU - 1x1 conv and a sigmoid. ``pre``, ``trunk`` and ``mask_units`` are the paper's p, t, r.
    """

    chs: int
    mid_chs: int
    pre: int = 1  # p: units before the branches split (and ``post`` after they merge)
    trunk: int = 2  # t
    mask_units: int = 1  # r: units between adjacent poolings / upsamplings
    mask_levels: int = 1  # max-pool / upsample pairs
    post: int = 1  # p

    def __post_init__(self) -> None:
        where = f"AttentionModule(chs={self.chs!r}, mid_chs={self.mid_chs!r})"
        check_channels(where, chs=self.chs, mid_chs=self.mid_chs, trunk=self.trunk, mask_units=self.mask_units, mask_levels=self.mask_levels)
        for name in ("pre", "post"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}: {name} must be an integer >= 0, got {value!r}")

    @property
    def in_chs(self) -> int:
        return self.chs

    @property
    def out_chs(self) -> int:
        return self.chs

    @property
    def units(self) -> int:
        """Residual units in the module: p + t + p on the trunk, r per pooling and per upsampling, and the skips."""
        return self.pre + self.trunk + self.post + 2 * self.mask_levels * self.mask_units + self.mask_levels - 1


Block = PreActUnit | AttentionModule


@dataclass(frozen=True, kw_only=True)
class ResidualAttentionSpec(ArchSpec):
    """Stem, stages of residual units and attention modules (each block's input = the previous output),
    neck (the final BN - ReLU: pre-activation units end without one), GAP, dropout, FC."""

    family = "residual_attention"
    stem: str = "imagenet"  # one of STEMS
    stem_chs: int = STEM_CHS
    stages: tuple[tuple[Block, ...], ...]
    drop_rate: float = 0.0  # dropout before the classifier (not in the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_choice(f"{name}: stem", self.stem, STEMS)
        check_channels(name, stem_chs=self.stem_chs)
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_stage_chain(name, self.stem_chs, self.stages, (PreActUnit, AttentionModule))

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def num_features(self) -> int:
        return self.stages[-1][-1].out_chs


def attention_stages(rows: tuple[Stage, ...], in_chs: int, *, p: int = 1, t: int = 2, r: int = 1) -> tuple[tuple[Block, ...], ...]:
    """The table's rows as blocks with explicit widths: each stage opens with a residual unit that takes its
    stride and width change (through a 1x1 conv shortcut), then its attention modules or further units."""
    stages = []
    for row in rows:
        mid = row.out // BOTTLENECK
        first = PreActUnit(in_chs=in_chs, mid_chs=mid, out_chs=row.out, stride=row.stride,
                           shortcut="identity" if row.stride == 1 and in_chs == row.out else "conv")  # fmt: skip
        rest = tuple(AttentionModule(chs=row.out, mid_chs=mid, pre=p, trunk=t, mask_units=r, mask_levels=row.mask_levels, post=p)
                     for _ in range(row.attention))  # fmt: skip
        rest += tuple(PreActUnit(in_chs=row.out, mid_chs=mid, out_chs=row.out) for _ in range(row.units - 1))
        stages.append((first, *rest))
        in_chs = row.out
    return tuple(stages)


def residual_attention(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    depth: int = 56,
    p: int = 1,
    t: int = 2,
    r: int = 1,
    width_mult: float = 1.0,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> ResidualAttentionSpec:
    """Attention-``depth`` of Table 2, unit for unit the authors' released Caffe network (fwang91/
    residual-attention-network): pre-activation bottleneck units with the stride on the 3x3 conv.

    ``depth`` 56 has one attention module per stage, 92 has 1, 2 and 3 (the trunk depth is 36m + 20 for
    m modules per stage on average). ``p``, ``t``, ``r``: Section 3.4's hyper-parameters (units before and
    after the branches, on the trunk, and between poolings in the mask; the paper's 1, 2, 1).
    ``cifar``: a 3x3/1 stem conv without max-pool (32 -> 32, 16, 8, 4); every mask then pools to 4x4.
    ``width_mult`` (not in Table 2): the stem's and every unit's widths, rounded to multiples of 8.
    """
    if depth not in ATTENTION_MODULES:
        raise ValueError(f"depth must be one of {', '.join(map(str, ATTENTION_MODULES))} (Table 2's networks), got {depth!r}")
    check_int("p", p, 0)
    check_int("t", t, 1)
    check_int("r", r, 1)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_finite("width_mult", width_mult)
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
    check_bool("cifar", cifar)
    stem_chs = STEM_CHS if width_mult == 1.0 else make_divisible(STEM_CHS * width_mult, 8)
    stages = attention_stages(table(depth, width_mult), stem_chs, p=p, t=t, r=r)
    return ResidualAttentionSpec(num_classes=num_classes, in_chans=in_chans, resolution=32 if cifar else 224, stem="cifar" if cifar else "imagenet",
                                 stem_chs=stem_chs, stages=stages, drop_rate=drop_rate)  # fmt: skip


CIFAR_WIDTH = 0.25  # ResNet-164's CIFAR widths (He et al. 2016, Identity Mappings: 16 stem, 64 / 128 / 256 outputs)


def residual_attention_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    *,
    depth: int = 92,
    p: int = 1,
    t: int = 2,
    r: int = 1,
    width_mult: float = CIFAR_WIDTH,
    drop_rate: float = 0.0,
    cifar: bool = True,
) -> ResidualAttentionSpec:
    """Attention-56 / -92 for 32x32 inputs (Section 4.1's CIFAR experiments): Table 2's stages behind a 3x3/1
    stem at a quarter of the ImageNet widths, the pre-activation ResNet-164 widths the paper compares against
    on CIFAR (stem 16, outputs 64 ... 512); the attention stages at 32, 16 and 8 px (every mask pooling to
    4x4), the last three units unstrided at 8x8, where ResNet-164 ends.

    The paper prints no CIFAR layout, only Table 6's sizes (Attention-92: 1.9M parameters); this one has
    3.18M at depth 92 and 1.88M at depth 56. ``cifar`` is always True here.
    """
    check_bool("cifar", cifar)
    if not cifar:
        raise ValueError("cifar must be True for residual_attention_cifar (it is the 32x32 network); use residual_attention_56 / _92 for ImageNet")
    base = residual_attention(num_classes, in_chans, depth=depth, p=p, t=t, r=r, width_mult=width_mult, drop_rate=drop_rate, cifar=True)
    rows = table(depth, width_mult)
    rows = (*rows[:-1], dataclasses.replace(rows[-1], stride=1))  # the last units stay at 8x8, as ResNet-164 ends
    return dataclasses.replace(base, stages=attention_stages(rows, base.stem_chs, p=p, t=t, r=r))


_TABLE4 = "Residual Attention Network paper Table 4 (ImageNet single crop, 100 - top-1 error)"
_PUBLISHED = {
    56: (Published(top1=round(100 - 21.76, 2), params=31.9e6, macs=6.3e9, source=_TABLE4 + ", 224 crop"),),
    # Table 4's 10.4 GFLOPs are for a 224 input, not this record's 320 crop: left out here
    92: (Published(top1=round(100 - 19.5, 2), params=51.3e6, input_size=(3, 320, 320),
                   source=_TABLE4 + ", 320 crop (the authors' README: 'Attention-92 | 320*320 | 19.5%')"),),
}

# Table 6 (CIFAR-10 with the standard translation and flip augmentation; 100 - test error)
_CIFAR_PUBLISHED = (Published(top1=round(100 - 4.99, 2), params=1.9e6, dataset="cifar10+",
                              source="Residual Attention Network paper Table 6, Attention-92 on CIFAR-10 (the paper's own CIFAR layout; "
                                     "this zoo's quarter-width one differs in size)"),)  # fmt: skip

ENTRIES = (
    *(
        Entry(name=f"residual_attention_{depth}", family="residual_attention", paper=PAPER, spec=residual_attention, fixed={"depth": depth},
              published=_PUBLISHED[depth], representative=depth == 56, baseline=True)
        for depth in ATTENTION_MODULES
    ),
    Entry(name="residual_attention_cifar", family="residual_attention", paper=PAPER, spec=residual_attention_cifar, input_size=(3, 32, 32),
          published=_CIFAR_PUBLISHED, baseline=True),
)  # fmt: skip

__all__ = ["ATTENTION_MODULES", "BOTTLENECK", "CIFAR_WIDTH", "SHORTCUTS", "STEMS", "STEM_CHS", "AttentionModule", "Block", "PreActUnit",
           "ResidualAttentionSpec", "Stage", "attention_stages", "residual_attention", "residual_attention_cifar", "table"]  # fmt: skip
