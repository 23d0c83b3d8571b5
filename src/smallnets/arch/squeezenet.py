"""SqueezeNet 1.0 / 1.1 and the Section 5 metaparameters (Iandola et al. 2016, arXiv:1602.07360) as
specs: the layouts, the fire modules with explicit channels and bypasses, the knobs, and the
published figures."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from smallnets._checks import check_bool, check_choice, check_int, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels

PAPER = "Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size, arXiv:1602.07360"


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One row of a SqueezeNet layout: ``repeats`` fire modules, opened by a 3x3/s2 max-pool when ``pool``."""

    repeats: int  # fire modules in the stage
    pool: bool  # a 3x3 / stride 2 ceil-mode max-pool before the stage's first fire module


@dataclass(frozen=True, kw_only=True)
class Conv1:
    """SqueezeNet's first layer: conv ``kernel`` x ``kernel`` at ``stride`` with ``padding``, bias, ReLU (no BN);
    the stem's 3x3/s2 max-pool follows it."""

    out_chs: int
    kernel: int
    stride: int = 2
    padding: int = 0  # the released networks pad nothing (224 -> 109 for 1.0's 7x7, 111 for 1.1's 3x3)

    def __post_init__(self) -> None:
        check_channels("Conv1", out_chs=self.out_chs, kernel=self.kernel, stride=self.stride)
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or self.padding < 0:
            raise ValueError(f"Conv1: padding must be an integer >= 0, got {self.padding!r}")


# The two released versions differ only in conv1 and in where the max-pools sit; both use Table 1's
# fire modules (the Section 5 metaparameters at their defaults, `fire_table`).
# SqueezeNet 1.0 (Table 1 / torchvision squeezenet1_0): max-pools after conv1, fire4 and fire8 ("late downsampling").
V1_0_CONV1 = Conv1(out_chs=96, kernel=7)  # 224 -> 109, then the stem's max-pool -> 54
V1_0_TABLE = (
    Stage(repeats=3, pool=False),  # 54 -> 54: fire2-4
    Stage(repeats=4, pool=True),  # 54 -> 27: fire5-8
    Stage(repeats=1, pool=True),  # 27 -> 13: fire9
)
# SqueezeNet v1.1 release / torchvision squeezenet1_1: max-pools after conv1, fire3 and fire5.
V1_1_CONV1 = Conv1(out_chs=64, kernel=3)  # 224 -> 111, then the stem's max-pool -> 55
V1_1_TABLE = (
    Stage(repeats=2, pool=False),  # 55 -> 55: fire2-3
    Stage(repeats=2, pool=True),  # 55 -> 27: fire4-5
    Stage(repeats=4, pool=True),  # 27 -> 13: fire6-9
)
LAYOUTS = {"1_0": (V1_0_CONV1, V1_0_TABLE), "1_1": (V1_1_CONV1, V1_1_TABLE)}
PAPER_METAPARAMETERS = {"base_e": 128, "incr_e": 128, "pct3x3": 0.5, "freq": 2, "squeeze_ratio": 0.125}
BYPASSES = ("none", "simple", "complex")  # the knob: Section 6 / Figure 2, placed on the paper's fire modules
FIRE_BYPASSES = ("none", "identity", "conv")  # one fire module's bypass: none, identity (simple), 1x1 conv (complex)


@dataclass(frozen=True)
class FireRow:
    """Channels of one Fire module (Figure 1): squeeze 1x1 -> expand 1x1 || expand 3x3."""

    squeeze: int  # s1x1
    expand1x1: int  # e1x1
    expand3x3: int  # e3x3

    @property
    def out(self) -> int:
        return self.expand1x1 + self.expand3x3


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
    e1x1 = e_i - e3x3, s1x1 = floor(SR * e_i). At the defaults these are Table 1's:
    fire2/3: s16 e64+64, fire4/5: s32 e128+128, fire6/7: s48 e192+192, fire8/9: s64 e256+256.
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


@dataclass(frozen=True, kw_only=True)
class FireBlock:
    """One fire module with its explicit widths: squeeze 1x1 (``in_chs`` -> ``squeeze``), then expand
    1x1 and expand 3x3 side by side, concatenated to ``expand1x1 + expand3x3`` channels.

    ``bypass`` (Section 6): ``"none"``; ``"identity"`` (simple bypass: needs ``in_chs == out_chs``);
    ``"conv"`` (complex bypass: a 1x1 conv with bias, ``in_chs -> out_chs``).
    """

    in_chs: int
    squeeze: int
    expand1x1: int
    expand3x3: int
    bypass: str = "none"

    def __post_init__(self) -> None:
        where = f"FireBlock(in_chs={self.in_chs!r}, squeeze={self.squeeze!r}, expand1x1={self.expand1x1!r}, expand3x3={self.expand3x3!r})"
        check_channels(where, in_chs=self.in_chs, squeeze=self.squeeze, expand1x1=self.expand1x1, expand3x3=self.expand3x3)
        check_choice("bypass", self.bypass, FIRE_BYPASSES)
        if self.bypass == "identity" and self.in_chs != self.out_chs:
            raise ValueError(
                f"{where}: bypass 'identity' needs in_chs == out_chs (expand1x1 + expand3x3), got {self.in_chs} -> {self.out_chs}; "
                f"use bypass 'conv' or 'none'"
            )

    @property
    def out_chs(self) -> int:
        return self.expand1x1 + self.expand3x3


@dataclass(frozen=True, kw_only=True)
class FireStage:
    """A stage: an optional 3x3/s2 ceil-mode max-pool (``pool``), then its fire modules in order."""

    pool: bool
    fires: tuple[FireBlock, ...]

    def __post_init__(self) -> None:
        check_bool("pool", self.pool)
        if not self.fires:
            raise ValueError("FireStage: fires must be a non-empty list of fire modules, got []")


@dataclass(frozen=True, kw_only=True)
class SqueezeNetSpec(ArchSpec):
    """conv1 - max-pool, stages of fire modules (max-pools where ``FireStage.pool``), then dropout -
    conv10 1x1 - ReLU - GAP (no FC layer). Every conv has a bias and a ReLU, no BatchNorm.

    Fire modules are named fire2, fire3, ... in order over all stages (the paper's numbering).
    """

    family = "squeezenet"
    conv1: Conv1
    stages: tuple[FireStage, ...]
    drop_rate: float = 0.5  # dropout before conv10
    init: str = "kaiming"  # the convs' initialisation: "kaiming" (torchvision's) or "xavier" (the released Caffe model's)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_choice("init", self.init, INITS)
        if not self.stages:
            raise ValueError(f"{name}: stages must be a non-empty list of stages, got {self.stages!r:.80}")
        chs, index = self.conv1.out_chs, 0
        for i, stage in enumerate(self.stages):
            for j, fire in enumerate(stage.fires):
                if fire.in_chs != chs:
                    raise ValueError(
                        f"{name}: stages[{i}].fires[{j}] (fire{index + 2}).in_chs must be the previous layer's {chs} channels, got {fire.in_chs}"
                    )
                chs, index = fire.out_chs, index + 1

    @property
    def fires(self) -> tuple[FireBlock, ...]:
        return tuple(f for stage in self.stages for f in stage.fires)

    @property
    def num_features(self) -> int:
        return self.stages[-1].fires[-1].out_chs


def fire_stages(table: Sequence[Stage], rows: Sequence[FireRow], in_chs: int, bypass: str = "none") -> tuple[FireStage, ...]:
    """The layout filled with fire modules ``rows`` (in order), each fed by the previous one's output.

    ``bypass`` is the Section 6 knob: "simple" puts an identity around fire3, fire5, fire7, fire9
    (odd index: their input and output widths match at the paper's freq=2); "complex" adds a 1x1
    conv around fire2, fire4, fire6, fire8 as well.
    """
    check_choice("bypass", bypass, BYPASSES)
    stages, index = [], 0
    for row in table:
        fires = []
        for _ in range(row.repeats):
            fire = rows[index]
            identity_slot = index % 2 == 1
            if bypass == "none" or (bypass == "simple" and not identity_slot):
                kind = "none"
            elif identity_slot:
                if in_chs != fire.out:
                    raise ValueError(
                        f"bypass={bypass!r} puts an identity around fire{index + 2}, which needs equal input and output "
                        f"channels; these metaparameters give {in_chs} -> {fire.out} (e.g. freq=2, or bypass='none')"
                    )
                kind = "identity"
            else:
                kind = "conv"
            fires.append(FireBlock(in_chs=in_chs, squeeze=fire.squeeze, expand1x1=fire.expand1x1, expand3x3=fire.expand3x3, bypass=kind))
            in_chs, index = fire.out, index + 1
        stages.append(FireStage(pool=row.pool, fires=tuple(fires)))
    return tuple(stages)


def cifar_stem(spec: SqueezeNetSpec) -> SqueezeNetSpec:
    """The small-input variant: conv1 at stride 1 with "same" padding (``kernel // 2``). SqueezeNet's
    total stride is 16 (224 -> 13), not 32, so dropping conv1's downsampling is enough for stride 8;
    the max-pools stay (32 -> 16 -> 8 -> 4)."""
    conv1 = dataclasses.replace(spec.conv1, stride=1, padding=spec.conv1.kernel // 2)
    return dataclasses.replace(spec, conv1=conv1, resolution=32)


INITS = ("kaiming", "xavier")


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
    init: str = "kaiming",
) -> SqueezeNetSpec:
    """SqueezeNet: ``squeezenet1_0`` / ``squeezenet1_1`` are the released networks (torchvision's, layer
    for layer); ``squeezenet`` is the 1.0 layout with the Section 5 metaparameters as knobs (its
    defaults are squeezenet1_0). ``bypass``: "none", "simple" or "complex" (Section 6). ``cifar``:
    conv1 at stride 1 with "same" padding (total stride 8). ``init``: "kaiming" (torchvision's) or
    "xavier" (the released Caffe model's filler, half the variance: the bypass variants start with
    sane logits; it changes no layer, only the starting weights)."""
    check_choice("version", version, LAYOUTS)
    check_choice("bypass", bypass, BYPASSES)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    check_choice("init", init, INITS)
    conv1, table = LAYOUTS[version]
    rows = fire_table(sum(s.repeats for s in table), base_e=base_e, incr_e=incr_e, pct3x3=pct3x3, freq=freq, squeeze_ratio=squeeze_ratio)
    spec = SqueezeNetSpec(num_classes=num_classes, in_chans=in_chans, conv1=conv1,
                          stages=fire_stages(table, rows, conv1.out_chs, bypass), drop_rate=drop_rate, init=init)  # fmt: skip
    return cifar_stem(spec) if cifar else spec


ENTRIES = (
    Entry(name="squeezenet", family="squeezenet", paper=PAPER, spec=squeezenet, fixed={"version": "1_0"}),
    Entry(
        name="squeezenet1_1",
        family="squeezenet",
        paper=PAPER,
        spec=squeezenet,
        fixed={"version": "1_1", **PAPER_METAPARAMETERS},
        # v1.1 release notes: 2.4x less computation than 1.0, same accuracy.
        published=(Published(top1=58.178, source="torchvision model card"),),
    ),
    Entry(
        name="squeezenet1_0",
        family="squeezenet",
        paper=PAPER,
        spec=squeezenet,
        fixed={"version": "1_0", **PAPER_METAPARAMETERS},
        published=(
            Published(top1=57.5, params=1_248_424, source="SqueezeNet paper Table 2 (params: Table 1 total)"),
            Published(top1=60.4, knobs={"bypass": "simple"}, source="SqueezeNet paper Table 3"),
            Published(top1=58.8, knobs={"bypass": "complex"}, source="SqueezeNet paper Table 3"),
        ),
        representative=True,
    ),
)

__all__ = ["Conv1", "FireBlock", "FireRow", "FireStage", "SqueezeNetSpec", "Stage", "V1_0_TABLE", "V1_1_TABLE", "fire_table", "squeezenet"]
