"""Architectures as values: frozen specs with every channel count explicit, and their JSON form.

A spec is what a model *is*: the stem, every block with its channels and stride, the head, the
activation and norm settings, the classifier width. ``create_model(name, **knobs)`` is the
registered spec builder called with the knobs; a pruned model is a spec whose widths differ block
by block, which no knob describes. Specs hold plain numbers and strings only (no torch modules),
so they serialise to JSON, compare by value and can be hand-edited.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from smallnets._checks import check_positive

# spec class name -> class: filled by ArchSpec.__init_subclass__, read by ArchSpec.from_dict
SPEC_TYPES: dict[str, type[ArchSpec]] = {}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping below ``round_limit`` of it.

    This is the TensorFlow reference rule used by MobileNetV1/V2 and EfficientNet for width
    multipliers: e.g. ``make_divisible(32 * 0.35) == 16`` and ``make_divisible(1280 * 1.4) == 1792``.
    """
    check_positive("divisor", divisor)
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:  # rounding down must not lose more than 10%
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth_mult: float) -> int:
    """Blocks in a stage after depth scaling: ceil(depth_mult * repeats), as EfficientNet does."""
    check_positive("depth_mult", depth_mult)
    return int(math.ceil(depth_mult * repeats))


def check_channels(where: str, **channels: int) -> None:
    for name, value in channels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {name} must be an integer >= 1, got {value!r}")


def check_stage_chain(where: str, in_chs: int, stages: Any, kinds: tuple[type, ...]) -> None:
    """``stages``: a non-empty tuple of non-empty tuples of ``kinds`` blocks, each taking the channels the one
    before it gives (the stem's ``in_chs`` for the first): what every staged spec checks of its table."""
    if not isinstance(stages, tuple) or not stages or not all(isinstance(s, tuple) and s for s in stages):
        raise ValueError(f"{where}: stages must be a non-empty list of non-empty stages, got {stages!r:.80}")
    names = " or ".join(k.__name__ for k in kinds)
    chs = in_chs
    for i, stage in enumerate(stages):
        for j, block in enumerate(stage):
            if not isinstance(block, kinds):
                raise ValueError(f"{where}: stages[{i}][{j}] must be a {names}, got {block!r:.80}")
            if block.in_chs != chs:
                raise ValueError(f"{where}: stages[{i}][{j}].in_chs must be the previous layer's {chs} channels, got {block.in_chs}")
            chs = block.out_chs


def check_stride(where: str, stride: int) -> None:
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"{where}: stride must be 1 or 2, got {stride!r}")


@dataclass(frozen=True)
class Published:
    """One published result: accuracy (and the paper's own cost figures) for a configuration.

    ``knobs`` and ``input_size`` say which configuration it is (empty knobs = the registered
    defaults, ``input_size=None`` = the entry's default input).
    """

    top1: float | None  # top-1 accuracy in percent on ``dataset`` (single crop)
    source: str  # where the figure comes from, e.g. "MobileNetV1 paper Table 6"
    knobs: Mapping[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] | None = None
    dataset: str = "imagenet"
    params: float | None = None  # as printed in the source, when it prints one
    macs: float | None = None


@dataclass(frozen=True)
class Entry:
    """A zoo name: the spec builder it calls and the paper facts about it (the registry collects these)."""

    name: str
    family: str
    paper: str  # authors, year, title, arXiv id
    spec: typing.Callable[..., ArchSpec] = field(repr=False, compare=False)  # (num_classes, in_chans, **knobs) -> spec
    input_size: tuple[int, int, int] = (3, 224, 224)  # the paper's evaluation input (C, H, W)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # builder arguments that define the entry
    defaults: Mapping[str, Any] = field(default_factory=dict)  # knob defaults this entry changes
    published: tuple[Published, ...] = ()
    representative: bool = False  # shown by ``smallnets compare`` when no names are given
    baseline: bool = False  # a classic network the efficient ones are measured against: ``compare --baselines``


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """Base of every family's spec: the classifier width and input channels, and the JSON form.

    Subclasses are frozen dataclasses whose fields are ints, floats, strings, bools, None, or
    (tuples of) other frozen dataclasses; ``to_dict`` / ``from_dict`` round-trip them exactly.
    """

    family: ClassVar[str] = ""
    num_classes: int = 1000
    in_chans: int = 3
    resolution: int = 224  # input side it is designed and evaluated at (any side above its minimum runs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return  # a shared base, never serialised
        if cls.__name__ in SPEC_TYPES:
            raise TypeError(f"spec class name {cls.__name__!r} is already registered")
        SPEC_TYPES[cls.__name__] = cls

    def __post_init__(self) -> None:
        check_channels(type(self).__name__, num_classes=self.num_classes, in_chans=self.in_chans, resolution=self.resolution)

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with ``changes`` (validated again); the spec itself never changes."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"type": "MobileNetV2Spec", ...every field...}``."""
        return {"type": type(self).__name__, **_encode(self)}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ArchSpec:
        """The spec a ``to_dict`` result (or hand-written JSON) describes; unknown keys and types are refused."""
        if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
            raise ValueError(f"spec must be a mapping with a 'type' (a spec class name), got {data!r:.120}")
        cls = SPEC_TYPES.get(data["type"])
        if cls is None:
            raise ValueError(f"spec type must be one of {', '.join(sorted(SPEC_TYPES))}; got {data['type']!r}")
        return _decode(cls, {k: v for k, v in data.items() if k != "type"}, data["type"])


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if isinstance(value, Mapping):  # a union of blocks: the one whose fields the keys name
            fitting = [a for a in options if dataclasses.is_dataclass(a) and set(value) <= {f.name for f in dataclasses.fields(a)}]
            if len(fitting) == 1:
                return _decode(fitting[0], value, where)
        errors = []
        for arg in options:
            try:
                return _decode(arg, value, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r:.200} fits none of {tp} ({'; '.join(errors)})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r:.80}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where} must have {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping of {tp.__name__}'s fields, got {value!r:.80}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r} for {tp.__name__} (fields: {', '.join(names)})")
        return tp(**{k: _decode(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ValueError(f"{where} must be {tp.__name__}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{where} must be null, got {value!r}")
        return None
    raise TypeError(f"{where}: spec fields of type {tp!r} are not supported")
