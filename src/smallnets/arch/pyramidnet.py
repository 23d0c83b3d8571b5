"""PyramidNet (Han, Kim & Kim 2017, arXiv:1610.02915) as a spec: additive widening spread over every
residual unit, the pyramidal units of Figure 6 with their explicit widths, the knobs and the
published figures (the paper's Tables 4 and 6, as the authors' repository lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from smallnets._checks import check_bool, check_choice, check_int, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stage_chain, check_stride

PAPER = "Han, Kim & Kim 2017, Deep Pyramidal Residual Networks, arXiv:1610.02915"

EXPANSION = 4  # a pyramidal bottleneck unit's output is 4x its width D_k (Section 3.2, Table 1)
# "cifar": Table 1's conv1, a 3x3 conv to 16 maps - BN (no ReLU: the first unit starts with its own BN);
# "imagenet": the ResNet stem, 7x7/2 conv - BN - ReLU - 3x3/2 max-pool (Table 6's networks);
# "small": the 32 px adaptation of the ImageNet network, a 3x3/1 conv - BN - ReLU and no pooling.
STEMS = ("cifar", "imagenet", "small")
CIFAR_STEM_CHS = 16  # Table 1: the first group's units start from 16 maps and grow by alpha / N each
IMAGENET_STEM_CHS = 64
CIFAR_STRIDES = (1, 2, 2)  # three groups at 32, 16 and 8 px (Table 1)
IMAGENET_STRIDES = (1, 2, 2, 2)  # four groups at 56, 28, 14 and 7 px after the ResNet stem
# The ImageNet networks: units per group and whether they are bottlenecks, as the authors' code builds
# them (ResNet's Table 1 counts, and 200 = Pre-ResNet-200's 3-24-36-3).
IMAGENET_DEPTHS = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    200: (True, (3, 24, 36, 3)),
}


@dataclass(frozen=True, kw_only=True)
class PyramidBasic:
    """Figure 6(d): BN, 3x3 conv (at ``stride``) to ``mid_chs`` - BN - ReLU, 3x3 conv to ``out_chs`` - BN;
    no ReLU before the first conv nor after the addition. The shortcut is the identity, a 2x2 average
    pool when ``stride`` is 2, zero-padded from ``in_chs`` to ``out_chs`` channels."""

    in_chs: int
    mid_chs: int  # the first conv's output: D_k (the same as out_chs unless pruned)
    out_chs: int  # D_k
    stride: int = 1

    def __post_init__(self) -> None:
        where = f"PyramidBasic(in_chs={self.in_chs!r}, mid_chs={self.mid_chs!r}, out_chs={self.out_chs!r})"
        check_channels(where, in_chs=self.in_chs, mid_chs=self.mid_chs, out_chs=self.out_chs)
        check_stride(where, self.stride)
        _check_padding(where, self.in_chs, self.out_chs)


@dataclass(frozen=True, kw_only=True)
class PyramidBottleneck:
    """Figure 6(e): BN, 1x1 conv to ``reduce_chs`` - BN - ReLU, 3x3 conv (at ``stride``) to ``spatial_chs`` -
    BN - ReLU, 1x1 conv to ``out_chs`` - BN; the same zero-padded shortcut as :class:`PyramidBasic`."""

    in_chs: int
    reduce_chs: int  # D_k
    spatial_chs: int  # D_k (the same as reduce_chs unless pruned)
    out_chs: int  # 4 D_k
    stride: int = 1

    def __post_init__(self) -> None:
        where = f"PyramidBottleneck(in_chs={self.in_chs!r}, reduce_chs={self.reduce_chs!r}, out_chs={self.out_chs!r})"
        check_channels(where, in_chs=self.in_chs, reduce_chs=self.reduce_chs, spatial_chs=self.spatial_chs, out_chs=self.out_chs)
        check_stride(where, self.stride)
        _check_padding(where, self.in_chs, self.out_chs)


def _check_padding(where: str, in_chs: int, out_chs: int) -> None:
    if out_chs < in_chs:
        raise ValueError(f"{where}: the zero-padded identity shortcut can only add channels: out_chs must be >= in_chs, got {in_chs} -> {out_chs}")


Unit = PyramidBasic | PyramidBottleneck


@dataclass(frozen=True, kw_only=True)
class PyramidNetSpec(ArchSpec):
    """Stem, groups of pyramidal units (each unit's input = the previous output), neck (BN - ReLU),
    GAP, dropout, FC."""

    family = "pyramidnet"
    resolution: int = 32
    stem: str = "cifar"  # one of STEMS
    stem_chs: int = CIFAR_STEM_CHS
    stages: tuple[tuple[Unit, ...], ...]
    drop_rate: float = 0.0  # dropout before the classifier (Table 6's alpha=450 network: 0.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_choice(f"{name}: stem", self.stem, STEMS)
        check_channels(name, stem_chs=self.stem_chs)
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_stage_chain(name, self.stem_chs, self.stages, (PyramidBasic, PyramidBottleneck))

    @property
    def units(self) -> tuple[Unit, ...]:
        return tuple(u for stage in self.stages for u in stage)

    @property
    def num_features(self) -> int:
        return self.stages[-1][-1].out_chs


def additive_widths(start: int, alpha: float, units: int) -> tuple[int, ...]:
    """Equation (2), D_k for k = 1 ... N: ``floor(start + k * alpha / N)``, the widening ``alpha`` spread
    linearly over all N units (exact arithmetic: the last unit has ``start + alpha`` maps for integer alpha)."""
    step = Fraction(alpha) / units
    return tuple(int(start + k * step) for k in range(1, units + 1))  # int() of a positive Fraction floors


def pyramidal_stages(start: int, alpha: float, repeats: tuple[int, ...], strides: tuple[int, ...], bottleneck: bool) -> tuple[tuple[Unit, ...], ...]:
    """Groups of units with the widths of :func:`additive_widths`; the first unit of a group takes its stride."""
    widths = iter(additive_widths(start, alpha, sum(repeats)))
    in_chs, stages = start, []
    for n, stride in zip(repeats, strides):
        units = []
        for i in range(n):
            d, s = next(widths), stride if i == 0 else 1
            if bottleneck:
                units.append(PyramidBottleneck(in_chs=in_chs, reduce_chs=d, spatial_chs=d, out_chs=d * EXPANSION, stride=s))
            else:
                units.append(PyramidBasic(in_chs=in_chs, mid_chs=d, out_chs=d, stride=s))
            in_chs = units[-1].out_chs
        stages.append(tuple(units))
    return tuple(stages)


def _check_alpha(alpha: float) -> None:
    check_range("alpha", alpha, 0.0, float("inf"), high_open=True)


def pyramidnet(
    num_classes: int = 10,
    in_chans: int = 3,
    *,
    depth: int = 110,
    alpha: float = 48,
    bottleneck: bool = False,
    drop_rate: float = 0.0,
    cifar: bool = True,
) -> PyramidNetSpec:
    """The CIFAR PyramidNets of Tables 1 and 4: three groups at 32, 16 and 8 px, the widening ``alpha``
    spread over all units (additive PyramidNet), from 16 maps to ``16 + alpha`` (bottleneck: 4x that).

    ``depth`` counts the conv and FC layers: ``6n + 2`` with basic units (n per group), ``9n + 2`` with
    ``bottleneck`` units. ``cifar`` is always True here (the network is built for 32x32); the ImageNet
    networks of Table 6 are ``pyramidnet_imagenet``."""
    check_int("depth", depth, 1)
    _check_alpha(alpha)
    check_bool("bottleneck", bottleneck)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    if not cifar:
        raise ValueError("cifar must be True for pyramidnet (it is the 32x32 design of Table 1); use pyramidnet_imagenet for ImageNet")
    per_unit = 9 if bottleneck else 6
    if depth < per_unit + 2 or (depth - 2) % per_unit:
        kind = "with bottleneck units depth must be 9n + 2 (11, 20, ..., 164, 200, 236, 272)" if bottleneck else "with basic units depth must be 6n + 2 (8, 14, ..., 110)"
        raise ValueError(f"depth must give whole groups: {kind}, got depth={depth}")
    n = (depth - 2) // per_unit
    stages = pyramidal_stages(CIFAR_STEM_CHS, alpha, (n, n, n), CIFAR_STRIDES, bottleneck)
    return PyramidNetSpec(num_classes=num_classes, in_chans=in_chans, resolution=32, stem="cifar", stem_chs=CIFAR_STEM_CHS, stages=stages,
                          drop_rate=drop_rate)  # fmt: skip


def pyramidnet_imagenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    depth: int = 200,
    alpha: float = 300,
    drop_rate: float = 0.0,
    cifar: bool = False,
) -> PyramidNetSpec:
    """The ImageNet PyramidNets of Table 6: the ResNet stem, four groups with Pre-ResNet's unit counts
    (``depth`` 18 and 34 basic, 50 ... 200 bottleneck units), widths from 64 to ``64 + alpha`` (x4 for
    bottlenecks). ``drop_rate=0.5`` with ``alpha=450`` is the paper's larger network. ``cifar``: a
    3x3/1 stem conv - BN - ReLU without max-pool (32 -> 32, 16, 8, 4)."""
    check_choice("depth", depth, IMAGENET_DEPTHS)
    _check_alpha(alpha)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    bottleneck, repeats = IMAGENET_DEPTHS[depth]
    stages = pyramidal_stages(IMAGENET_STEM_CHS, alpha, repeats, IMAGENET_STRIDES, bottleneck)
    return PyramidNetSpec(num_classes=num_classes, in_chans=in_chans, resolution=32 if cifar else 224, stem="small" if cifar else "imagenet",
                          stem_chs=IMAGENET_STEM_CHS, stages=stages, drop_rate=drop_rate)  # fmt: skip


# The authors' tables (jhkim89/PyramidNet README, the same networks as the paper's Table 4): top-1 error on
# CIFAR-10 / CIFAR-100 (standard augmentation) and the parameter count as printed.
_README = "PyramidNet authors' README (jhkim89/PyramidNet), CIFAR tables (the paper's Table 4 networks)"
_CIFAR_ROWS = (  # knobs (beyond the defaults), params, CIFAR-10 error, CIFAR-100 error
    ({}, 1.7e6, 4.62, 23.31),
    ({"alpha": 84}, 3.8e6, 4.27, 20.21),
    ({"alpha": 270}, 28.3e6, 3.73, 18.25),
    ({"depth": 164, "alpha": 270, "bottleneck": True}, 27.0e6, 3.48, 17.01),
    ({"depth": 200, "alpha": 240, "bottleneck": True}, 26.6e6, 3.44, 16.51),
    ({"depth": 236, "alpha": 220, "bottleneck": True}, 26.8e6, 3.40, 16.37),
    ({"depth": 272, "alpha": 200, "bottleneck": True}, 26.0e6, 3.31, 16.35),
)
_CIFAR_PUBLISHED = tuple(
    Published(top1=round(100 - err, 2), dataset=dataset, params=params, knobs=knobs, source=_README)
    for knobs, params, err10, err100 in _CIFAR_ROWS
    for dataset, err in (("cifar10+", err10), ("cifar100+", err100))  # "+": standard augmentation, as the zoo marks it
)
_TABLE6 = "PyramidNet paper Table 6 (single 224 crop; top-1 error as the authors' README prints it)"
_IMAGENET_PUBLISHED = (
    Published(top1=round(100 - 20.47, 2), params=62.1e6, source=_TABLE6),
    Published(top1=round(100 - 20.11, 2), params=116.4e6, knobs={"alpha": 450, "drop_rate": 0.5}, source=_TABLE6),
)

# The ImageNet network represents the family in ``smallnets compare --baselines``: its chart rates
# ImageNet top-1 against cost, where a CIFAR figure has no place.
ENTRIES = (
    Entry(name="pyramidnet", family="pyramidnet", paper=PAPER, spec=pyramidnet, input_size=(3, 32, 32), published=_CIFAR_PUBLISHED, baseline=True),
    Entry(name="pyramidnet_imagenet", family="pyramidnet", paper=PAPER, spec=pyramidnet_imagenet, published=_IMAGENET_PUBLISHED,
          representative=True, baseline=True),
)  # fmt: skip

__all__ = ["EXPANSION", "IMAGENET_DEPTHS", "STEMS", "PyramidBasic", "PyramidBottleneck", "PyramidNetSpec", "Unit", "additive_widths",
           "pyramidal_stages", "pyramidnet", "pyramidnet_imagenet"]  # fmt: skip
