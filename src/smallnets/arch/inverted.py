"""Specs of the MobileNetV1 / V2 / EfficientNet line: the stage table, its blocks with explicit
channels, and width / depth / CIFAR-stem transforms from spec to spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from smallnets._checks import check_bool, check_choice, check_positive, check_range
from smallnets.arch.spec import ArchSpec, check_channels, check_stride, make_divisible, round_repeats

ACTIVATIONS = ("relu", "relu6", "silu")


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One row of a MobileNet / EfficientNet table: ``repeats`` blocks, the first with ``stride``."""

    out: int  # output channels (at width 1.0)
    repeats: int  # blocks in the stage (at depth 1.0)
    stride: int  # stride of the first block; the others are stride 1
    expand: int = 1  # hidden channels = expand * input channels (inverted bottlenecks)
    kernel: int = 3  # depthwise kernel size


@dataclass(frozen=True, kw_only=True)
class Conv:
    """A conv-norm-act layer (a stem or a neck): ``out_chs`` channels, ``kernel`` x ``kernel``, ``stride``."""

    out_chs: int
    kernel: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        check_channels("Conv", out_chs=self.out_chs, kernel=self.kernel)
        check_stride("Conv", self.stride)


@dataclass(frozen=True, kw_only=True)
class Separable:
    """MobileNetV1's depthwise-separable layer (or, ``separable=False``, one full 3x3 conv)."""

    in_chs: int
    out_chs: int
    stride: int = 1
    separable: bool = True

    def __post_init__(self) -> None:
        check_channels("Separable", in_chs=self.in_chs, out_chs=self.out_chs)
        check_stride("Separable", self.stride)
        check_bool("separable", self.separable)


@dataclass(frozen=True, kw_only=True)
class Inverted:
    """An inverted bottleneck: [expand 1x1 to ``hidden_chs``] -> depthwise ``kernel`` -> [SE to ``se_chs``] -> linear 1x1.

    ``expand=False`` (MobileNetV2's first block, t = 1) has no expansion conv: ``hidden_chs`` is
    then ``in_chs``. ``shortcut`` adds the identity (stride 1, same channels only).
    """

    in_chs: int
    hidden_chs: int
    out_chs: int
    stride: int = 1
    kernel: int = 3
    expand: bool = True
    se_chs: int = 0  # 0: no squeeze-and-excitation
    shortcut: bool = False

    def __post_init__(self) -> None:
        where = f"Inverted(in_chs={self.in_chs}, out_chs={self.out_chs})"
        check_channels(where, in_chs=self.in_chs, hidden_chs=self.hidden_chs, out_chs=self.out_chs, kernel=self.kernel)
        check_stride(where, self.stride)
        if not isinstance(self.se_chs, int) or isinstance(self.se_chs, bool) or self.se_chs < 0:
            raise ValueError(f"{where}: se_chs must be an integer >= 0, got {self.se_chs!r}")
        if not self.expand and self.hidden_chs != self.in_chs:
            raise ValueError(f"{where}: hidden_chs must equal in_chs without an expansion conv (expand=False), got {self.hidden_chs}")
        if self.shortcut and (self.stride != 1 or self.in_chs != self.out_chs):
            raise ValueError(f"{where}: a shortcut needs stride 1 and in_chs == out_chs, got stride {self.stride}")


Block = Separable | Inverted


def _rewire(block: Block, **changes) -> Block:
    """``replace`` for a block whose channels or stride change: an inverted block gets the papers'
    shortcut rule again (identity exactly when stride 1 and channels are kept)."""
    block = replace(block, **changes, **({"shortcut": False} if isinstance(block, Inverted) else {}))
    if isinstance(block, Inverted) and block.stride == 1 and block.in_chs == block.out_chs:
        block = replace(block, shortcut=True)
    return block


def table_blocks(table: Sequence[Stage], in_chs: int, *, se_ratio: float = 0.0) -> tuple[tuple[Inverted, ...], ...]:
    """The table as explicit inverted blocks: the first of a stage takes its stride and channel
    change, the rest are stride 1 with the shortcut; hidden = ``round(in * expand)``, SE width
    ``max(1, int(in * se_ratio))`` (of the block's *input* channels, as EfficientNet)."""
    stages = []
    for row in table:
        blocks = []
        for i in range(row.repeats):
            stride = row.stride if i == 0 else 1
            block = Inverted(in_chs=in_chs, hidden_chs=int(round(in_chs * row.expand)), out_chs=row.out, stride=stride,
                             kernel=row.kernel, expand=row.expand != 1, se_chs=max(1, int(in_chs * se_ratio)) if se_ratio else 0)  # fmt: skip
            blocks.append(_rewire(block))
            in_chs = row.out
        stages.append(tuple(blocks))
    return tuple(stages)


def separable_blocks(table: Sequence[Stage], in_chs: int, *, separable: bool = True) -> tuple[tuple[Separable, ...], ...]:
    stages = []
    for row in table:
        blocks = []
        for i in range(row.repeats):
            blocks.append(Separable(in_chs=in_chs, out_chs=row.out, stride=row.stride if i == 0 else 1, separable=separable))
            in_chs = row.out
        stages.append(tuple(blocks))
    return tuple(stages)


@dataclass(frozen=True, kw_only=True)
class _ConvNetSpec(ArchSpec):
    """What MobileNetV1 / V2 and EfficientNet specs share: a stem conv, stages of blocks, an optional
    1x1 neck conv, dropout before the classifier, activation and BatchNorm settings."""

    stem: Conv
    stages: tuple[tuple[Block, ...], ...]
    neck_chs: int | None = None  # a 1x1 conv-norm-act before pooling; None: none
    act: str = "relu6"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # PyTorch's convention (1 - TensorFlow's decay)
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth on shortcut blocks, linear in block index

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_choice("act", self.act, ACTIVATIONS)
        check_positive("bn_eps", self.bn_eps)
        check_range("bn_momentum", self.bn_momentum, 0.0, 1.0, low_open=True)
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_range("drop_path_rate", self.drop_path_rate, 0.0, 1.0, high_open=True)
        if self.neck_chs is not None:
            check_channels(name, neck_chs=self.neck_chs)
        if not self.stages or not all(self.stages):
            raise ValueError(f"{name}: stages must be a non-empty list of non-empty stages, got {self.stages!r:.80}")
        chs = self.stem.out_chs
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                if block.in_chs != chs:
                    raise ValueError(f"{name}: stages[{i}][{j}].in_chs must be the previous layer's {chs} channels, got {block.in_chs}")
                chs = block.out_chs

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def stages_chs(self) -> int:
        return self.stages[-1][-1].out_chs

    @property
    def num_features(self) -> int:
        return self.neck_chs if self.neck_chs is not None else self.stages_chs


def check_common_knobs(*, width_mult: float, depth_mult: float, drop_rate: float, cifar: bool, drop_path_rate: float = 0.0) -> None:
    """The knobs MobileNetV1/V2 and EfficientNet share, checked before any spec is derived from them."""
    check_positive("width_mult", width_mult)
    check_positive("depth_mult", depth_mult)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)


def with_channels(stages: Iterable[Iterable[Block]], stem_chs: int) -> tuple[tuple[Block, ...], ...]:
    """Blocks with ``in_chs`` carried forward from ``stem_chs`` and each previous block's output."""
    out, chs = [], stem_chs
    for stage in stages:
        blocks = []
        for b in stage:
            b = _rewire(b, in_chs=chs, hidden_chs=chs) if isinstance(b, Inverted) and not b.expand else _rewire(b, in_chs=chs)
            blocks.append(b)
            chs = b.out_chs
        out.append(tuple(blocks))
    return tuple(out)


def scale_width(spec: _ConvNetSpec, width_mult: float, *, stem: bool = True, neck: str = "scale") -> _ConvNetSpec:
    """Every channel count times ``width_mult``, rounded with ``make_divisible(c * width_mult, 8)``
    (the rule of all three papers); hidden and SE widths keep their ratio to the block's input.

    ``stem=False`` keeps the stem's width; ``neck`` is ``"scale"``, ``"grow"`` (MobileNetV2: the last
    conv only grows, ``max(1, width_mult)``), ``"keep"``, or ``"expand4"`` (EfficientNet: 4x the last block).
    """
    check_positive("width_mult", width_mult)
    stem_chs = make_divisible(spec.stem.out_chs * width_mult, 8) if stem else spec.stem.out_chs
    stages, chs = [], stem_chs
    for stage in spec.stages:
        blocks = []
        for b in stage:
            out = make_divisible(b.out_chs * width_mult, 8)
            if isinstance(b, Inverted):
                hidden = int(round(chs * b.hidden_chs / b.in_chs)) if b.expand else chs
                se = max(1, int(chs * b.se_chs / b.in_chs)) if b.se_chs else 0
                b = _rewire(b, in_chs=chs, hidden_chs=hidden, out_chs=out, se_chs=se)
            else:
                b = _rewire(b, in_chs=chs, out_chs=out)
            blocks.append(b)
            chs = out
        stages.append(tuple(blocks))
    neck_chs = spec.neck_chs
    if neck_chs is not None:
        check_choice("neck", neck, ("scale", "grow", "keep", "expand4"))
        if neck == "scale":
            neck_chs = make_divisible(neck_chs * width_mult, 8)
        elif neck == "grow":
            neck_chs = make_divisible(neck_chs * max(1.0, width_mult), 8)
        elif neck == "expand4":
            neck_chs = 4 * chs
    return dataclasses.replace(spec, stem=replace(spec.stem, out_chs=stem_chs), stages=tuple(stages), neck_chs=neck_chs)


def scale_depth(spec: _ConvNetSpec, depth_mult: float, *, stages: Iterable[int] | None = None) -> _ConvNetSpec:
    """Each stage's blocks ``ceil(n * depth_mult)`` (EfficientNet's rule): the stage keeps its first
    block (stride, channel change) and its later blocks are copies of the stride-1 one; a stage of
    one block grows with copies of it at stride 1 with the shortcut. ``stages`` limits it to those indices."""
    check_positive("depth_mult", depth_mult)
    chosen = set(range(len(spec.stages)) if stages is None else stages)
    out = []
    for i, stage in enumerate(spec.stages):
        n = round_repeats(len(stage), depth_mult) if i in chosen else len(stage)
        first, rest = stage[0], list(stage[1:n])
        repeat = stage[-1] if len(stage) > 1 else _repeat_of(first)
        rest += [repeat] * (n - 1 - len(rest))
        out.append((first, *rest))
    return dataclasses.replace(spec, stages=tuple(out))


def _repeat_of(block: Block) -> Block:
    if isinstance(block, Inverted):
        hidden = int(round(block.out_chs * block.hidden_chs / block.in_chs)) if block.expand else block.out_chs
        se = max(1, int(block.out_chs * block.se_chs / block.in_chs)) if block.se_chs else 0
        return _rewire(block, in_chs=block.out_chs, hidden_chs=hidden, stride=1, se_chs=se)
    return _rewire(block, in_chs=block.out_chs, stride=1)


def cifar_stem(spec: _ConvNetSpec) -> _ConvNetSpec:
    """The small-input variant: a stride-1 stem and the first stride-2 stage at stride 1 (total stride 8:
    a 32x32 image ends as a 4x4 map)."""
    stages = [list(s) for s in spec.stages]
    for stage in stages:
        if stage[0].stride == 2:
            stage[0] = _rewire(stage[0], stride=1)
            break
    return dataclasses.replace(spec, stem=replace(spec.stem, stride=1), stages=tuple(tuple(s) for s in stages), resolution=32)
