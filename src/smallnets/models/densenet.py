"""DenseNet and DenseNet-BC (Huang et al. 2017, arXiv:1608.06993): ImageNet Table 1 and the CIFAR models of Table 2."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn

from smallnets._checks import check_bool, check_int, check_range
from smallnets.layers import ClassifierHead, SmallNet, init_weights
from smallnets.registry import Published, register_model

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks, arXiv:1608.06993"

BN_SIZE = 4  # the bottleneck 1x1 conv produces 4k feature maps (Section 3, "Bottleneck layers")


@dataclass(frozen=True)
class Variant:
    """One ImageNet DenseNet of Table 1: growth rate, layers per dense block, stem width."""

    growth_rate: int  # k
    blocks: tuple[int, ...]  # dense layers in each of the 4 blocks (56, 28, 14, 7 px at 224)
    stem: int  # output channels of the 7x7/2 stem conv (2k, except DenseNet-161's 96)


VARIANTS = {
    "densenet121": Variant(growth_rate=32, blocks=(6, 12, 24, 16), stem=64),
    "densenet161": Variant(growth_rate=48, blocks=(6, 12, 36, 24), stem=96),
    "densenet169": Variant(growth_rate=32, blocks=(6, 12, 32, 32), stem=64),
    "densenet201": Variant(growth_rate=32, blocks=(6, 12, 48, 32), stem=64),
    "densenet264": Variant(growth_rate=32, blocks=(6, 12, 64, 48), stem=64),
}


class PreActConv(nn.Sequential):
    """The paper's composite function H: BN - ReLU - Conv (pre-activation), with optional dropout after the conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, bias=False)
        if drop_rate > 0:  # Section 4.2: dropout 0.2 after each conv when training without augmentation
            self.drop = nn.Dropout(drop_rate)


class DenseLayer(nn.Module):
    """Concatenate every earlier map, then [BN-ReLU-Conv1x1 (4k)] and BN-ReLU-Conv3x3 (k new maps).

    The 1x1 bottleneck is DenseNet-B's (``nn.Identity`` without it). With ``memory_efficient``, the
    concatenation and bottleneck are recomputed in the backward pass instead of stored: their
    outputs grow with depth, the 3x3 conv's do not.
    """

    def __init__(self, in_chs: int, growth_rate: int, *, bottleneck: bool, drop_rate: float, memory_efficient: bool):
        super().__init__()
        mid = BN_SIZE * growth_rate if bottleneck else in_chs
        self.bottleneck = PreActConv(in_chs, mid, 1, drop_rate) if bottleneck else nn.Identity()
        self.conv = PreActConv(mid, growth_rate, 3, drop_rate)
        self.memory_efficient = memory_efficient

    def _squeeze(self, *features: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat(features, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(self._squeeze, *features, use_reentrant=False)
        else:
            x = self._squeeze(*features)
        return self.conv(x)


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and every earlier layer's k maps."""

    def __init__(self, in_chs: int, num_layers: int, growth_rate: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_chs + i * growth_rate, growth_rate, **layer_kwargs) for i in range(num_layers))
        self.out_chs = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Between blocks: BN - ReLU - Conv1x1 to floor(theta * m) maps, then 2x2 average pooling (DenseNet-C)."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float = 0.0):
        super().__init__()
        self.conv = PreActConv(in_chs, out_chs, 1, drop_rate)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(SmallNet):
    """Stem, dense blocks joined by transitions, final BN-ReLU, global average pooling, FC.

    Stage i is [transition,] dense block i, so each stage's output is a block's full concatenation
    at that block's resolution.
    """

    def __init__(
        self,
        blocks: tuple[int, ...],
        growth_rate: int,
        stem: nn.Module,
        stem_chs: int,
        *,
        num_classes: int,
        bottleneck: bool = True,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ):
        super().__init__()
        self.stem = stem
        layer_kwargs = dict(bottleneck=bottleneck, drop_rate=drop_rate, memory_efficient=memory_efficient)
        stages, chs = [], stem_chs
        for i, num_layers in enumerate(blocks):
            parts = {}
            if i > 0:
                out = int(math.floor(compression * chs))
                parts["transition"] = Transition(chs, out, drop_rate)
                chs = out
            parts["block"] = block = DenseBlock(chs, num_layers, growth_rate, **layer_kwargs)
            chs = block.out_chs
            stages.append(nn.Sequential(OrderedDict(parts)))
        self.stages = nn.Sequential(*stages)
        self.neck = nn.Sequential()  # pre-activation leaves the last block un-normalised: BN-ReLU before pooling
        self.neck.add_module("bn", nn.BatchNorm2d(chs))
        self.neck.add_module("act", nn.ReLU(inplace=True))
        self.num_features = chs
        self.classifier = ClassifierHead(chs, num_classes)
        init_weights(self)


def _check_common(growth_rate, compression, drop_rate, memory_efficient, cifar) -> None:
    check_int("growth_rate", growth_rate, 1)
    check_range("compression", compression, 0.0, 1.0, low_open=True)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("memory_efficient", memory_efficient)
    check_bool("cifar", cifar)


def _cifar_stem(in_chans: int, chs: int) -> nn.Module:
    """3x3 conv at stride 1 and nothing else: the first dense layer's BN-ReLU pre-activates it."""
    stem = nn.Sequential()
    stem.add_module("conv", nn.Conv2d(in_chans, chs, 3, padding=1, bias=False))
    return stem


def _imagenet_stem(in_chans: int, chs: int) -> nn.Module:
    stem = nn.Sequential()
    stem.add_module("conv", nn.Conv2d(in_chans, chs, 7, stride=2, padding=3, bias=False))
    stem.add_module("bn", nn.BatchNorm2d(chs))
    stem.add_module("act", nn.ReLU(inplace=True))
    stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
    return stem


def _published_imagenet(top1: float, source: str = "DenseNet paper Table 3 (single-crop, 100 - top-1 error)") -> tuple[Published, ...]:
    return (Published(top1=top1, source=source),)


_IMAGENET_TOP1 = {
    "densenet121": _published_imagenet(74.98),
    "densenet161": _published_imagenet(77.138, "torchvision model card (DenseNet-161 is not in the paper's Table 3)"),
    "densenet169": _published_imagenet(76.20),
    "densenet201": _published_imagenet(77.42),
    "densenet264": _published_imagenet(77.85),
}


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
) -> DenseNet:
    """DenseNet-BC for ImageNet (Table 1): bottleneck layers, compression 0.5, 7x7/2 stem and max-pool.

    ``cifar=True`` swaps the stem for a stride-1 3x3 conv without max-pool (32x32 ends at 4x4).
    ``memory_efficient=True`` checkpoints each layer's concatenation and bottleneck.
    """
    _check_common(growth_rate, compression, drop_rate, memory_efficient, cifar)
    stem = _cifar_stem(in_chans, stem_chs) if cifar else _imagenet_stem(in_chans, stem_chs)
    return DenseNet(
        tuple(blocks), growth_rate, stem, stem_chs,
        num_classes=num_classes, bottleneck=True, compression=compression, drop_rate=drop_rate, memory_efficient=memory_efficient,
    )  # fmt: skip


def _register_imagenet(name: str, variant: Variant):
    return register_model(
        name,
        family="densenet",
        paper=PAPER,
        fixed={"blocks": variant.blocks, "stem_chs": variant.stem, "compression": 0.5},
        defaults={"growth_rate": variant.growth_rate},
        published=_IMAGENET_TOP1[name],
        representative=name == "densenet121",
    )


for _name, _variant in VARIANTS.items():
    _register_imagenet(_name, _variant)(densenet_imagenet)


# DenseNet paper Table 2, C10+ (standard augmentation) error -> top-1 accuracy, 10 classes.
_CIFAR_PUBLISHED = (
    Published(top1=100 - 5.24, dataset="cifar10+", params=1.0e6, knobs={"depth": 40, "bottleneck": False, "compression": 1.0}, source="DenseNet paper Table 2"),
    Published(top1=100 - 4.10, dataset="cifar10+", params=7.0e6, knobs={"bottleneck": False, "compression": 1.0}, source="DenseNet paper Table 2"),
    Published(top1=100 - 3.74, dataset="cifar10+", params=27.2e6, knobs={"growth_rate": 24, "bottleneck": False, "compression": 1.0}, source="DenseNet paper Table 2"),
    Published(top1=100 - 4.51, dataset="cifar10+", params=0.8e6, source="DenseNet paper Table 2 (DenseNet-BC)"),
    Published(top1=100 - 3.62, dataset="cifar10+", params=15.3e6, knobs={"depth": 250, "growth_rate": 24}, source="DenseNet paper Table 2 (DenseNet-BC)"),
    Published(top1=100 - 3.46, dataset="cifar10+", params=25.6e6, knobs={"depth": 190, "growth_rate": 40}, source="DenseNet paper Table 2 (DenseNet-BC)"),
)


@register_model("densenet_cifar", family="densenet", paper=PAPER, input_size=(3, 32, 32), published=_CIFAR_PUBLISHED)
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
) -> DenseNet:
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
    return DenseNet(
        (layers,) * 3, growth_rate, _cifar_stem(in_chans, stem_chs), stem_chs,
        num_classes=num_classes, bottleneck=bottleneck, compression=compression, drop_rate=drop_rate, memory_efficient=memory_efficient,
    )  # fmt: skip
