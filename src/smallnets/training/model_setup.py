"""The model a run trains: a zoo name and knobs (with the small-input stem chosen for small images),
pretrained weights with a new classifier, a spec (an architecture as a value), or a model object
built by smallnets; what config.json records so that a resume and ``load_weights`` rebuild it from
the run's files alone; and freezing for fine-tuning."""

from __future__ import annotations

import sys
import warnings

from torch import nn

from smallnets.arch.spec import ArchSpec
from smallnets.registry import model_info
from smallnets.training.config import ModelConfig, TrainConfig
from smallnets.zoo import create_model, rebuild

SMALL_INPUT_PX = 64  # images this small (or smaller) want a model's small-input stem: an ImageNet one ends at 2x2 or 1x1


def display_name(model: ModelConfig) -> str:
    """The zoo name, or for an architecture from a spec alone its family: 'mobilenet_v2 (custom spec)'."""
    if model.name:
        return model.name
    family = ArchSpec.from_dict(model.spec).family if model.spec else ""
    return f"{family or 'model'} (custom spec)"


def run_name_prefix(model: ModelConfig) -> str:
    """The start of an automatic run directory name: the zoo name, else FAMILY-custom."""
    if model.name:
        return model.name
    family = ArchSpec.from_dict(model.spec).family if model.spec else ""
    return f"{family or 'model'}-custom"


def record_of(model: nn.Module) -> ModelConfig:
    """What config.json records about a model object so that the run rebuilds it from files alone:
    its spec (any architecture, a pruned one included) and the zoo name and knobs it came from;
    for a family without specs, the name and knobs alone."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module built by smallnets (create_model or model_from_spec), got {type(model).__qualname__}")
    cfg = getattr(model, "smallnets_config", None)
    spec = getattr(model, "spec", None)
    if not isinstance(cfg, dict) or not (isinstance(spec, ArchSpec) or cfg.get("name")):
        raise ValueError(
            f"model must be built by smallnets (create_model or model_from_spec): a {type(model).__name__} without "
            "smallnets_config and spec could not be rebuilt from the run's files; build it with smallnets.model_from_spec(spec)"
        )
    name = cfg.get("name") or ""
    knobs = dict(cfg.get("knobs") or {}) if name else {}
    if isinstance(spec, ArchSpec):
        from smallnets.checkpoint import _check_spec_describes

        _check_spec_describes(model, spec)  # the record must never lie: a resume rebuilds from it
        return ModelConfig(name=name, knobs=knobs, spec=spec.to_dict())
    return ModelConfig(name=name, knobs=knobs)


def outputs_and_inputs(model: nn.Module) -> tuple[int, int]:
    """(classifier width, input channels) as the model records them."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, ArchSpec):
        return spec.num_classes, spec.in_chans
    cfg = model.smallnets_config
    return cfg["num_classes"], cfg["in_chans"]


def check_fits_data(model: nn.Module, classes: list[str], where: str) -> None:
    """A given model must have one output per class of the data, and take RGB images."""
    outputs, in_chans = outputs_and_inputs(model)
    if outputs != len(classes):
        shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
        raise ValueError(f"model must have one output per class of the data: its classifier gives {outputs} outputs, but {where!r} "
                         f"has {len(classes)} classes ({shown}); build it with num_classes={len(classes)}")  # fmt: skip
    if in_chans != 3:
        raise ValueError(f"model must take 3 input channels (the data's images are RGB), got in_chans={in_chans}")


def from_spec_record(model: ModelConfig, where: str) -> nn.Module:
    """The model a [model] section with a spec describes, freshly initialised."""
    return rebuild({"spec": model.spec, "model": model.name or None, "knobs": model.knobs}, where)


def choose_stem(name: str, knobs: dict, size: int | None) -> tuple[dict, dict]:
    """Small images through an ImageNet stem end in a 1x1 map and train to chance: with no ``cifar``
    given (and no pretrained weights needing that stem), take the model's small-input stem.
    Returns (knobs, what was chosen and why; empty when nothing was)."""
    defaults = model_info(name).knobs
    if "cifar" in knobs or defaults.get("cifar") is not False or size is None or size > SMALL_INPUT_PX:
        return knobs, {}
    return {**knobs, "cifar": True}, {"cifar": True, "why": f"{size} px images; no cifar given and no pretrained weights"}


def resolve_pretrained(cfg: TrainConfig, *, loading: bool, progress: bool):
    """(path, format, checkpoint or None) of ``cfg.pretrained``; the checkpoint is read when loading
    (a resumed run takes every weight from its own state) or when its format must be detected."""
    from smallnets.pretrained import detect_format, get_format, read_checkpoint, resolve_source

    path, fmt = resolve_source(cfg.pretrained, format=cfg.pretrained_format, progress=progress)
    src = read_checkpoint(path) if loading or fmt is None else None  # read once: for detection and loading alike
    if fmt is None:
        fmt = get_format(detect_format(src))
    return path, fmt, src if loading else None


def pretrained_model(name: str, knobs: dict, num_classes: int, cfg: TrainConfig, path, fmt, src, *,
                     announce: bool) -> tuple[nn.Module, dict | None]:  # fmt: skip
    """The model with the checkpoint's knobs (the user's win) and, unless resuming, its weights and a
    new classifier; with the load report run.json keeps (None when resuming)."""
    from smallnets.pretrained import apply_checkpoint

    model = create_model(name, num_classes=num_classes, **{**fmt.knobs, **knobs})
    if src is None:
        return model, None
    apply_checkpoint(model, src, fmt, source=cfg.pretrained, path=path)
    load_report = model.smallnets_meta["load_report"]
    if announce:
        new = load_report["reinitialised"]
        print(f"loaded {fmt.name} weights from {cfg.pretrained}" + (f"; new classifier ({', '.join(new)})" if new else ""),
              file=sys.stderr, flush=True)  # fmt: skip
    return model, {"format": fmt.name, "source": cfg.pretrained, **load_report}


def warn_imagenet_stem(model: nn.Module, name: str, size: int | None) -> None:
    if model.smallnets_config["knobs"].get("cifar") is not False or size is None or size > SMALL_INPUT_PX:
        return
    info = model.feature_info() if hasattr(model, "feature_info") else []
    stride = info[-1]["stride"] if info else 32
    side = max(1, -(-size // stride))
    warnings.warn(f"{name} keeps the ImageNet stem its pretrained weights need: at {size} px its last feature map "
                  f"is {side}x{side} (stride {stride}); --image-size 96 or more usually trains better", stacklevel=5)  # fmt: skip


def freeze_layers(model: nn.Module, freeze: str) -> list[nn.Module]:
    """Stop gradients to the backbone (``'backbone'``: all but the classifier) or to the stem and every
    stage up to and including ``freeze`` (e.g. ``'stages.2'``); returns the frozen modules."""
    stage_names = [f"stages.{i}" for i in range(len(getattr(model, "stages", [])))]
    if freeze == "backbone":
        frozen = [m for n, m in model.named_children() if n != "classifier"]
    elif freeze in stage_names:
        last = stage_names.index(freeze)
        frozen = [model.stem, *list(model.stages)[: last + 1]]
    elif freeze == "stem" and hasattr(model, "stem"):
        frozen = [model.stem]
    else:
        raise ValueError(f"freeze must be 'backbone', 'stem' or one of {', '.join(stage_names)}, got {freeze!r}")
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen

