"""The model registry: zoo names, paper metadata, knobs and the spec each name builds.

Every family's arch module lists its names as ``ENTRIES`` (``smallnets.arch.*``); this module
collects them, refuses duplicates, and turns ``(name, knobs)`` into a spec. It builds no model:
``smallnets.zoo.create_model`` does, one layer up.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from smallnets._checks import check_finite, check_int, suggest
from smallnets.arch import densenet, dpn, efficientnet, inception, mobilenet, polynet, pyramidnet, residual_attention, resnet, shufflenet, squeezenet, vgg, xception
from smallnets.arch.spec import ArchSpec, Entry, Published

# Arguments every spec builder takes; everything else it accepts is a "knob".
COMMON_ARGS = ("num_classes", "in_chans")
ARCH_MODULES = (mobilenet, efficientnet, shufflenet, squeezenet, xception, densenet, polynet, resnet, dpn, vgg, inception, pyramidnet, residual_attention)


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
    baseline: bool = False  # a classic network (AlexNet, VGG, ResNet, ...): ``smallnets compare --baselines`` adds them
    spec_builder: Callable[..., ArchSpec] | None = field(default=None, repr=False, compare=False)  # (num_classes, in_chans, **knobs) -> spec
    num_classes: int = 1000  # the builder's default classifier width
    in_chans: int = 3

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


def _knobs_of(fn: Callable, name: str, fixed: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A builder's knobs: its keyword arguments (their defaults) less the common ones and those the entry fixes."""
    params = inspect.signature(fn).parameters
    for arg in COMMON_ARGS:
        if arg not in params:
            raise TypeError(f"builder {fn.__name__} must accept {arg!r}")
    for arg in [*fixed, *defaults]:
        if arg not in params:
            raise TypeError(f"builder {fn.__name__} has no argument {arg!r}")
    knobs = {k: p.default for k, p in params.items() if k not in COMMON_ARGS and k not in fixed and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    knobs.update(defaults)
    missing = [k for k, v in knobs.items() if v is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"knobs of {name} need defaults: {missing}")
    return knobs


def _add(info: ModelInfo) -> None:
    if info.name in _REGISTRY:
        raise ValueError(f"model name {info.name!r} is already registered")
    _REGISTRY[info.name] = info


def add_entry(entry: Entry) -> None:
    """Register an arch module's entry (a spec builder and its paper facts)."""
    params = inspect.signature(entry.spec).parameters
    _add(ModelInfo(
        name=entry.name, family=entry.family, paper=entry.paper, input_size=tuple(entry.input_size),
        knobs=MappingProxyType(_knobs_of(entry.spec, entry.name, entry.fixed, entry.defaults)), fixed=MappingProxyType(dict(entry.fixed)),
        published=tuple(entry.published), representative=entry.representative, baseline=entry.baseline, spec_builder=entry.spec,
        num_classes=params["num_classes"].default, in_chans=params["in_chans"].default,
    ))  # fmt: skip


for _module in ARCH_MODULES:
    for _entry in _module.ENTRIES:
        add_entry(_entry)
del _module, _entry


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style wildcard such as ``'mobilenet*'``."""
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model: paper, default input size, knobs and published figures."""
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


def model_spec(name: str, num_classes: int | None = None, in_chans: int | None = None, **knobs: Any) -> ArchSpec:
    """The spec a zoo name builds with these knobs: ``model_spec('mobilenet_v2', width_mult=0.5)``.

    Edit it (``spec.replace(...)``, or its ``to_dict()`` JSON) and build it with
    :func:`smallnets.build_model`. At the entry's paper resolution unless a CIFAR stem says 32 px.
    """
    info = model_info(name)
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.in_chans if in_chans is None else in_chans
    check_int("num_classes", num_classes, 1)
    check_int("in_chans", in_chans, 1)
    resolved = resolve_knobs(name, knobs)
    spec = info.spec_builder(num_classes=num_classes, in_chans=in_chans, **resolved, **info.fixed)
    if not resolved.get("cifar"):
        spec = spec.replace(resolution=info.input_size[1])
    return spec
