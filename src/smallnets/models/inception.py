"""GoogLeNet (Szegedy et al. 2015, arXiv:1409.4842) and Inception v3 (Szegedy et al. 2016, arXiv:1512.00567):
stacks of multi-branch modules whose outputs are concatenated, built from their specs."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from smallnets.arch.inception import Branch, Conv, Module, Pool, _InceptionSpec, module_out_chs
from smallnets.layers import ClassifierHead, ConvNormAct, SmallNet, init_weights


class Concat(nn.Module):
    """Parallel paths on one input, their outputs concatenated along channels, in registration order."""

    def __init__(self, paths: dict[str, nn.Module]):
        super().__init__()
        for name, path in paths.items():
            self.add_module(name, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([path(x) for path in self.children()], 1)


def _layer(layer: Conv | Pool, in_chs: int, bn_eps: float) -> nn.Module:
    if isinstance(layer, Pool):
        cls = nn.MaxPool2d if layer.kind == "max" else nn.AvgPool2d
        return cls(layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    # torchvision's BasicConv2d: conv without bias - BN(eps) - ReLU; keys conv.weight, bn.*
    return ConvNormAct(in_chs, layer.out_chs, layer.kernel, layer.stride, padding=layer.padding, norm=partial(nn.BatchNorm2d, eps=bn_eps))


def _path(layers: tuple[Conv | Pool, ...], in_chs: int, bn_eps: float) -> tuple[nn.Sequential, int]:
    """The layers in order (keys ``0.conv.*``, ``1.bn.*``, ...; pools hold no keys) and the channels they end at."""
    seq = nn.Sequential()
    for layer in layers:
        seq.append(_layer(layer, in_chs, bn_eps))
        in_chs = layer.out_chs if isinstance(layer, Conv) else in_chs
    return seq, in_chs


def branch_module(branch: Branch, in_chs: int, bn_eps: float) -> nn.Sequential:
    """A branch: its layers, then its split (parallel convs, concatenated: keys ``N.a.*``, ``N.b.*``) if any."""
    seq, chs = _path(branch.layers, in_chs, bn_eps)
    if branch.split:
        seq.append(Concat({chr(ord("a") + i): _layer(c, chs, bn_eps) for i, c in enumerate(branch.split)}))
    return seq


class InceptionBlock(Concat):
    """One module: its branches (``branch1`` ... / ``branch1x1`` ... ``branch_pool``) on the same input,
    concatenated in order (the order of the reference's ``torch.cat``)."""

    def __init__(self, block: Module, in_chs: int, bn_eps: float):
        super().__init__({b.name: branch_module(b, in_chs, bn_eps) for b in block.branches()})


class _Inception(SmallNet):
    """Stem (conv - BN - ReLU layers and max-pools), stages (an optional opening max-pool, then modules
    named by their paper labels: ``stages.inception4.a`` is 4a), no neck, GAP, dropout, FC."""

    def __init__(self, spec: _InceptionSpec):
        super().__init__()
        self.spec = spec
        self.stem, in_chs = _path(spec.stem, spec.in_chans, spec.bn_eps)
        self.stages = nn.Sequential()
        for stage in spec.stages:
            seq = nn.Sequential()
            if stage.pool is not None:
                seq.add_module("pool", _layer(stage.pool, in_chs, spec.bn_eps))
            for label, block in zip(stage.labels, stage.blocks):
                seq.add_module(label, InceptionBlock(block, in_chs, spec.bn_eps))
                in_chs = module_out_chs(block, in_chs)
            self.stages.add_module(stage.name, seq)
        self.neck = nn.Identity()
        self.num_features = spec.num_features
        assert in_chs == self.num_features  # the spec's count and the built layers agree
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)  # the zoo's init (He-normal convs, unit BN, small-normal FC); torchvision's is truncated-normal


class GoogLeNet(_Inception):
    """GoogLeNet (torchvision's layout, auxiliary classifiers off): 7x7/2 stem, 3a-3b, 4a-4e, 5a-5b."""


class InceptionV3(_Inception):
    """Inception v3 (torchvision's layout, auxiliary classifier off): Mixed_5b-5d, 6a-6e, 7a-7c at 299 px."""

