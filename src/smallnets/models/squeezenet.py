"""SqueezeNet 1.0 / 1.1 and the Section 5 metaparameter variants (Iandola et al. 2016, arXiv:1602.07360), built from their specs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import nn

from smallnets.arch.squeezenet import FireBlock, SqueezeNetSpec
from smallnets.layers import ConvNormAct, SmallNet, is_meta


class Fire(nn.Module):
    """Figure 1: squeeze 1x1 - ReLU, then expand 1x1 - ReLU and expand 3x3 - ReLU side by side, concatenated.

    No BatchNorm: every conv has a bias, as in the paper and torchvision. The block's ``bypass`` is
    not built here (see ``BypassFire``).
    """

    def __init__(self, block: FireBlock):
        super().__init__()
        self.squeeze = ConvNormAct(block.in_chs, block.squeeze, 1, norm=None)
        self.expand1x1 = ConvNormAct(block.squeeze, block.expand1x1, 1, norm=None)
        self.expand3x3 = ConvNormAct(block.squeeze, block.expand3x3, 3, norm=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat((self.expand1x1(x), self.expand3x3(x)), dim=1)


class BypassFire(Fire):
    """Figure 2: a fire module whose output is added to its input through ``bypass``.

    Simple bypass (``"identity"``): ``nn.Identity`` (no parameters). Complex bypass (``"conv"``):
    1x1 conv with bias, no BN, no activation. The fire's own keys are those of a plain ``Fire``, so
    a no-bypass state dict loads into a simple-bypass model unchanged.
    """

    def __init__(self, block: FireBlock):
        if block.bypass == "identity":
            bypass = nn.Identity()
        elif block.bypass == "conv":
            bypass = ConvNormAct(block.in_chs, block.out_chs, 1, norm=None, act=None)  # made before the fire's convs, as always
        else:
            raise ValueError(f"BypassFire needs a block with bypass 'identity' or 'conv', got {block.bypass!r}")
        super().__init__(block)
        self.bypass = bypass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.bypass(x)


def max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)  # ceil_mode as Caffe pools, and torchvision


class SqueezeNet(SmallNet):
    """conv1 - max-pool, stages of fire modules (a max-pool opening those the spec says), then dropout -
    conv10 1x1 - ReLU - GAP (no FC layer)."""

    def __init__(self, spec: SqueezeNetSpec):
        super().__init__()
        self.spec = spec
        conv1 = spec.conv1
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvNormAct(spec.in_chans, conv1.out_chs, conv1.kernel, conv1.stride, padding=conv1.padding, norm=None))
        self.stem.add_module("pool", max_pool())

        self.stages = nn.Sequential()
        index = 0
        for stage_index, fire_stage in enumerate(spec.stages):
            stage = nn.Sequential()
            if fire_stage.pool:
                stage.add_module("pool", max_pool())
            for block in fire_stage.fires:
                stage.add_module(f"fire{index + 2}", Fire(block) if block.bypass == "none" else BypassFire(block))
                index += 1
            self.stages.add_module(str(stage_index), stage)
        self.num_features = spec.num_features

        self.neck = nn.Identity()
        self.classifier = nn.Sequential()  # "remove FC layers": conv10 makes the class maps, GAP averages them
        self.classifier.add_module("drop", nn.Dropout(spec.drop_rate))
        self.classifier.add_module("conv10", ConvNormAct(self.num_features, spec.num_classes, 1, norm=None))
        self.classifier.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.classifier.add_module("flatten", nn.Flatten(1))
        init_squeezenet(self)


def init_squeezenet(model: SqueezeNet) -> None:
    """conv10 normal(0, 0.01), zero biases, the other convs uniform: ``spec.init`` "kaiming" is
    torchvision's U(+-sqrt(6 / fan_in)); "xavier" is the released Caffe model's ``xavier`` filler,
    U(+-sqrt(3 / fan_in)), half the variance, which keeps the bypass variants' sums from growing
    layer after layer (complex bypass: initial logits about 30x smaller)."""
    if is_meta(model):
        return
    conv10 = model.classifier.conv10.conv
    gain_a = 1.0 if getattr(model.spec, "init", "kaiming") == "xavier" else 0.0  # kaiming_uniform_'s a: gain sqrt(2 / (1 + a^2))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m is conv10:
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
            else:
                nn.init.kaiming_uniform_(m.weight, a=gain_a)
            nn.init.zeros_(m.bias)


def spec_for_shapes(spec: SqueezeNetSpec, shapes: Mapping[str, tuple[int, ...]]) -> SqueezeNetSpec:
    """``spec`` with conv1's and every fire module's widths read from the state-dict ``shapes`` (a pruned model's)."""
    conv1 = replace(spec.conv1, out_chs=shapes["stem.conv1.conv.weight"][0])
    stages, index = [], 0
    for s, stage in enumerate(spec.stages):
        fires = []
        for block in stage.fires:
            key = f"stages.{s}.fire{index + 2}."
            squeeze, in_chs = shapes[key + "squeeze.conv.weight"][:2]
            fires.append(replace(block, in_chs=in_chs, squeeze=squeeze, expand1x1=shapes[key + "expand1x1.conv.weight"][0],
                                 expand3x3=shapes[key + "expand3x3.conv.weight"][0]))  # fmt: skip
            index += 1
        stages.append(replace(stage, fires=tuple(fires)))
    return replace(spec, conv1=conv1, stages=tuple(stages))
