"""AlexNet (Krizhevsky et al. 2012, torchvision's single-GPU variant) and VGG (Simonyan & Zisserman 2015,
arXiv:1409.1556): plain conv stacks with max-pools and a three-layer FC classifier, built from their specs."""

from __future__ import annotations

from torch import nn

from smallnets.arch.vgg import _PlainSpec
from smallnets.layers import ConvNormAct, SmallNet, init_weights


class FCClassifier(nn.Sequential):
    """Adaptive average pool to ``pool_size`` x ``pool_size``, flatten, then per hidden width FC - ReLU
    with a dropout (before the FC when ``dropout_before_fc``, AlexNet; after the ReLU otherwise, VGG),
    and the class FC. Keys: ``fc1.*``, ``fc2.*``, ..., ``fc.*``, in torchvision's order."""

    def __init__(self, in_chs: int, pool_size: int, hidden: tuple[int, ...], num_classes: int, drop_rate: float, dropout_before_fc: bool):
        super().__init__()
        self.add_module("pool", nn.AdaptiveAvgPool2d(pool_size))
        self.add_module("flatten", nn.Flatten(1))
        features = in_chs * pool_size**2
        for i, width in enumerate(hidden, start=1):
            if dropout_before_fc:
                self.add_module(f"drop{i}", nn.Dropout(drop_rate))
            self.add_module(f"fc{i}", nn.Linear(features, width))
            self.add_module(f"act{i}", nn.ReLU())
            if not dropout_before_fc:
                self.add_module(f"drop{i}", nn.Dropout(drop_rate))
            features = width
        self.add_module("fc", nn.Linear(features, num_classes))


class PlainNet(SmallNet):
    """No stem of its own: the stages are the conv - [BN] - ReLU layers (``conv1``, ``conv2``, ... in each
    stage, torchvision's order: conv, then BN) closed by their max-pool; no neck; the FC classifier.

    Initialised as torchvision's VGG: He-normal (fan-out) convs, unit BN, N(0, 0.01) linear layers
    (torchvision's AlexNet keeps PyTorch's defaults; the paper's N(0, 0.01) convs need its tuned rates).
    """

    def __init__(self, spec: _PlainSpec):
        super().__init__()
        self.spec = spec
        self.stem = nn.Identity()
        self.stages = nn.Sequential()
        in_chs = spec.in_chans
        norm = nn.BatchNorm2d if spec.batch_norm else None
        for i, plain in enumerate(spec.stages):
            stage = nn.Sequential()
            for j, conv in enumerate(plain.convs, start=1):
                stage.add_module(f"conv{j}", ConvNormAct(in_chs, conv.out_chs, conv.kernel, conv.stride, padding=conv.padding, norm=norm, bias=True))
                in_chs = conv.out_chs
            if plain.pool is not None:
                stage.add_module("pool", nn.MaxPool2d(plain.pool.kernel, stride=plain.pool.stride, padding=plain.pool.padding))
            self.stages.add_module(str(i), stage)
        self.neck = nn.Identity()
        self.num_features = spec.num_features
        self.classifier = FCClassifier(self.num_features, spec.pool_size, spec.fc_chs, spec.num_classes, spec.drop_rate, spec.dropout_before_fc)
        init_weights(self)


class AlexNet(PlainNet):
    """AlexNet: conv 11x11/s4 64, conv 5x5 192, conv 3x3 384 - 256 - 256, overlapping 3x3/s2 max-pools after
    conv1, conv2 and conv5; adaptive pool 6x6; dropout - FC 4096 - ReLU twice; FC (torchvision's ``alexnet``)."""


class VGG(PlainNet):
    """VGG: five stages of 3x3 convs (Table 1), each closed by a 2x2/s2 max-pool; adaptive pool 7x7;
    FC 4096 - ReLU - dropout twice; FC (torchvision's ``vgg*`` / ``vgg*_bn``)."""
