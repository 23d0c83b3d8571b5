"""Dual Path Networks (Chen et al. 2017, arXiv:1707.01629) as a spec: Table 1's networks as rows, every
dual path block with its explicit widths, the knobs, and the published figures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from smallnets._checks import check_bool, check_choice, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stride

PAPER = "Chen, Li, Xiao, Jin, Yan, Feng 2017, Dual Path Networks, arXiv:1707.01629"

NECK_ACTS = ("elu", "relu")  # activation after the final BN of the concatenated paths
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")  # Table 1's names; conv1 is the stem


@dataclass(frozen=True, kw_only=True)
class Network:
    """One network of Table 1 (a column there), in the reference implementation's terms.

    Stage ``i`` (conv2 ... conv5) has ``k_sec[i]`` blocks; each block's 1x1 reduce and grouped 3x3 are
    ``k_r * 2**i`` wide, its closing 1x1 gives ``width * 2**i`` residual channels plus ``inc_sec[i]``
    new densely connected ones.
    """

    depth: int  # the number in the name: 3 convs per block, plus the stem conv and the classifier
    num_init_features: int  # stem conv width
    stem_kernel: int  # 7x7, or 3x3 for the small DPN-68
    k_r: int  # conv2's bottleneck width (the "d" of "32x3d" is k_r / groups)
    groups: int  # G of every grouped 3x3
    k_sec: tuple[int, int, int, int]  # blocks in conv2 ... conv5
    inc_sec: tuple[int, int, int, int]  # densely connected channels each block adds, conv2 ... conv5
    width: int  # conv2's residual-path width: 64 for the small DPN-68, else 256; doubles per stage


# Table 1 (DPN-92, DPN-98, DPN-131) and the reference implementation's DPN-68 and DPN-107
# (cypw/DPNs, as timm builds them). Stage sides at 224 px: conv2 56, conv3 28, conv4 14, conv5 7.
TABLE_1 = (
    Network(depth=68, num_init_features=10, stem_kernel=3, k_r=128, groups=32, k_sec=(3, 4, 12, 3), inc_sec=(16, 32, 32, 64), width=64),
    Network(depth=92, num_init_features=64, stem_kernel=7, k_r=96, groups=32, k_sec=(3, 4, 20, 3), inc_sec=(16, 32, 24, 128), width=256),
    Network(depth=98, num_init_features=96, stem_kernel=7, k_r=160, groups=40, k_sec=(3, 6, 20, 3), inc_sec=(16, 32, 32, 128), width=256),
    Network(depth=107, num_init_features=128, stem_kernel=7, k_r=200, groups=50, k_sec=(4, 8, 20, 3), inc_sec=(20, 64, 64, 128), width=256),
    Network(depth=131, num_init_features=128, stem_kernel=7, k_r=160, groups=40, k_sec=(4, 8, 28, 3), inc_sec=(16, 32, 32, 128), width=256),
)  # fmt: skip
NETWORKS = {n.depth: n for n in TABLE_1}


@dataclass(frozen=True, kw_only=True)
class DualPathBlock:
    """One block with its explicit widths: BN-ReLU-1x1 ``in_chs -> bottleneck``, BN-ReLU-3x3 (``groups``,
    ``stride``) ``bottleneck -> bottleneck``, BN-ReLU-1x1 ``bottleneck -> residual + inc``. The first
    ``residual`` outputs are added to the residual path, the other ``inc`` appended to the dense path.

    The input is the two paths concatenated, ``in_chs = residual + dense_in``. ``projection``: the
    paths start afresh from a BN-ReLU-1x1 (at ``stride``) ``in_chs -> residual + 2 * inc`` (the first
    block of a stage, where the width or the side changes); else they are carried on, which needs
    stride 1 and the input split as ``residual`` + ``dense_in``.
    """

    in_chs: int
    bottleneck: int  # 1x1 reduce and grouped 3x3 width
    groups: int
    residual: int  # residual-path width
    inc: int  # dense-path channels this block adds
    stride: int = 1
    projection: bool

    def __post_init__(self) -> None:
        where = f"DualPathBlock(in_chs={self.in_chs!r}, bottleneck={self.bottleneck!r})"
        check_channels(where, in_chs=self.in_chs, bottleneck=self.bottleneck, groups=self.groups, residual=self.residual, inc=self.inc)
        check_stride(where, self.stride)
        if not isinstance(self.projection, bool):
            raise ValueError(f"{where}: projection must be True or False, got {self.projection!r}")
        if self.bottleneck % self.groups:
            raise ValueError(f"{where}: groups must divide bottleneck: {self.bottleneck} is not divisible by groups={self.groups}")
        if not self.projection and (self.stride != 1 or self.in_chs <= self.residual):
            raise ValueError(
                f"{where}: a block without projection carries both paths on, so it needs stride 1 and in_chs above "
                f"residual={self.residual}; got stride {self.stride}, in_chs {self.in_chs}"
            )

    @property
    def dense_in(self) -> int:
        """Dense-path channels entering the block (after a projection: the projection's ``2 * inc``)."""
        return 2 * self.inc if self.projection else self.in_chs - self.residual

    @property
    def out_chs(self) -> int:
        return self.residual + self.dense_in + self.inc


@dataclass(frozen=True, kw_only=True)
class DualPathStage:
    """A named stage (``conv2`` ... ``conv5``): its blocks, in order; it outputs the paths concatenated."""

    name: str
    blocks: tuple[DualPathBlock, ...]

    @property
    def out_chs(self) -> int:
        return self.blocks[-1].out_chs


def _check_sec(where: str, name: str, value: object, length: int) -> None:
    if not isinstance(value, tuple) or len(value) != length:
        raise ValueError(f"{where}: {name} must be a list of {length} integers (one per stage), got {value!r:.80}")
    check_channels(where, **{f"{name}[{i}]": v for i, v in enumerate(value)})


@dataclass(frozen=True, kw_only=True)
class DPNSpec(ArchSpec):
    """Stem (conv-BN-ReLU, 3x3/s2 max-pool), four stages of dual path blocks, BN-act of the concatenated
    paths (the neck), GAP, dropout, 1x1-conv classifier. Table 1's numbers are the fields; ``stages``
    derives every block's widths from them."""

    family = "dpn"
    num_init_features: int  # stem conv width
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: bool = True  # 3x3/s2 max-pool after the stem conv
    k_r: int  # conv2's bottleneck width; stage i's is k_r * widths[i] / widths[0]
    groups: int  # of every grouped 3x3
    k_sec: tuple[int, ...]  # blocks per stage
    inc_sec: tuple[int, ...]  # dense-path growth per block, per stage
    widths: tuple[int, ...]  # residual-path width per stage
    strides: tuple[int, ...] = (1, 2, 2, 2)  # of each stage's first block (conv2 follows the max-pool)
    neck_act: str = "elu"  # after the final BN: timm's fc_act_layer, ELU
    bn_eps: float = 1e-3  # every BN, as the MXNet reference and timm build them
    drop_rate: float = 0.0  # dropout before the classifier

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_channels(name, num_init_features=self.num_init_features, k_r=self.k_r, groups=self.groups)
        if self.stem_kernel not in (1, 3, 5, 7) or isinstance(self.stem_kernel, bool):
            raise ValueError(f"{name}: stem_kernel must be 1, 3, 5 or 7, got {self.stem_kernel!r}")
        check_stride(name, self.stem_stride)
        check_bool("stem_pool", self.stem_pool)
        n = len(self.k_sec) if isinstance(self.k_sec, tuple) else 0
        if not 1 <= n <= len(STAGE_NAMES):
            raise ValueError(f"{name}: k_sec must list 1 to {len(STAGE_NAMES)} stages' block counts, got {self.k_sec!r:.80}")
        for field in ("k_sec", "inc_sec", "widths"):
            _check_sec(name, field, getattr(self, field), n)
        if not isinstance(self.strides, tuple) or len(self.strides) != n:
            raise ValueError(f"{name}: strides must be a list of {n} strides (one per stage), got {self.strides!r:.80}")
        for s in self.strides:
            check_stride(name, s)
        for i, w in enumerate(self.widths):
            if self.k_r * w % self.widths[0]:
                raise ValueError(f"{name}: k_r * widths[{i}] must be a multiple of widths[0]: {self.k_r} * {w} is not divisible by {self.widths[0]}")
        check_choice("neck_act", self.neck_act, NECK_ACTS)
        check_range("bn_eps", self.bn_eps, 0.0, 1.0, low_open=True)
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        _ = self.stages  # builds, and so validates, every block

    @property
    def stages(self) -> tuple[DualPathStage, ...]:
        """Every block with its widths: each stage opens with a projection block (its stride), then
        carries both paths on, the dense one growing by the stage's ``inc`` per block."""
        stages, in_chs = [], self.num_init_features
        for i, (name, blocks, inc, width, stride) in enumerate(zip(STAGE_NAMES, self.k_sec, self.inc_sec, self.widths, self.strides)):
            bottleneck = self.k_r * width // self.widths[0]
            row = []
            for j in range(blocks):
                block = DualPathBlock(in_chs=in_chs, bottleneck=bottleneck, groups=self.groups, residual=width, inc=inc,
                                      stride=stride if j == 0 else 1, projection=j == 0)  # fmt: skip
                row.append(block)
                in_chs = block.out_chs
            stages.append(DualPathStage(name=name, blocks=tuple(row)))
        return tuple(stages)

    @property
    def blocks(self) -> tuple[DualPathBlock, ...]:
        return tuple(b for stage in self.stages for b in stage.blocks)

    @property
    def num_features(self) -> int:
        """Channels of the concatenated paths after the last block: ``widths[-1] + (k_sec[-1] + 2) * inc_sec[-1]``."""
        return self.widths[-1] + (self.k_sec[-1] + 2) * self.inc_sec[-1]


def dpn(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    depth: int = 92,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> DPNSpec:
    """A DPN of Table 1 at 224x224, layer for layer timm's ``dpn{depth}`` (the cypw/DPNs MXNet models).
    ``depth``: 68, 92, 98, 107 or 131 (fixed by each entry). ``drop_rate``: dropout before the classifier
    (timm's default 0). ``cifar``: for 32-px inputs, the stem conv becomes 3x3 at stride 1 with no
    max-pool, so the stages run at 32, 16, 8, 4 (the paper has no CIFAR variant)."""
    check_choice("depth", depth, NETWORKS)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    net = NETWORKS[depth]
    spec = DPNSpec(num_classes=num_classes, in_chans=in_chans, num_init_features=net.num_init_features, stem_kernel=net.stem_kernel,
                   k_r=net.k_r, groups=net.groups, k_sec=net.k_sec, inc_sec=net.inc_sec,
                   widths=tuple(net.width << i for i in range(len(net.k_sec))), drop_rate=drop_rate)  # fmt: skip
    return dataclasses.replace(spec, stem_kernel=3, stem_stride=1, stem_pool=False, resolution=32) if cifar else spec


def _timm_card(top1: float, params: int, weights: str) -> Published:
    return Published(top1=top1, params=params, source=f"timm model card (docs/models/dpn.md): ImageNet top-1 at 224 px, crop 0.875, of {weights}")


EXTRA = "cypw/DPNs, trained with extra ImageNet-5k data, fine-tuned on ImageNet-1k"
ENTRIES = (
    Entry(name="dpn68", family="dpn", paper=PAPER, spec=dpn, fixed={"depth": 68}, baseline=True,
          published=(_timm_card(76.31, 12_610_000, "dpn68-66bebafa7.pth (cypw/DPNs)"),)),
    Entry(name="dpn92", family="dpn", paper=PAPER, spec=dpn, fixed={"depth": 92}, baseline=True, representative=True,
          published=(_timm_card(79.99, 37_670_000, f"dpn92_extra-b040e4a9b.pth ({EXTRA})"),)),
    Entry(name="dpn98", family="dpn", paper=PAPER, spec=dpn, fixed={"depth": 98}, baseline=True,
          published=(_timm_card(79.65, 61_570_000, "dpn98-5b90dec4d.pth (cypw/DPNs)"),)),
    Entry(name="dpn107", family="dpn", paper=PAPER, spec=dpn, fixed={"depth": 107}, baseline=True,
          published=(_timm_card(80.16, 86_920_000, f"dpn107_extra-1ac7121e2.pth ({EXTRA})"),)),
    Entry(name="dpn131", family="dpn", paper=PAPER, spec=dpn, fixed={"depth": 131}, baseline=True,
          published=(_timm_card(79.83, 79_250_000, "dpn131-71dfe43e0.pth (cypw/DPNs)"),)),
)  # fmt: skip

__all__ = ["NETWORKS", "TABLE_1", "DPNSpec", "DualPathBlock", "DualPathStage", "Network", "dpn"]
