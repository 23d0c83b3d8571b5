"""SqueezeNet 1.0 / 1.1 and the Section 5 metaparameter builder (Iandola et al. 2016, arXiv:1602.07360)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from smallnets._checks import check_bool, check_choice, check_int, check_range
from smallnets.layers import ConvNormAct, SmallNet
from smallnets.registry import Published, register_model

PAPER = "Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size, arXiv:1602.07360"


@dataclass(frozen=True)
class FireRow:
    """Channels of one Fire module (Figure 1): squeeze 1x1 -> expand 1x1 || expand 3x3."""

    squeeze: int  # s1x1
    expand1x1: int  # e1x1
    expand3x3: int  # e3x3

    @property
    def out(self) -> int:
        return self.expand1x1 + self.expand3x3


@dataclass(frozen=True)
class Layout:
    """Where the fire modules sit: conv1, then stages of fire modules, a 3x3/s2 max-pool opening every stage but the first."""

    conv1: int  # conv1 output channels
    kernel: int  # conv1 kernel (stride 2, no padding)
    stages: tuple[int, ...]  # fire modules per stage; eight in all


# Fire channels come from the Section 5 metaparameters (`fire_table`); at the paper's defaults
# (base_e=128, incr_e=128, pct3x3=0.5, freq=2, SR=0.125) they are Table 1's:
#   fire2/3: s16 e64+64, fire4/5: s32 e128+128, fire6/7: s48 e192+192, fire8/9: s64 e256+256.
# The two released versions differ only in conv1 and in where the max-pools sit.
LAYOUTS = {
    # Table 1 / torchvision squeezenet1_0: max-pools after conv1, fire4 and fire8 ("late downsampling").
    "1_0": Layout(conv1=96, kernel=7, stages=(3, 4, 1)),  # fire2-4 at 54x54, fire5-8 at 27x27, fire9 at 13x13
    # SqueezeNet v1.1 release / torchvision squeezenet1_1: max-pools after conv1, fire3 and fire5.
    "1_1": Layout(conv1=64, kernel=3, stages=(2, 2, 4)),  # fire2-3 at 55x55, fire4-5 at 27x27, fire6-9 at 13x13
}
PAPER_METAPARAMETERS = {"base_e": 128, "incr_e": 128, "pct3x3": 0.5, "freq": 2, "squeeze_ratio": 0.125}
BYPASSES = ("none", "simple", "complex")  # Section 6 / Figure 2


def fire_table(
    num_fires: int = 8,
    *,
    base_e: int = 128,
    incr_e: int = 128,
    pct3x3: float = 0.5,
    freq: int = 2,
    squeeze_ratio: float = 0.125,
) -> tuple[FireRow, ...]:
    """Section 5 / Figure 3 metaparameters -> fire module channels.

    For fire module i (0-based): e_i = base_e + incr_e * floor(i / freq), e3x3 = floor(e_i * pct3x3),
    e1x1 = e_i - e3x3, s1x1 = floor(SR * e_i).
    """
    check_int("base_e", base_e, 1)
    check_int("incr_e", incr_e, 1)
    check_range("pct3x3", pct3x3, 0.0, 1.0, low_open=True, high_open=True)
    check_int("freq", freq, 1)
    check_range("squeeze_ratio", squeeze_ratio, 0.0, 1.0, low_open=True)
    rows = []
    for i in range(num_fires):
        e = base_e + incr_e * (i // freq)
        e3 = math.floor(e * pct3x3)
        s = math.floor(squeeze_ratio * e)
        fire = f"fire{i + 2}"
        if e3 < 1:
            raise ValueError(f"pct3x3 must leave >= 1 expand3x3 channel: {fire} gets floor({e} * {pct3x3}) = {e3}, got pct3x3={pct3x3!r}")
        if e - e3 < 1:  # unreachable for pct3x3 < 1, kept as the stated rule
            raise ValueError(f"pct3x3 must leave >= 1 expand1x1 channel: {fire} gets {e} - {e3} = {e - e3}, got pct3x3={pct3x3!r}")
        if s < 1:
            raise ValueError(
                f"squeeze_ratio must leave >= 1 squeeze channel: {fire} gets floor({squeeze_ratio} * {e}) = {s}, "
                f"got squeeze_ratio={squeeze_ratio!r}"
            )
        rows.append(FireRow(squeeze=s, expand1x1=e - e3, expand3x3=e3))
    return tuple(rows)


class Fire(nn.Module):
    """Figure 1: squeeze 1x1 - ReLU, then expand 1x1 - ReLU and expand 3x3 - ReLU side by side, concatenated.

    No BatchNorm: every conv has a bias, as in the paper and torchvision.
    """

    def __init__(self, in_chs: int, row: FireRow):
        super().__init__()
        self.squeeze = ConvNormAct(in_chs, row.squeeze, 1, norm=None)
        self.expand1x1 = ConvNormAct(row.squeeze, row.expand1x1, 1, norm=None)
        self.expand3x3 = ConvNormAct(row.squeeze, row.expand3x3, 3, norm=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat((self.expand1x1(x), self.expand3x3(x)), dim=1)


class BypassFire(Fire):
    """Figure 2: a fire module whose output is added to its input through ``bypass``.

    Simple bypass: ``nn.Identity`` (no parameters). Complex bypass: 1x1 conv with bias, no BN, no
    activation. The fire's own keys are those of a plain ``Fire``, so a no-bypass state dict loads
    into a simple-bypass model unchanged.
    """

    def __init__(self, in_chs: int, row: FireRow, bypass: nn.Module):
        super().__init__(in_chs, row)
        self.bypass = bypass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.bypass(x)


def make_fire(index: int, in_chs: int, row: FireRow, bypass: str) -> Fire:
    """Fire module ``index`` (0 = fire2) with the bypass Section 6 puts around it.

    Simple bypass goes around fire3, fire5, fire7, fire9 (odd index: their input and output widths
    match at the paper's freq=2); complex bypass adds a 1x1 conv around fire2, fire4, fire6, fire8.
    """
    identity_slot = index % 2 == 1
    if bypass == "none" or (bypass == "simple" and not identity_slot):
        return Fire(in_chs, row)
    if identity_slot:
        if in_chs != row.out:
            raise ValueError(
                f"bypass={bypass!r} puts an identity around fire{index + 2}, which needs equal input and output "
                f"channels; these metaparameters give {in_chs} -> {row.out} (e.g. freq=2, or bypass='none')"
            )
        return BypassFire(in_chs, row, nn.Identity())
    return BypassFire(in_chs, row, ConvNormAct(in_chs, row.out, 1, norm=None, act=None))


class SqueezeNet(SmallNet):
    """conv1 - max-pool, eight fire modules in three stages, then dropout - conv10 1x1 - ReLU - GAP (no FC layer).

    ``cifar``: conv1 at stride 1 with "same" padding. SqueezeNet's total stride is 16 (224 -> 13),
    not 32, so dropping one downsampling step is enough for stride 8: conv1's. The three max-pools
    stay (32 -> 16 -> 8 -> 4).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        version: str = "1_0",
        base_e: int = 128,
        incr_e: int = 128,
        pct3x3: float = 0.5,
        freq: int = 2,
        squeeze_ratio: float = 0.125,
        bypass: str = "none",
        drop_rate: float = 0.5,
        cifar: bool = False,
    ):
        super().__init__()
        check_choice("version", version, LAYOUTS)
        check_choice("bypass", bypass, BYPASSES)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        check_bool("cifar", cifar)
        layout = LAYOUTS[version]
        fires = fire_table(
            sum(layout.stages), base_e=base_e, incr_e=incr_e, pct3x3=pct3x3, freq=freq, squeeze_ratio=squeeze_ratio
        )

        def max_pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(3, stride=2, ceil_mode=True)  # ceil_mode as Caffe pools, and torchvision

        stride, padding = (1, layout.kernel // 2) if cifar else (2, 0)
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvNormAct(in_chans, layout.conv1, layout.kernel, stride, padding=padding, norm=None))
        self.stem.add_module("pool", max_pool())

        self.stages = nn.Sequential()
        in_chs, index = layout.conv1, 0
        for stage_index, num_fires in enumerate(layout.stages):
            stage = nn.Sequential()
            if stage_index > 0:
                stage.add_module("pool", max_pool())
            for _ in range(num_fires):
                stage.add_module(f"fire{index + 2}", make_fire(index, in_chs, fires[index], bypass))
                in_chs, index = fires[index].out, index + 1
            self.stages.add_module(str(stage_index), stage)
        self.num_features = in_chs

        self.neck = nn.Identity()
        self.classifier = nn.Sequential()  # "remove FC layers": conv10 makes the class maps, GAP averages them
        self.classifier.add_module("drop", nn.Dropout(drop_rate))
        self.classifier.add_module("conv10", ConvNormAct(in_chs, num_classes, 1, norm=None))
        self.classifier.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.classifier.add_module("flatten", nn.Flatten(1))
        init_squeezenet(self)


def init_squeezenet(model: SqueezeNet) -> None:
    """torchvision's SqueezeNet init: Kaiming-uniform convs, conv10 normal(0, 0.01), zero biases."""
    conv10 = model.classifier.conv10.conv
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m is conv10:
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
            else:
                nn.init.kaiming_uniform_(m.weight)
            nn.init.zeros_(m.bias)


@register_model(
    "squeezenet1_0",
    family="squeezenet",
    paper=PAPER,
    fixed={"version": "1_0", **PAPER_METAPARAMETERS},
    published=(
        Published(top1=57.5, params=1_248_424, source="SqueezeNet paper Table 2 (params: Table 1 total)"),
        Published(top1=60.4, knobs={"bypass": "simple"}, source="SqueezeNet paper Table 3"),
        Published(top1=58.8, knobs={"bypass": "complex"}, source="SqueezeNet paper Table 3"),
    ),
    representative=True,
)
@register_model(
    "squeezenet1_1",
    family="squeezenet",
    paper=PAPER,
    fixed={"version": "1_1", **PAPER_METAPARAMETERS},
    # v1.1 release notes: 2.4x less computation than 1.0, same accuracy.
    published=(Published(top1=58.178, source="torchvision model card"),),
)
@register_model("squeezenet", family="squeezenet", paper=PAPER, fixed={"version": "1_0"})
def squeezenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    version: str = "1_0",
    base_e: int = 128,
    incr_e: int = 128,
    pct3x3: float = 0.5,
    freq: int = 2,
    squeeze_ratio: float = 0.125,
    bypass: str = "none",
    drop_rate: float = 0.5,
    cifar: bool = False,
) -> SqueezeNet:
    """SqueezeNet: ``squeezenet1_0`` / ``squeezenet1_1`` are the released networks (torchvision's, layer
    for layer); ``squeezenet`` is the 1.0 layout with the Section 5 metaparameters as knobs (its
    defaults are squeezenet1_0). ``bypass``: "none", "simple" or "complex" (Section 6)."""
    return SqueezeNet(
        num_classes,
        in_chans,
        version=version,
        base_e=base_e,
        incr_e=incr_e,
        pct3x3=pct3x3,
        freq=freq,
        squeeze_ratio=squeeze_ratio,
        bypass=bypass,
        drop_rate=drop_rate,
        cifar=cifar,
    )
