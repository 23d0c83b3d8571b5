"""AlexNet (Krizhevsky et al. 2012, as torchvision ships it) and VGG (Simonyan & Zisserman 2015,
arXiv:1409.1556, Table 1) as specs: plain stacks of conv - [BN] - ReLU with max-pools, then a
three-layer fully connected classifier; the layouts, the knobs and the published figures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from smallnets._checks import check_bool, check_choice, check_int, check_positive, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, make_divisible

ALEXNET_PAPER = (
    "Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep Convolutional Neural Networks (NeurIPS 2012); "
    "torchvision's single-GPU variant follows Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks, arXiv:1404.5997"
)
VGG_PAPER = "Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image Recognition, arXiv:1409.1556"


@dataclass(frozen=True, kw_only=True)
class ConvLayer:
    """One conv (with a bias) - [BN] - ReLU: ``kernel`` x ``kernel`` at ``stride`` with ``padding``, to ``out_chs``.
    Its input is the previous layer's output (the network's input for the first)."""

    out_chs: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1  # VGG: 1 pixel, so 3x3 convs keep the side ("the spatial resolution is preserved")

    def __post_init__(self) -> None:
        where = f"ConvLayer(out_chs={self.out_chs!r})"
        check_channels(where, out_chs=self.out_chs, kernel=self.kernel, stride=self.stride)
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or self.padding < 0:
            raise ValueError(f"{where}: padding must be an integer >= 0, got {self.padding!r}")


@dataclass(frozen=True, kw_only=True)
class MaxPool:
    """A max-pool: ``kernel`` x ``kernel`` at ``stride`` with ``padding`` (PyTorch's floor rounding)."""

    kernel: int
    stride: int
    padding: int = 0

    def __post_init__(self) -> None:
        where = f"MaxPool(kernel={self.kernel!r}, stride={self.stride!r})"
        check_channels(where, kernel=self.kernel, stride=self.stride)
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or not 0 <= self.padding <= self.kernel // 2:
            raise ValueError(f"{where}: padding must be an integer in [0, kernel // 2 = {self.kernel // 2}], got {self.padding!r}")


@dataclass(frozen=True, kw_only=True)
class PlainStage:
    """A stage: its convs in order, then a max-pool (``None``: no pool)."""

    convs: tuple[ConvLayer, ...]
    pool: MaxPool | None

    def __post_init__(self) -> None:
        if not isinstance(self.convs, tuple) or not self.convs or not all(isinstance(c, ConvLayer) for c in self.convs):
            raise ValueError(f"PlainStage: convs must be a non-empty list of ConvLayer, got {self.convs!r:.80}")
        if self.pool is not None and not isinstance(self.pool, MaxPool):
            raise ValueError(f"PlainStage: pool must be a MaxPool or None, got {self.pool!r:.80}")


@dataclass(frozen=True, kw_only=True)
class _PlainSpec(ArchSpec):
    """Stages of conv - [BN] - ReLU layers and max-pools, then the classifier: adaptive average pool to
    ``pool_size`` x ``pool_size``, flatten, one FC - ReLU per ``fc_chs`` entry (each with a dropout),
    and the class FC. Subclasses say where the dropouts sit."""

    dropout_before_fc: ClassVar[bool] = False  # True: dropout before each hidden FC (AlexNet); False: after its ReLU (VGG)
    stages: tuple[PlainStage, ...]
    batch_norm: bool = False  # BN after every conv (the conv keeps its bias, as torchvision's vgg*_bn)
    pool_size: int  # side of the adaptive average pool before the first FC
    fc_chs: tuple[int, ...] = (4096, 4096)  # hidden FC widths
    drop_rate: float = 0.5  # dropout of each hidden FC

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not isinstance(self.stages, tuple) or not self.stages or not all(isinstance(s, PlainStage) for s in self.stages):
            raise ValueError(f"{name}: stages must be a non-empty list of PlainStage, got {self.stages!r:.80}")
        check_bool("batch_norm", self.batch_norm)
        check_channels(name, pool_size=self.pool_size)
        if not isinstance(self.fc_chs, tuple):
            raise ValueError(f"{name}: fc_chs must be a list of channel counts, got {self.fc_chs!r:.80}")
        check_channels(name, **{f"fc_chs[{i}]": c for i, c in enumerate(self.fc_chs)})
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)

    @property
    def convs(self) -> tuple[ConvLayer, ...]:
        return tuple(c for stage in self.stages for c in stage.convs)

    @property
    def num_features(self) -> int:
        return self.stages[-1].convs[-1].out_chs

    @property
    def flat_features(self) -> int:
        """Inputs of the first FC: the pooled map, flattened."""
        return self.num_features * self.pool_size**2


# ------------------------------------------------------------------------------------------------
# AlexNet


@dataclass(frozen=True, kw_only=True)
class AlexNetSpec(_PlainSpec):
    """AlexNet: five convs with three overlapping max-pools, then dropout - FC - ReLU twice, and the class FC."""

    family = "alexnet"
    dropout_before_fc = True
    pool_size: int = 6


OVERLAPPING_POOL = MaxPool(kernel=3, stride=2)  # Section 3.4: overlapping pooling, z = 3, s = 2
# torchvision's alexnet (the single-GPU "one weird trick" widths 64-192-384-256-256 rather than the
# paper's 96-256-384-384-256 split over two GPUs; no local response normalisation)
ALEXNET_TABLE = (
    PlainStage(convs=(ConvLayer(out_chs=64, kernel=11, stride=4, padding=2),), pool=OVERLAPPING_POOL),  # 224 -> 55 -> 27
    PlainStage(convs=(ConvLayer(out_chs=192, kernel=5, padding=2),), pool=OVERLAPPING_POOL),  # 27 -> 27 -> 13
    PlainStage(convs=(ConvLayer(out_chs=384), ConvLayer(out_chs=256), ConvLayer(out_chs=256)), pool=OVERLAPPING_POOL),  # 13 -> 13 -> 6
)


def alexnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    fc_chs: int = 4096,
    drop_rate: float = 0.5,
    cifar: bool = False,
) -> AlexNetSpec:
    """AlexNet, layer for layer torchvision's ``alexnet``. ``fc_chs``: width of the two hidden FC layers
    (4096). ``drop_rate``: Section 4.2's dropout 0.5 before each of them. ``cifar``: conv1 becomes a
    3x3/s1 conv (padding 1) in place of the 11x11/s4, and the three overlapping 3x3/s2 max-pools are
    padded by 1 so each halves the side exactly (32 -> 16 -> 8 -> 4: total stride 8, the zoo's CIFAR
    rule); the classifier pools the 4x4 map to 1x1 (256 features) rather than to 6x6."""
    check_int("fc_chs", fc_chs, 1)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    stages, pool_size = ALEXNET_TABLE, 6
    if cifar:
        first = dataclasses.replace(stages[0].convs[0], kernel=3, stride=1, padding=1)
        pool = dataclasses.replace(OVERLAPPING_POOL, padding=1)
        stages = (PlainStage(convs=(first,), pool=pool), *(dataclasses.replace(s, pool=pool) for s in stages[1:]))
        pool_size = 1
    return AlexNetSpec(num_classes=num_classes, in_chans=in_chans, stages=stages, pool_size=pool_size, fc_chs=(fc_chs, fc_chs),
                       drop_rate=drop_rate, resolution=32 if cifar else 224)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# VGG


@dataclass(frozen=True, kw_only=True)
class VGGSpec(_PlainSpec):
    """VGG: five stages of 3x3 convs, each closed by a 2x2/s2 max-pool (CIFAR: the first three), then FC - ReLU - dropout twice, and the class FC."""

    family = "vgg"
    pool_size: int = 7


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A stage of Table 1: ``convs[c]`` 3x3 convs to ``out`` channels in configuration ``CONFIGS[c]``, then a 2x2/s2 max-pool."""

    out: int  # "conv3-<out>": every conv of the stage
    convs: tuple[int, int, int, int]  # 3x3 convs in configurations A, B, D, E


CONFIGS = ("A", "B", "D", "E")  # Table 1's columns built here; C (with 1x1 convs) and A-LRN are left out, as torchvision does
DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}  # weight layers (convs + 3 FC) -> configuration
VGG_POOL = MaxPool(kernel=2, stride=2)  # "max-pooling is performed over a 2 x 2 pixel window, with stride 2"
VGG_TABLE = (
    Stage(out=64, convs=(1, 2, 2, 2)),  # 224 -> 112
    Stage(out=128, convs=(1, 2, 2, 2)),  # 112 -> 56
    Stage(out=256, convs=(2, 2, 3, 4)),  # 56 -> 28
    Stage(out=512, convs=(2, 2, 3, 4)),  # 28 -> 14
    Stage(out=512, convs=(2, 2, 3, 4)),  # 14 -> 7
)
CIFAR_POOLS = 3  # cifar=True: only the first three stages end in a max-pool (32 -> 16 -> 8 -> 4)


def vgg(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    depth: int = 16,
    batch_norm: bool = False,
    width_mult: float = 1.0,
    fc_chs: int = 4096,
    drop_rate: float = 0.5,
    cifar: bool = False,
) -> VGGSpec:
    """VGG configuration A / B / D / E (``depth`` 11 / 13 / 16 / 19), layer for layer torchvision's ``vgg*``
    (``batch_norm``: its ``vgg*_bn``, BN after every conv). ``width_mult``: every conv's width times
    this, rounded to a multiple of 8 (not in the paper). ``fc_chs``: width of the two hidden FC layers
    (4096). ``drop_rate``: the paper's dropout 0.5 after each of them.

    ``cifar``: 32 px inputs. The usual CIFAR VGG keeps all five max-pools and classifies the 1x1x512
    map they leave; here the last two stages drop their max-pool instead (32 -> 16 -> 8 -> 4, stages 4
    and 5 both at 4x4), so the final feature map is 4x4 like every zoo model's CIFAR variant (total
    stride 8; stage 5's 3x3 convs would otherwise see a 2x2 map that is mostly padding). The classifier
    pools the 4x4 map to 1x1 rather than 7x7, so its first FC takes the 512 features. Same parameters
    as the five-pool net; stage 5 costs 4 times its mult-adds."""
    check_choice("depth", depth, DEPTHS)
    check_bool("batch_norm", batch_norm)
    check_positive("width_mult", width_mult)
    check_int("fc_chs", fc_chs, 1)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    column = CONFIGS.index(DEPTHS[depth])
    stages = []
    for i, row in enumerate(VGG_TABLE):
        out = row.out if width_mult == 1.0 else make_divisible(row.out * width_mult, 8)
        pool = VGG_POOL if not cifar or i < CIFAR_POOLS else None
        stages.append(PlainStage(convs=(ConvLayer(out_chs=out),) * row.convs[column], pool=pool))
    return VGGSpec(num_classes=num_classes, in_chans=in_chans, stages=tuple(stages), batch_norm=batch_norm, pool_size=1 if cifar else 7,
                   fc_chs=(fc_chs, fc_chs), drop_rate=drop_rate, resolution=32 if cifar else 224)  # fmt: skip


# The weights torchvision ships, and their model cards' ImageNet-1k top-1 (224 crop of a 256 resize).
# SqueezeNet's comparison point is the original two-GPU AlexNet (SqueezeNet paper Table 2: 240 MB, 57.2%
# top-1), not this single-GPU variant, so it is not recorded as alexnet's figure.
TORCHVISION_TOP1 = {
    (11, False): 69.020, (13, False): 69.928, (16, False): 71.592, (19, False): 72.376,
    (11, True): 70.370, (13, True): 71.586, (16, True): 73.360, (19, True): 74.218,
}  # fmt: skip
PAPER_PARAMS = {11: 133e6, 13: 133e6, 16: 138e6, 19: 144e6}  # VGG paper Table 2, in millions (configurations A, B, D, E)


def _vgg_entry(depth: int, batch_norm: bool) -> Entry:
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")
    if batch_norm:
        published = Published(top1=TORCHVISION_TOP1[depth, batch_norm], source=f"torchvision model card ({name}, IMAGENET1K_V1)")
    else:
        published = Published(top1=TORCHVISION_TOP1[depth, batch_norm], params=PAPER_PARAMS[depth],
                              source=f"torchvision model card ({name}, IMAGENET1K_V1); params: VGG paper Table 2")  # fmt: skip
    return Entry(name=name, family="vgg", paper=VGG_PAPER, spec=vgg, fixed={"depth": depth, "batch_norm": batch_norm},
                 published=(published,), representative=(depth, batch_norm) == (16, False), baseline=True)  # fmt: skip


ENTRIES = (
    Entry(
        name="alexnet",
        family="alexnet",
        paper=ALEXNET_PAPER,
        spec=alexnet,
        published=(Published(top1=56.522, params=61_100_840, source="torchvision model card (alexnet, IMAGENET1K_V1)"),),
        representative=True,
        baseline=True,
    ),
    *(_vgg_entry(depth, batch_norm) for batch_norm in (False, True) for depth in DEPTHS),
)

__all__ = [
    "ALEXNET_TABLE", "CONFIGS", "DEPTHS", "VGG_TABLE", "AlexNetSpec", "ConvLayer", "MaxPool", "PlainStage", "Stage", "VGGSpec", "alexnet", "vgg",
]  # fmt: skip
