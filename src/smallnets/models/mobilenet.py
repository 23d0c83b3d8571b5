"""MobileNetV1 (Howard et al. 2017, arXiv:1704.04861) and MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381), built from their specs."""

from __future__ import annotations

from smallnets.arch.mobilenet import MobileNetV1Spec, MobileNetV2Spec
from smallnets.layers import init_weights
from smallnets.models._inverted import ConvNet


class MobileNetV1(ConvNet):
    """Stem, 13 depthwise-separable layers (or full 3x3 convs: the paper's "Conv MobileNet"), [1x1 head], GAP, FC."""

    def __init__(self, spec: MobileNetV1Spec):
        super().__init__(spec)
        init_weights(self)


class MobileNetV2(ConvNet):
    """Stem, 17 inverted bottlenecks (ReLU6, linear projection), 1x1 conv to 1280, GAP, dropout, FC; as torchvision."""

    def __init__(self, spec: MobileNetV2Spec):
        super().__init__(spec)
        init_weights(self)
