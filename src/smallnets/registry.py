"""The model registry: names, paper metadata, knob validation and ``create_model``."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from smallnets._checks import check_finite, check_int, suggest

# Arguments every builder takes; everything else a builder accepts is a "knob".
COMMON_ARGS = ("num_classes", "in_chans")


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
class ModelInfo:
    name: str
    family: str
    paper: str  # authors, year, title, arXiv id
    input_size: tuple[int, int, int]  # default (C, H, W) the paper evaluates at
    knobs: Mapping[str, Any]  # every accepted knob with its default for this entry
    fixed: Mapping[str, Any]  # builder arguments this entry pins (its identity, e.g. growth rate)
    published: tuple[Published, ...]
    representative: bool  # shown by ``smallnets compare`` when no names are given
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)

    def published_for(self, knobs: Mapping[str, Any] | None = None, input_size=None) -> Published | None:
        """The published result for a configuration of this entry, if a paper reports one."""
        knobs = {k: v for k, v in (knobs or {}).items() if self.knobs.get(k, object()) != v}
        size = tuple(input_size) if input_size is not None else self.input_size
        for pub in self.published:
            pub_size = pub.input_size or self.input_size
            if dict(pub.knobs) == knobs and tuple(pub_size) == size:
                return pub
        return None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    paper: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    published: tuple[Published, ...] = (),
    representative: bool = False,
):
    """Register a builder ``fn(num_classes, in_chans, **knobs) -> nn.Module`` under ``name``.

    One builder can be registered under several names (stack the decorators): ``fixed`` pins
    arguments that define the entry and cannot be passed by users, ``defaults`` changes knob
    defaults that users may still override.
    """
    fixed = dict(fixed or {})
    defaults = dict(defaults or {})

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        entry_name = name or fn.__name__
        if entry_name in _REGISTRY:
            raise ValueError(f"model name {entry_name!r} is already registered")
        params = inspect.signature(fn).parameters
        for arg in COMMON_ARGS:
            if arg not in params:
                raise TypeError(f"builder {fn.__name__} must accept {arg!r}")
        knobs = {
            k: p.default
            for k, p in params.items()
            if k not in COMMON_ARGS and k not in fixed and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        for arg in [*fixed, *defaults]:
            if arg not in params:
                raise TypeError(f"builder {fn.__name__} has no argument {arg!r}")
        knobs.update(defaults)
        missing = [k for k, v in knobs.items() if v is inspect.Parameter.empty]
        if missing:
            raise TypeError(f"knobs of {entry_name} need defaults: {missing}")
        _REGISTRY[entry_name] = ModelInfo(
            name=entry_name,
            family=family,
            paper=paper,
            input_size=tuple(input_size),
            knobs=MappingProxyType(knobs),
            fixed=MappingProxyType(fixed),
            published=tuple(published),
            representative=representative,
            builder=fn,
        )
        return fn

    return decorate


def _ensure_loaded() -> None:
    import smallnets.models  # noqa: F401  (registers the zoo)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style wildcard such as ``'mobilenet*'``."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model: paper, default input size, knobs and published figures."""
    _ensure_loaded()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"model name must be a registered model (see smallnets.list_models()), got {name!r}{suggest(name, _REGISTRY)}")
    return _REGISTRY[name]


def resolve_knobs(name: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Every knob of ``name`` with user values applied; unknown knobs are a ValueError."""
    info = model_info(name)
    for key in knobs:
        if key not in info.knobs:
            if key in info.fixed:
                others = [n for n, e in _REGISTRY.items() if e.family == info.family and key in e.knobs]
                hint = f"; {' and '.join(others)} take{'s' if len(others) == 1 else ''} it as a knob" if others else ""
                raise ValueError(f"{name} fixes {key}={info.fixed[key]!r} (it defines the entry){hint}")
            accepted = ", ".join(info.knobs) or "none"
            raise ValueError(f"unknown knob {key!r} for {name}{suggest(key, info.knobs)} (accepted knobs: {accepted})")
    for key, value in knobs.items():
        check_finite(key, value)
    return {**info.knobs, **knobs}


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None, *, pretrained: Any = None, **knobs: Any) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model('mobilenet_v1', width_mult=0.5)``.

    ``num_classes`` and ``in_chans`` default to the entry's own (1000 ImageNet classes and RGB,
    or 10 classes for the CIFAR designs).

    ``pretrained``: a torchvision / timm checkpoint (file, https URL, ``FORMAT=PATH``) or smallnets'
    own weights (a run directory, a ``.safetensors`` with its sidecar), loaded with
    :func:`smallnets.load_pretrained`; ``num_classes`` then defaults to the checkpoint's, and a
    different number gets a new classifier.

    The returned module records how it was built in ``model.smallnets_config``
    (name, num_classes, in_chans and every knob), so it can be saved and rebuilt.
    """
    if pretrained is not None:
        if in_chans not in (None, 3):
            raise ValueError(f"in_chans must be 3 with pretrained weights (they were trained on RGB), got {in_chans!r}")
        from smallnets.pretrained import load_pretrained

        return load_pretrained(name, pretrained, num_classes=num_classes, **knobs)
    info = model_info(name)
    params = inspect.signature(info.builder).parameters
    num_classes = params["num_classes"].default if num_classes is None else num_classes
    in_chans = params["in_chans"].default if in_chans is None else in_chans
    check_int("num_classes", num_classes, 1)
    check_int("in_chans", in_chans, 1)
    resolved = resolve_knobs(name, knobs)
    model = info.builder(num_classes=num_classes, in_chans=in_chans, **resolved, **info.fixed)
    model.smallnets_config = {"name": name, "num_classes": num_classes, "in_chans": in_chans, "knobs": resolved}
    return model
