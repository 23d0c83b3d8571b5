"""DenseNet and DenseNet-BC (Huang et al. 2017, arXiv:1608.06993) as specs: ImageNet Table 1 and the
CIFAR models of Table 2, every dense layer with its explicit input, bottleneck and growth widths,
every transition with its output width, the knobs, and the published figures."""

from __future__ import annotations

import math
from dataclasses import dataclass

from smallnets._checks import check_bool, check_choice, check_int, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks, arXiv:1608.06993"

BN_SIZE = 4  # the bottleneck 1x1 conv produces 4k feature maps (Section 3, "Bottleneck layers")

# The stem: "imagenet" is Table 1's 7x7/2 conv - BN - ReLU - 3x3/2 max-pool; "cifar" a 3x3/1 conv and
# nothing else (Section 4: the first dense layer's BN-ReLU pre-activates it; 32x32 ends at 8x8 or 4x4).
STEMS = ("imagenet", "cifar")


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One dense block of a table: ``repeats`` dense layers, opened by a transition (BN - ReLU - 1x1 conv,
    2x2/2 average pooling) when ``transition``."""

    repeats: int  # dense layers in the block
    transition: bool  # a transition before the block (every block but the first)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One ImageNet DenseNet of Table 1: growth rate, its dense blocks, stem width."""

    growth_rate: int  # k
    stem: int  # output channels of the 7x7/2 stem conv (2k, except DenseNet-161's 96)
    stages: tuple[Stage, ...]

    @property
    def blocks(self) -> tuple[int, ...]:
        """Dense layers in each block: the entry's ``blocks`` argument."""
        return tuple(s.repeats for s in self.stages)


def imagenet_table(blocks: tuple[int, ...]) -> tuple[Stage, ...]:
    """Table 1's rows for ``blocks`` layers per dense block: a transition before every block but the first."""
    return tuple(Stage(repeats=n, transition=i > 0) for i, n in enumerate(blocks))


# Table 1 (sides at 224 input: the stem ends at 56). DenseNet-161 is torchvision's (k=48, 96 stem maps).
VARIANTS = {
    "densenet121": Variant(growth_rate=32, stem=64, stages=(
        Stage(repeats=6, transition=False),  # 56 -> 56
        Stage(repeats=12, transition=True),  # 56 -> 28
        Stage(repeats=24, transition=True),  # 28 -> 14
        Stage(repeats=16, transition=True),  # 14 -> 7
    )),
    "densenet161": Variant(growth_rate=48, stem=96, stages=(
        Stage(repeats=6, transition=False),  # 56 -> 56
        Stage(repeats=12, transition=True),  # 56 -> 28
        Stage(repeats=36, transition=True),  # 28 -> 14
        Stage(repeats=24, transition=True),  # 14 -> 7
    )),
    "densenet169": Variant(growth_rate=32, stem=64, stages=(
        Stage(repeats=6, transition=False),  # 56 -> 56
        Stage(repeats=12, transition=True),  # 56 -> 28
        Stage(repeats=32, transition=True),  # 28 -> 14
        Stage(repeats=32, transition=True),  # 14 -> 7
    )),
    "densenet201": Variant(growth_rate=32, stem=64, stages=(
        Stage(repeats=6, transition=False),  # 56 -> 56
        Stage(repeats=12, transition=True),  # 56 -> 28
        Stage(repeats=48, transition=True),  # 28 -> 14
        Stage(repeats=32, transition=True),  # 14 -> 7
    )),
    "densenet264": Variant(growth_rate=32, stem=64, stages=(
        Stage(repeats=6, transition=False),  # 56 -> 56
        Stage(repeats=12, transition=True),  # 56 -> 28
        Stage(repeats=64, transition=True),  # 28 -> 14
        Stage(repeats=48, transition=True),  # 14 -> 7
    )),
}  # fmt: skip


def cifar_table(layers: int) -> tuple[Stage, ...]:
    """Table 2's CIFAR networks: three dense blocks of ``layers`` layers each."""
    return (
        Stage(repeats=layers, transition=False),  # 32 -> 32
        Stage(repeats=layers, transition=True),  # 32 -> 16
        Stage(repeats=layers, transition=True),  # 16 -> 8
    )


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One dense layer: it sees ``in_chs`` maps (the block input and every earlier layer's), then
    [BN - ReLU - 1x1 conv to ``bottleneck_chs``] (DenseNet-B; none when ``None``) and BN - ReLU -
    3x3 conv to ``growth`` new maps."""

    in_chs: int
    bottleneck_chs: int | None  # 4k in the paper; None: no bottleneck, the 3x3 conv sees in_chs maps
    growth: int  # k: the maps this layer adds to the concatenation

    def __post_init__(self) -> None:
        where = f"Layer(in_chs={self.in_chs!r}, bottleneck_chs={self.bottleneck_chs!r}, growth={self.growth!r})"
        check_channels(where, in_chs=self.in_chs, growth=self.growth)
        if self.bottleneck_chs is not None:
            check_channels(where, bottleneck_chs=self.bottleneck_chs)


@dataclass(frozen=True, kw_only=True)
class DenseStage:
    """[A transition (BN - ReLU - 1x1 conv to ``transition_chs``, 2x2/2 average pooling),] then a dense
    block of ``layers``: its output is the concatenation of the block input and every layer's maps."""

    transition_chs: int | None  # floor(theta * m) in the paper; None: no transition (the first block)
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        if self.transition_chs is not None:
            check_channels("DenseStage", transition_chs=self.transition_chs)
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ValueError(f"DenseStage: layers must be a non-empty list of Layer, got {self.layers!r:.80}")
        for j, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"DenseStage: layers[{j}] must be a Layer, got {layer!r:.80}")

    @property
    def block_in_chs(self) -> int:
        """The dense block's input: the transition's output, or the stage input without one."""
        return self.layers[0].in_chs

    @property
    def out_chs(self) -> int:
        return self.block_in_chs + sum(layer.growth for layer in self.layers)


@dataclass(frozen=True, kw_only=True)
class DenseNetSpec(ArchSpec):
    """Stem, stages of [transition,] dense block, final BN - ReLU (the neck), GAP, FC.

    Every layer's input is the block input plus the earlier layers' growth; a transition takes the
    previous stage's full concatenation (the stem's output for the first stage).
    """

    family = "densenet"
    stem_chs: int  # output channels of the stem conv
    stem: str = "imagenet"  # one of STEMS
    stages: tuple[DenseStage, ...]
    drop_rate: float = 0.0  # dropout after every conv of the layers and transitions (Section 4.2: 0.2 without augmentation)
    memory_efficient: bool = False  # recompute each layer's concatenation and bottleneck in the backward pass

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_channels(name, stem_chs=self.stem_chs)
        check_choice(f"{name}: stem", self.stem, STEMS)
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_bool("memory_efficient", self.memory_efficient)
        if not isinstance(self.stages, tuple) or not self.stages or not all(isinstance(s, DenseStage) for s in self.stages):
            raise ValueError(f"{name}: stages must be a non-empty list of DenseStage, got {self.stages!r:.80}")
        chs, source = self.stem_chs, "the stem's output"
        for i, stage in enumerate(self.stages):
            if stage.transition_chs is not None:
                chs, source = stage.transition_chs, f"stages[{i}].transition_chs"
            block_in = chs
            for j, layer in enumerate(stage.layers):
                if layer.in_chs != chs:
                    whose = "the earlier layer's" if j == 1 else f"the {j} earlier layers'"
                    earlier = f" + {whose} growth {chs - block_in}" if j else ""
                    raise ValueError(
                        f"{name}: stages[{i}].layers[{j}].in_chs must be the block input ({source} {block_in}){earlier} = {chs} channels, "
                        f"got {layer.in_chs}"
                    )
                chs += layer.growth
            source = f"stages[{i}]'s output"

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(layer for stage in self.stages for layer in stage.layers)

    @property
    def num_features(self) -> int:
        return self.stages[-1].out_chs


def dense_stages(table: tuple[Stage, ...], in_chs: int, growth_rate: int, *, bottleneck: bool, compression: float) -> tuple[DenseStage, ...]:
    """The table's rows with explicit widths: layer i of a block sees its input plus i * k maps; the
    bottleneck is 4k wide; a transition compresses the m maps before it to floor(theta * m)."""
    stages, chs = [], in_chs
    for row in table:
        transition = None
        if row.transition:
            transition = chs = int(math.floor(compression * chs))
        layers = tuple(Layer(in_chs=chs + i * growth_rate, bottleneck_chs=BN_SIZE * growth_rate if bottleneck else None, growth=growth_rate)
                       for i in range(row.repeats))  # fmt: skip
        chs += row.repeats * growth_rate
        stages.append(DenseStage(transition_chs=transition, layers=layers))
    return tuple(stages)


def _check_common(growth_rate, compression, drop_rate, memory_efficient, cifar) -> None:
    check_int("growth_rate", growth_rate, 1)
    check_range("compression", compression, 0.0, 1.0, low_open=True)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("memory_efficient", memory_efficient)
    check_bool("cifar", cifar)


def densenet_imagenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    growth_rate: int = 32,
    blocks: tuple[int, ...] = (6, 12, 24, 16),
    stem_chs: int = 64,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    cifar: bool = False,
) -> DenseNetSpec:
    """DenseNet-BC for ImageNet (Table 1): bottleneck layers, compression 0.5, 7x7/2 stem and max-pool.

    ``cifar=True`` swaps the stem for a stride-1 3x3 conv without max-pool (32x32 ends at 4x4).
    ``memory_efficient=True`` checkpoints each layer's concatenation and bottleneck.
    """
    _check_common(growth_rate, compression, drop_rate, memory_efficient, cifar)
    stages = dense_stages(imagenet_table(tuple(blocks)), stem_chs, growth_rate, bottleneck=True, compression=compression)
    return DenseNetSpec(num_classes=num_classes, in_chans=in_chans, resolution=32 if cifar else 224, stem_chs=stem_chs,
                        stem="cifar" if cifar else "imagenet", stages=stages, drop_rate=drop_rate, memory_efficient=memory_efficient)  # fmt: skip


def densenet_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    *,
    depth: int = 100,
    growth_rate: int = 12,
    bottleneck: bool = True,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    cifar: bool = True,
) -> DenseNetSpec:
    """The CIFAR DenseNets of Table 2: three dense blocks at 32, 16 and 8 px; the default is DenseNet-BC (L=100, k=12).

    ``depth`` L counts the conv and FC layers: each block has (L - 4) / 3 layers, or (L - 4) / 6
    with ``bottleneck`` (each of those holds two convs). The first conv has 16 maps, or 2k for
    DenseNet-BC (bottleneck and compression < 1). ``drop_rate=0.2`` is the paper's setting
    without data augmentation. ``cifar`` is always True here (the model is built for 32x32).
    """
    _check_common(growth_rate, compression, drop_rate, memory_efficient, cifar)
    check_bool("bottleneck", bottleneck)
    if not cifar:
        raise ValueError("cifar must be True for densenet_cifar (it is the 32x32 design); use densenet121 ... densenet264 for ImageNet")
    per_layer = 6 if bottleneck else 3
    check_int("depth", depth, 4 + per_layer)
    if (depth - 4) % per_layer:
        kind = "with bottleneck, (depth - 4) must be divisible by 6" if bottleneck else "without bottleneck, (depth - 4) must be divisible by 3"
        raise ValueError(f"depth must give whole dense blocks: {kind}, got depth={depth}")
    layers = (depth - 4) // per_layer
    stem_chs = 2 * growth_rate if bottleneck and compression < 1 else 16
    stages = dense_stages(cifar_table(layers), stem_chs, growth_rate, bottleneck=bottleneck, compression=compression)
    return DenseNetSpec(num_classes=num_classes, in_chans=in_chans, resolution=32, stem_chs=stem_chs, stem="cifar", stages=stages,
                        drop_rate=drop_rate, memory_efficient=memory_efficient)  # fmt: skip


def _published_imagenet(top1: float, source: str = "DenseNet paper Table 3 (single-crop, 100 - top-1 error)") -> tuple[Published, ...]:
    return (Published(top1=top1, source=source),)


_IMAGENET_TOP1 = {
    "densenet121": _published_imagenet(74.98),
    "densenet161": _published_imagenet(77.138, "torchvision model card (DenseNet-161 is not in the paper's Table 3)"),
    "densenet169": _published_imagenet(76.20),
    "densenet201": _published_imagenet(77.42),
    "densenet264": _published_imagenet(77.85),
}

# DenseNet paper Table 2, C10+ (standard augmentation) error -> top-1 accuracy, 10 classes.
_CIFAR_PUBLISHED = (
    Published(top1=100 - 5.24, dataset="cifar10+", params=1.0e6, knobs={"depth": 40, "bottleneck": False, "compression": 1.0}, source="DenseNet paper Table 2"),
    Published(top1=100 - 4.10, dataset="cifar10+", params=7.0e6, knobs={"bottleneck": False, "compression": 1.0}, source="DenseNet paper Table 2"),
    Published(top1=100 - 3.74, dataset="cifar10+", params=27.2e6, knobs={"growth_rate": 24, "bottleneck": False, "compression": 1.0}, source="DenseNet paper Table 2"),
    Published(top1=100 - 4.51, dataset="cifar10+", params=0.8e6, source="DenseNet paper Table 2 (DenseNet-BC)"),
    Published(top1=100 - 3.62, dataset="cifar10+", params=15.3e6, knobs={"depth": 250, "growth_rate": 24}, source="DenseNet paper Table 2 (DenseNet-BC)"),
    Published(top1=100 - 3.46, dataset="cifar10+", params=25.6e6, knobs={"depth": 190, "growth_rate": 40}, source="DenseNet paper Table 2 (DenseNet-BC)"),
)

ENTRIES = (
    *(
        Entry(
            name=name,
            family="densenet",
            paper=PAPER,
            spec=densenet_imagenet,
            fixed={"blocks": variant.blocks, "stem_chs": variant.stem, "compression": 0.5},
            defaults={"growth_rate": variant.growth_rate},
            published=_IMAGENET_TOP1[name],
            representative=name == "densenet121",
        )
        for name, variant in VARIANTS.items()
    ),
    Entry(name="densenet_cifar", family="densenet", paper=PAPER, spec=densenet_cifar, input_size=(3, 32, 32), published=_CIFAR_PUBLISHED),
)

__all__ = ["BN_SIZE", "STEMS", "VARIANTS", "DenseNetSpec", "DenseStage", "Layer", "Stage", "Variant", "cifar_table", "dense_stages",
           "densenet_cifar", "densenet_imagenet", "imagenet_table"]  # fmt: skip
