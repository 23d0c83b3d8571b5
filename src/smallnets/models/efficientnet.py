"""EfficientNet-B0 to B7 (Tan & Le 2019, arXiv:1905.11946), built from its spec as torchvision does."""

from __future__ import annotations

import math

from torch import nn

from smallnets.arch.efficientnet import EfficientNetSpec
from smallnets.layers import init_weights, is_meta
from smallnets.models._inverted import ConvNet


class EfficientNet(ConvNet):
    """Stem, MBConv stages (SiLU, SE, stochastic depth), 1x1 conv to 4x the last width, GAP, dropout, FC."""

    def __init__(self, spec: EfficientNetSpec):
        super().__init__(spec, same_padding=spec.same_padding)
        init_efficientnet(self)


def init_efficientnet(model: nn.Module) -> None:
    """The reference init: He-normal (fan-out) convs, unit BN, and a uniform(+-1/sqrt(classes)) classifier."""
    init_weights(model)
    if is_meta(model):
        return
    for m in model.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
