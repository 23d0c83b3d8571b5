"""DenseNet and DenseNet-BC (Huang et al. 2017, arXiv:1608.06993), built from its spec: ImageNet Table 1 and the CIFAR models of Table 2."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace

import torch
import torch.utils.checkpoint
from torch import nn

from smallnets.arch.densenet import DenseNetSpec, Layer
from smallnets.layers import ClassifierHead, SmallNet, init_weights


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
    """Concatenate every earlier map, then [BN-ReLU-Conv1x1 (``bottleneck_chs``, 4k in the paper)] and
    BN-ReLU-Conv3x3 (``growth`` new maps).

    The 1x1 bottleneck is DenseNet-B's (``nn.Identity`` without it). With ``memory_efficient``, the
    concatenation and bottleneck are recomputed in the backward pass instead of stored: their
    outputs grow with depth, the 3x3 conv's do not.
    """

    def __init__(self, layer: Layer, *, drop_rate: float = 0.0, memory_efficient: bool = False):
        super().__init__()
        mid = layer.in_chs if layer.bottleneck_chs is None else layer.bottleneck_chs
        self.bottleneck = nn.Identity() if layer.bottleneck_chs is None else PreActConv(layer.in_chs, mid, 1, drop_rate)
        self.conv = PreActConv(mid, layer.growth, 3, drop_rate)
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
    """Each layer sees the concatenation of the block input and every earlier layer's new maps."""

    def __init__(self, layers: tuple[Layer, ...], *, drop_rate: float = 0.0, memory_efficient: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(layer, drop_rate=drop_rate, memory_efficient=memory_efficient) for layer in layers)
        self.out_chs = layers[0].in_chs + sum(layer.growth for layer in layers)

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

    def __init__(self, spec: DenseNetSpec):
        super().__init__()
        self.spec = spec
        self.stem = _cifar_stem(spec.in_chans, spec.stem_chs) if spec.stem == "cifar" else _imagenet_stem(spec.in_chans, spec.stem_chs)
        stages, chs = [], spec.stem_chs
        for stage in spec.stages:
            parts = {}
            if stage.transition_chs is not None:
                parts["transition"] = Transition(chs, stage.transition_chs, spec.drop_rate)
            parts["block"] = block = DenseBlock(stage.layers, drop_rate=spec.drop_rate, memory_efficient=spec.memory_efficient)
            chs = block.out_chs
            stages.append(nn.Sequential(OrderedDict(parts)))
        self.stages = nn.Sequential(*stages)
        self.neck = nn.Sequential()  # pre-activation leaves the last block un-normalised: BN-ReLU before pooling
        self.neck.add_module("bn", nn.BatchNorm2d(chs))
        self.neck.add_module("act", nn.ReLU(inplace=True))
        self.num_features = chs
        self.classifier = ClassifierHead(chs, spec.num_classes)
        init_weights(self)


def _cifar_stem(in_chans: int, chs: int) -> nn.Module:
    """3x3 conv at stride 1 and nothing else: the first dense layer's BN-ReLU pre-activates it."""
    stem = nn.Sequential()
    stem.add_module("conv", nn.Conv2d(in_chans, chs, 3, padding=1, bias=False))
    return stem


def _imagenet_stem(in_chans: int, chs: int) -> nn.Module:
    """7x7/2 conv - BN - ReLU - 3x3/2 max-pool (Table 1)."""
    stem = nn.Sequential()
    stem.add_module("conv", nn.Conv2d(in_chans, chs, 7, stride=2, padding=3, bias=False))
    stem.add_module("bn", nn.BatchNorm2d(chs))
    stem.add_module("act", nn.ReLU(inplace=True))
    stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
    return stem


def spec_for_shapes(spec: DenseNetSpec, shapes: Mapping[str, tuple[int, ...]]) -> DenseNetSpec:
    """``spec`` with the stem's, every transition's and every dense layer's widths read from the
    state-dict ``shapes`` (a pruned model's: each layer may then have its own growth)."""
    stages = []
    for i, stage in enumerate(spec.stages):
        key = f"stages.{i}."
        transition = shapes[key + "transition.conv.conv.weight"][0] if stage.transition_chs is not None else None
        layers = []
        for j, layer in enumerate(stage.layers):
            lk = f"{key}block.layers.{j}."
            growth, mid = shapes[lk + "conv.conv.weight"][:2]
            if layer.bottleneck_chs is None:
                layers.append(replace(layer, in_chs=mid, growth=growth))
            else:
                layers.append(replace(layer, in_chs=shapes[lk + "bottleneck.conv.weight"][1], bottleneck_chs=mid, growth=growth))
        stages.append(replace(stage, transition_chs=transition, layers=tuple(layers)))
    return replace(spec, stem_chs=shapes["stem.conv.weight"][0], stages=tuple(stages))
