"""Pretrained weights from the ecosystem: torchvision and timm checkpoints in smallnets models.

A checkpoint is a state dict written by the reference library. smallnets' models register their
layers in the same order as those libraries do, so a checkpoint converts *module by module*: the
checkpoint's modules are put in the library's registration order (recovered from the key names,
since a safetensors file stores its keys sorted), paired with the model's modules in order, and
each pair must have the same parameter names and shapes. Nothing is matched by guesswork: a
checkpoint that does not pair up exactly is refused with the first place it diverges, unless a
partial load is asked for (a new classifier, typically).

    model = smallnets.create_model("mobilenet_v2", pretrained="mobilenet_v2-b0353104.pth")
    model = smallnets.load_pretrained("efficientnet_b3", "timm:tf_efficientnet_b3=/ckpt/model.safetensors")

``SOURCE`` is a local file (``.safetensors``; ``.pth`` / ``.pt`` / ``.bin`` read with
``torch.load(weights_only=True)``, which never runs pickled code) or an https URL (downloaded
into the cache with a progress bar, resumable, verified against a SHA-256). The format is detected
from the keys, or given as ``torchvision:NAME`` / ``timm:NAME``.

This module holds the loading entry points (sources, smallnets' own files, ``load_pretrained``);
``formats`` the table of checkpoint formats, ``convert`` the reading and module-by-module
conversion, ``download`` the cache of fetched files. Their public names are re-exported here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smallnets.pretrained.convert import (
    PretrainedMismatch,
    _checkpoint_classes,
    _classifier_prefix,
    _match_by_name,
    _refuse,
    build_named,
    convert_state_dict,
    detect_format,
    model_modules,
    read_checkpoint,
    source_modules,
)
from smallnets.pretrained.download import default_cache_dir, fetch_checkpoint
from smallnets.pretrained.formats import _ALIASES, FORMATS, OWN, WeightFormat, get_format, imagenet_classes, list_formats

__all__ = [
    "FORMATS",
    "OWN",
    "PretrainedMismatch",
    "WeightFormat",
    "apply_checkpoint",
    "convert_state_dict",
    "default_cache_dir",
    "detect_format",
    "fetch_checkpoint",
    "get_format",
    "imagenet_classes",
    "list_formats",
    "load_pretrained",
    "local_source",
    "model_modules",
    "own_format",
    "read_checkpoint",
    "resolve_source",
    "source_modules",
]


def _split_source(source: str | os.PathLike) -> tuple[str | None, str]:
    """``'timm:NAME=PATH'`` -> ('timm:NAME', 'PATH'); anything else -> (None, source)."""
    text = os.fspath(source)
    m = re.fullmatch(r"((?:torchvision|timm):[A-Za-z0-9_.]+)=(.+)", text)
    return (m.group(1), m.group(2)) if m else (None, text)


def local_source(source: str | os.PathLike) -> Path | None:
    """The local file ``source`` names (a run directory: its weights), found without reading, fetching or
    hashing anything; None for URLs, format names and paths that name no file."""
    _, text = _split_source(source)
    if re.match(r"^[a-z]+://", text) or text in FORMATS or text in _ALIASES:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        from smallnets.checkpoint import resolve_weights

        try:
            path = resolve_weights(path)
        except FileNotFoundError:
            return None
    return path if path.is_file() else None


def own_format(path: str | os.PathLike) -> WeightFormat | None:
    """The format of a smallnets weights file (its sidecar, else its metadata), or None for any other file.

    Fine-tuning from one of your own runs works like fine-tuning from ImageNet weights: the model,
    knobs, preprocessing and class names come from the sidecar, and keys load by name.
    """
    from smallnets.checkpoint import _meta_from_metadata, read_sidecar, read_weights, recorded_knobs

    path = Path(path)
    if path.suffix == ".sncz":  # a compressed file (compress.packed): the sidecar is in its header
        meta = read_weights(path)[1]
    elif path.suffix != ".safetensors":
        return None
    elif path.with_suffix(".json").is_file():
        meta = read_sidecar(path)
    else:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = _meta_from_metadata(f.metadata() or {}, path)
        except Exception:  # not a readable safetensors file: read_checkpoint says so later
            return None
    if meta is None:
        return None
    classes = meta.get("classes")
    return WeightFormat(OWN, meta["model"], recorded_knobs(meta), dict(meta.get("preprocessing") or {}), "", detect=False,
                        sha256=meta.get("sha256"), notes="smallnets weights", classes=tuple(classes) if classes else None,
                        num_classes=int(meta["num_classes"]), spec=meta.get("spec"))  # fmt: skip


def resolve_source(source: str | os.PathLike, *, format: str | None = None, sha256: str | None = None,
                   cache_dir=None, offline: bool | None = None, progress: bool = True) -> tuple[Path, WeightFormat | None]:  # fmt: skip
    """A checkpoint source as a local file and the format named for it (if any)."""
    named, text = _split_source(source)
    if format is not None and named is not None and get_format(format).name != get_format(named).name:
        raise ValueError(f"format={format!r} contradicts the source's own {named!r}")
    fmt = get_format(format or named) if (format or named) else None
    if fmt is None and (text in FORMATS or text in _ALIASES):
        fmt = get_format(text)
    if re.match(r"^[a-z]+://", text):
        if fmt is not None and sha256 is None and fmt.url == text:
            sha256 = fmt.sha256
        return fetch_checkpoint(text, sha256=sha256, cache_dir=cache_dir, offline=offline, progress=progress), fmt
    if text in FORMATS or text in _ALIASES:  # a format name alone: its published weights
        if get_format(text).name != fmt.name:
            raise ValueError(f"format={format!r} contradicts the source {text!r}")
        if fmt.url is None:
            raise ValueError(f"no published URL is known for {fmt.name}; pass a file or URL (e.g. '{fmt.name}=PATH')")
        return fetch_checkpoint(fmt.url, sha256=sha256 or fmt.sha256, cache_dir=cache_dir, offline=offline, progress=progress), fmt
    path = Path(text).expanduser()
    if path.is_dir():  # a smallnets run directory: its best (else last) weights
        from smallnets.checkpoint import resolve_weights

        path = resolve_weights(path)
    if not path.is_file():
        raise FileNotFoundError(f"source must be an existing checkpoint file, a run directory, an https URL or FORMAT=PATH; {text!r} is none of them")
    own = own_format(path)
    if own is not None:
        if fmt is not None:
            raise ValueError(f"format={fmt.name!r} contradicts {str(path)!r}, which holds smallnets' own weights ({own.model})")
        fmt, sha256 = own, sha256 or own.sha256  # the sidecar's digest guards against a changed file
    if sha256 is not None:
        from smallnets.data.download import ChecksumError, file_digest

        actual = file_digest(path, "sha256")
        if actual != sha256:
            raise ChecksumError(f"{path}: sha256 {actual} does not match the expected {sha256}")
    return path, fmt


def load_pretrained(
    model_or_name: nn.Module | str | None,
    source: str | os.PathLike,
    *,
    format: str | None = None,
    num_classes: int | None = None,
    strict: bool | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
    **knobs: Any,
) -> nn.Module:
    """Load a torchvision / timm checkpoint into a smallnets model and return the model.

    ``model_or_name``: a smallnets model, or a zoo name (then it is built with the format's knobs,
    overridden by ``knobs``, and ``num_classes`` — default: the checkpoint's), or None for the
    format's own model. ``source``: a file,
    an https URL, ``FORMAT=PATH``, a format name whose published URL is known, or smallnets' own
    weights (a run directory or a ``.safetensors`` with its sidecar: model, knobs, preprocessing and
    class names come from the sidecar, keys load by name). ``format``: e.g.
    ``'timm:tf_efficientnet_b0'``; detected from the keys when not given. A model with a different
    number of classes than the checkpoint gets a freshly initialised classifier (reported in
    ``model.smallnets_meta['load_report']``); any other mismatch raises
    :class:`PretrainedMismatch` unless ``strict=False``. The published preprocessing and, for 1000
    classes, the ImageNet class names are attached as ``model.smallnets_meta``.
    """
    if strict is not None and not isinstance(strict, bool):
        raise ValueError(f"strict must be True, False or None, got {strict!r}")
    path, fmt = resolve_source(source, format=format, sha256=sha256, cache_dir=cache_dir, offline=offline, progress=progress)
    src = read_checkpoint(path)
    if fmt is None:
        fmt = get_format(detect_format(src))
    if model_or_name is None:
        model_or_name = fmt.model
    if fmt.spec is not None and model_or_name in (None, fmt.model):
        # smallnets' own file with its architecture recorded (a pruned model's widths no knob gives): that is what is built
        if knobs:
            raise ValueError(f"knobs ({', '.join(knobs)}) cannot change the architecture that {str(path)!r} records; "
                             "build the model yourself and pass it instead of a name")  # fmt: skip
        model = _from_recorded_spec(fmt, num_classes or _checkpoint_classes(src, fmt))
    elif isinstance(model_or_name, str):
        classes = num_classes or _checkpoint_classes(src, fmt)
        model = build_named(model_or_name, num_classes=classes, **{**fmt.knobs, **knobs})
    elif isinstance(model_or_name, nn.Module):
        if knobs or num_classes is not None:
            raise ValueError("knobs and num_classes apply when model_or_name is a zoo name; this model is already built")
        model = model_or_name
    else:
        raise TypeError(f"model_or_name must be a zoo name or an nn.Module, got {type(model_or_name).__qualname__}")
    return apply_checkpoint(model, src, fmt, strict=strict, source=os.fspath(source), path=path)


def _from_recorded_spec(fmt: WeightFormat, num_classes: int) -> nn.Module:
    import dataclasses

    from smallnets.arch.spec import ArchSpec
    from smallnets.models import build_model

    spec = ArchSpec.from_dict(dict(fmt.spec))
    if spec.num_classes != num_classes:
        spec = dataclasses.replace(spec, num_classes=num_classes)
    model = build_model(spec)
    model.smallnets_config = {"name": fmt.model, "num_classes": spec.num_classes, "in_chans": spec.in_chans, "knobs": dict(fmt.knobs)}
    return model


def apply_checkpoint(model: nn.Module, src: Mapping[str, torch.Tensor], fmt: WeightFormat, *, strict: bool | None = None,
                     source: str | None = None, path: str | os.PathLike | None = None) -> nn.Module:  # fmt: skip
    """Load an already-read checkpoint ``src`` of format ``fmt`` into ``model`` (what ``load_pretrained``
    does after reading and detecting); ``strict`` as there. Returns the model."""
    src, dropped = fmt.kept(src)  # parts the layout has no place for (auxiliary classifiers)
    src_classes = _checkpoint_classes(src, fmt)
    head = _classifier_prefix(model)
    own = model.state_dict()
    new_head = head is not None and f"{head}.weight" in own and own[f"{head}.weight"].shape[0] != src_classes
    where = str(path) if path is not None else source or "the checkpoint"
    state, report = _match_by_name(src, model, source=where) if fmt.name == OWN else convert_state_dict(src, model, strict=False, source=where)
    if strict is None:  # default: exact, except a classifier for another number of classes
        allowed = {f"{head}.weight", f"{head}.bias"} if new_head else set()
        _refuse(model, {**report, "shape_mismatch": [m for m in report["shape_mismatch"] if m.split(" ", 1)[0] not in allowed]})
    elif strict:
        _refuse(model, report)
    model.load_state_dict(state, strict=False)
    if fmt.name == OWN:
        classes = list(fmt.classes) if fmt.classes and not new_head else None
    else:
        classes = imagenet_classes() if not new_head and src_classes == 1000 else None
    meta = dict(getattr(model, "smallnets_meta", None) or {})
    meta.update({
        "pretrained": {"format": fmt.name, "source": source, "path": None if path is None else str(path)},
        "preprocessing": dict(fmt.preprocessing),
        "classes": classes,
        "load_report": {**report, "reinitialised": [f"{head}.weight", f"{head}.bias"] if new_head else [], "dropped": dropped},
    })  # fmt: skip
    model.smallnets_meta = meta
    return model
