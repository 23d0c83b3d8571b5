"""Creating zoo models: a name and knobs become a spec (registry), a spec becomes a module (models),
and pretrained weights are loaded onto it. The one module that stands above both."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from smallnets._checks import check_int
from smallnets.arch.spec import ArchSpec
from smallnets.models import build_model
from smallnets.registry import model_info, model_spec, resolve_knobs


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None, *, pretrained: Any = None, **knobs: Any) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model('mobilenet_v1', width_mult=0.5)``.

    ``num_classes`` and ``in_chans`` default to the entry's own (1000 ImageNet classes and RGB,
    or 10 classes for the CIFAR designs).

    ``pretrained``: a torchvision / timm checkpoint (file, https URL, ``FORMAT=PATH``) or smallnets'
    own weights (a run directory, a ``.safetensors`` with its sidecar), loaded with
    :func:`smallnets.load_pretrained`; ``num_classes`` then defaults to the checkpoint's, and a
    different number gets a new classifier.

    The returned module records how it was built: ``model.spec`` (the architecture, every width
    explicit) and ``model.smallnets_config`` (name, num_classes, in_chans and every knob).
    """
    if pretrained is not None:
        if in_chans not in (None, 3):
            raise ValueError(f"in_chans must be 3 with pretrained weights (they were trained on RGB), got {in_chans!r}")
        from smallnets.pretrained import load_pretrained

        return load_pretrained(name, pretrained, num_classes=num_classes, **knobs)
    info = model_info(name)
    if info.spec_builder is not None:
        spec = model_spec(name, num_classes, in_chans, **knobs)
        model = build_model(spec)
        resolved = resolve_knobs(name, knobs)
        model.smallnets_config = {"name": name, "num_classes": spec.num_classes, "in_chans": spec.in_chans, "knobs": resolved}
        return model
    params = inspect.signature(info.builder).parameters
    num_classes = params["num_classes"].default if num_classes is None else num_classes
    in_chans = params["in_chans"].default if in_chans is None else in_chans
    check_int("num_classes", num_classes, 1)
    check_int("in_chans", in_chans, 1)
    resolved = resolve_knobs(name, knobs)
    model = info.builder(num_classes=num_classes, in_chans=in_chans, **resolved, **info.fixed)
    model.smallnets_config = {"name": name, "num_classes": num_classes, "in_chans": in_chans, "knobs": resolved}
    return model


def model_from_spec(spec: ArchSpec) -> nn.Module:
    """A model from a spec of your own (hand-edited, pruned, from JSON): ``model.smallnets_config``
    then names no zoo entry, and its weights' sidecar records the spec itself."""
    model = build_model(spec)
    model.smallnets_config = {"name": None, "num_classes": spec.num_classes, "in_chans": spec.in_chans, "knobs": {}}
    return model
