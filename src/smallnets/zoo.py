"""Creating zoo models: a name and knobs become a spec (registry), a spec becomes a module (models),
and pretrained weights are loaded onto it. The one module that stands above both."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smallnets.arch.spec import ArchSpec
from smallnets.checkpoint import load_tensors, read_weights, recorded_knobs
from smallnets.models import build_model
from smallnets.pretrained.convert import build_named


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
    return build_named(name, num_classes=num_classes, in_chans=in_chans, **knobs)


def model_from_spec(spec: ArchSpec) -> nn.Module:
    """A model from a spec of your own (hand-edited, pruned, from JSON): ``model.smallnets_config``
    then names no zoo entry, and its weights' sidecar records the spec itself."""
    model = build_model(spec)
    model.smallnets_config = {"name": None, "num_classes": spec.num_classes, "in_chans": spec.in_chans, "knobs": {}}
    return model


def rebuild(meta: dict[str, Any], where: str | Path) -> nn.Module:
    """The model a sidecar (or a weights file's metadata) describes, freshly initialised.

    From its recorded spec when it has one (any architecture, a pruned one included), else from
    the zoo name and knobs (files written before specs were recorded).
    """
    try:
        if meta.get("spec") is not None:
            model = build_model(ArchSpec.from_dict(meta["spec"]))
            model.smallnets_config = {"name": meta.get("model"), "num_classes": model.spec.num_classes, "in_chans": model.spec.in_chans,
                                      "knobs": recorded_knobs(meta) if meta.get("model") else {}}  # fmt: skip
            return model
        if not meta.get("model"):
            raise ValueError("it records neither a spec nor a zoo model name")
        return create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"], **recorded_knobs(meta))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot rebuild {meta.get('model') or 'the model'!r} from its recorded configuration: {err}") from err


def load_weights(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    strict: bool = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Load weights saved by ``save_weights`` (``path``: a .safetensors file or a run directory) or by
    ``compress.packed.write_packed`` (a .sncz file: its header holds the sidecar). An ``.onnx`` file
    from ``smallnets export`` loads as a ``smallnets.export.OnnxModule`` (ONNX Runtime, inference
    only), so evaluation and prediction run on it as on any loaded model.

    With ``model=None`` the model is rebuilt from the sidecar (its spec, or its zoo name and
    knobs), or from the file's metadata when the sidecar is missing. The sidecar's sha256 is
    checked first. With ``strict=False`` only keys present in both with equal shapes are loaded,
    and what was skipped is reported in ``model.smallnets_meta['load_report']``. ``device``: where
    the returned model goes (default: the CPU for a rebuilt model, unchanged for a given one). The
    training/eval mode is left as it is. The sidecar (or metadata) is attached as ``model.smallnets_meta``.
    """
    if not isinstance(strict, bool):
        raise ValueError(f"strict must be True or False, got {strict!r}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__qualname__}")
    if Path(path).suffix == ".onnx":  # an exported file: ONNX Runtime behind a module interface
        if model is not None or device not in (None, "cpu", torch.device("cpu")):
            raise ValueError(f"an .onnx file loads as its own module on the CPU: model must be None and device None or 'cpu', "
                             f"got model={type(model).__qualname__ if model is not None else None}, device={device!r}")  # fmt: skip
        from smallnets.onnx_module import OnnxModule

        return OnnxModule(path)
    file, meta, tensors = read_weights(path)
    if model is None:
        if meta is None:
            raise ValueError(f"{file} has no sidecar and no smallnets metadata, so the model cannot be rebuilt; pass model=...")
        model = rebuild(meta, file)
        device = "cpu" if device is None else device
    report = load_tensors(model, tensors, file, strict=strict)
    if device is not None:
        model.to(device)
    meta = dict(meta or {})
    meta["path"] = str(file)
    if not strict:
        meta["load_report"] = report
    model.smallnets_meta = meta
    return model
