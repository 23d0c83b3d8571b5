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
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMATS",
    "WeightFormat",
    "apply_checkpoint",
    "PretrainedMismatch",
    "convert_state_dict",
    "detect_format",
    "fetch_checkpoint",
    "imagenet_classes",
    "list_formats",
    "load_pretrained",
    "read_checkpoint",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def _prep(crop: int, resize: int, interpolation: str, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Any]:
    """Published evaluation preprocessing: resize the short side to ``resize``, center-crop ``crop``."""
    return {"crop": crop, "resize": resize, "interpolation": interpolation, "mean": list(mean), "std": list(std)}


def _timm_prep(crop: int, crop_pct: float, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation: str = "bicubic") -> dict[str, Any]:
    return _prep(crop, int(crop / crop_pct), interpolation, mean, std)  # timm: floor(crop / crop_pct)


@dataclass(frozen=True)
class WeightFormat:
    """One checkpoint layout: which smallnets model (and knobs) it fills, and how its inputs are prepared."""

    name: str  # "torchvision:mobilenet_v2"
    model: str  # smallnets zoo name
    knobs: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    first_module: str  # the checkpoint's first module (tells the libraries' layouts apart)
    detect: bool = True  # False: same keys and shapes as another format; only chosen when named
    url: str | None = None  # published weights, where known (torch.hub names carry a SHA-256 prefix: NAME-<hex>.pth)
    sha256: str | None = None
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    classes: tuple[str, ...] | None = None  # class names that travel with the weights (smallnets' own files)
    num_classes: int | None = None  # outputs of the classifier, where a sidecar records them (smallnets' own files)


def _formats() -> dict[str, WeightFormat]:
    out: list[WeightFormat] = []
    tv = "torchvision"
    hub = "https://download.pytorch.org/models/"
    out += [
        WeightFormat(f"{tv}:squeezenet1_0", "squeezenet1_0", {}, _prep(224, 256, "bilinear"), "features.0", url=hub + "squeezenet1_0-b66bff10.pth"),
        WeightFormat(f"{tv}:squeezenet1_1", "squeezenet1_1", {}, _prep(224, 256, "bilinear"), "features.0", url=hub + "squeezenet1_1-b8a52dc0.pth"),
        WeightFormat(f"{tv}:mobilenet_v2", "mobilenet_v2", {}, _prep(224, 256, "bilinear"), "features.0.0", url=hub + "mobilenet_v2-b0353104.pth"),
    ]
    shuffle_files = {"x0_5": "shufflenetv2_x0.5-f707e7126e.pth", "x1_0": "shufflenetv2_x1-5666bf0f80.pth",
                     "x1_5": "shufflenetv2_x1_5-3c479a10.pth", "x2_0": "shufflenetv2_x2_0-8be3c8ee.pth"}  # fmt: skip
    for tag, width, resize in (("x0_5", 0.5, 256), ("x1_0", 1.0, 256), ("x1_5", 1.5, 232), ("x2_0", 2.0, 232)):
        out.append(WeightFormat(f"{tv}:shufflenet_v2_{tag}", "shufflenet_v2", {"width_mult": width}, _prep(224, resize, "bilinear"), "conv1.0",
                                url=hub + shuffle_files[tag]))  # fmt: skip
    dense_files = {121: "densenet121-a639ec97.pth", 161: "densenet161-8d451a50.pth", 169: "densenet169-b2777c0a.pth", 201: "densenet201-c1103571.pth"}
    for depth in (121, 161, 169, 201):
        out.append(WeightFormat(f"{tv}:densenet{depth}", f"densenet{depth}", {}, _prep(224, 256, "bilinear"), "features.conv0",
                                url=hub + dense_files[depth]))  # fmt: skip
    # torchvision's EfficientNet B0-B7 (IMAGENET1K_V1): crop / resize sizes, bicubic. B5-B7 are built with
    # norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.01), B0-B4 with PyTorch's defaults
    # (torchvision/models/efficientnet.py, efficientnet_b5 / _b6 / _b7)
    tv_bn = {"bn_eps": 1e-3, "bn_momentum": 0.01}
    for i, (crop, resize) in enumerate(((224, 256), (240, 256), (288, 288), (300, 320), (380, 384), (456, 456), (528, 528), (600, 600))):
        out.append(WeightFormat(f"{tv}:efficientnet_b{i}", f"efficientnet_b{i}", tv_bn if i >= 5 else {}, _prep(crop, resize, "bicubic"),
                                "features.0.0", notes="BatchNorm eps 1e-3, momentum 0.01, as torchvision builds it" if i >= 5 else ""))  # fmt: skip
    tm = "timm"
    rel = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
    # timm's MobileNetV1 weights (ra4 recipe) are trained on inputs normalised with mean = std = 0.5;
    # 125 is evaluated at crop_pct 0.9 (075 / 050 / 025 have no published weights: the family's values)
    for tag, width in (("100", 1.0), ("125", 1.25), ("075", 0.75), ("050", 0.5), ("025", 0.25)):
        out.append(WeightFormat(f"{tm}:mobilenetv1_{tag}", "mobilenet_v1", {"width_mult": width} if width != 1.0 else {},
                                _timm_prep(224, 0.9 if tag == "125" else 0.875, INCEPTION_MEAN, INCEPTION_STD), "conv_stem"))  # fmt: skip
    out.append(WeightFormat(f"{tm}:mobilenetv1_100h", "mobilenet_v1", {"head_chs": 1024}, _timm_prep(224, 0.875, INCEPTION_MEAN, INCEPTION_STD),
                            "conv_stem", notes="MobileNetV1 with a 1x1 conv head (1024 -> 1024) before pooling"))  # fmt: skip
    v2_files = {"100": "mobilenetv2_100_ra-b33bc2c4.pth", "140": "mobilenetv2_140_ra-21a4e913.pth", "050": "mobilenetv2_050-3d30d450.pth"}
    for tag, width in (("100", 1.0), ("140", 1.4), ("075", 0.75), ("050", 0.5), ("035", 0.35)):
        out.append(WeightFormat(f"{tm}:mobilenetv2_{tag}", "mobilenet_v2", {"width_mult": width} if width != 1.0 else {},
                                _timm_prep(224, 0.875), "conv_stem", url=rel + v2_files[tag] if tag in v2_files else None))  # fmt: skip
    for tag, width, depth, file in (("110d", 1.1, 1.2, "mobilenetv2_110d_ra-77090ade.pth"), ("120d", 1.2, 1.4, "mobilenetv2_120d_ra-5987e2ed.pth")):
        out.append(WeightFormat(f"{tm}:mobilenetv2_{tag}", "mobilenet_v2", {"width_mult": width, "depth_mult": depth, "fix_stem_head": True},
                                _timm_prep(224, 0.875), "conv_stem", url=rel + file,
                                notes="width and depth scaled, stem, last conv and first / last rows fixed"))  # fmt: skip
    # timm EfficientNets: eval size and crop_pct of each default pretrained tag, and its file. The tf_ ports
    # set bn_eps=1e-3 and pad_type='same' only (timm/models/efficientnet.py): BN momentum stays 0.1
    timm_eff = {0: (224, 0.875, "efficientnet_b0_ra-3dd342df.pth"), 1: (224, 0.875, "efficientnet_b1-533bc792.pth"),
                2: (256, 0.875, "efficientnet_b2_ra-bcdf34b7.pth"), 3: (288, 0.875, "efficientnet_b3_ra2-cf984f9c.pth"),
                4: (320, 0.875, "efficientnet_b4_ra2_320-7eb33cd5.pth"), 5: (448, 1.0, None), 6: (528, 0.942, None), 7: (600, 0.949, None)}  # fmt: skip
    tf_eff = {0: (224, 0.875, "tf_efficientnet_b0_aa-827b6e33.pth"), 1: (240, 0.882, "tf_efficientnet_b1_aa-ea7a6ee0.pth"),
              2: (260, 0.890, "tf_efficientnet_b2_aa-60c94f97.pth"), 3: (300, 0.904, "tf_efficientnet_b3_aa-84b4657e.pth"),
              4: (380, 0.922, "tf_efficientnet_b4_aa-818f208c.pth"), 5: (456, 0.934, "tf_efficientnet_b5_ra-9a3e5369.pth"),
              6: (528, 0.942, "tf_efficientnet_b6_aa-80ba17e4.pth"), 7: (600, 0.949, "tf_efficientnet_b7_ra-6c08e654.pth")}  # fmt: skip
    for i in range(8):
        size, pct, file = timm_eff[i]
        out.append(WeightFormat(f"{tm}:efficientnet_b{i}", f"efficientnet_b{i}", {}, _timm_prep(size, pct), "conv_stem",
                                url=rel + file if file else None))  # fmt: skip
        size, pct, file = tf_eff[i]
        out.append(WeightFormat(f"{tm}:tf_efficientnet_b{i}", f"efficientnet_b{i}", {"same_padding": True, "bn_eps": 1e-3},
                                _timm_prep(size, pct), "conv_stem", detect=False, url=rel + file,
                                notes="ported from TensorFlow: 'SAME' padding and BatchNorm eps 1e-3; has the same keys as "
                                      f"timm:efficientnet_b{i}, so name it explicitly"))  # fmt: skip
    out.append(WeightFormat(f"{tm}:legacy_xception", "xception", {}, _timm_prep(299, 0.8975, INCEPTION_MEAN, INCEPTION_STD), "conv1",
                            aliases=(f"{tm}:xception",)))  # fmt: skip
    for depth in (121, 161, 169, 201):
        out.append(WeightFormat(f"{tm}:densenet{depth}", f"densenet{depth}", {}, _timm_prep(224, 0.875), "features.conv0", detect=False,
                                notes=f"the same layout as torchvision:densenet{depth}"))  # fmt: skip
    table = {}
    for f in out:
        table[f.name] = f
    return table


FORMATS: dict[str, WeightFormat] = _formats()
OWN = "smallnets"  # the format name of smallnets' own weights (save_weights, a run's best / last): see own_format
_ALIASES = {alias: f.name for f in FORMATS.values() for alias in f.aliases}


def list_formats(pattern: str | None = None) -> list[str]:
    """The checkpoint formats smallnets converts, e.g. ``list_formats("timm:*")``."""
    import fnmatch

    names = sorted(FORMATS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_format(name: str) -> WeightFormat:
    if not isinstance(name, str):
        raise TypeError(f"format must be a str like 'torchvision:mobilenet_v2', got {type(name).__qualname__}")
    key = _ALIASES.get(name, name)
    if key not in FORMATS:
        close = [n for n in FORMATS if name.split(":")[-1] in n]
        hint = f"; did you mean {', '.join(close[:4])}?" if close else "; see smallnets.pretrained.list_formats()"
        raise ValueError(f"format must be one of the known checkpoint formats (SOURCE:NAME), got {name!r}{hint}")
    return FORMATS[key]


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in the index order of torchvision and timm checkpoints."""
    text = resources.files("smallnets").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise RuntimeError(f"smallnets/imagenet_classes.txt must hold 1000 names, has {len(names)}")
    return names


# ------------------------------------------------------------------------------------------------
# Reading checkpoints


class PretrainedMismatch(ValueError):
    """A checkpoint that does not fit the model; the message lists where."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, on the CPU; no pickled code is ever run.

    ``.safetensors`` is read with safetensors; anything else with ``torch.load(weights_only=True)``.
    A dict wrapping the state dict under ``state_dict`` / ``model`` / ``model_ema`` /
    ``state_dict_ema`` is unwrapped, and a DataParallel ``module.`` prefix removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            sd: Any = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(_load_refusal(path, exc)) from None  # torch's own text advises weights_only=False
    for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    # torchvision's published DenseNet files predate its module names: 'norm.1' is today's 'norm1'
    legacy = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
    return {legacy.sub(r"\1\2.\3", k): v for k, v in sd.items()}


def _load_refusal(path: Path, exc: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused in ``path`` and why, in smallnets' words.

    torch's message suggests re-running with ``weights_only=False`` or allowlisting the global, which
    would let the file run code: neither is repeated here.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    fix = "save the model's state dict alone (torch.save(model.state_dict(), PATH)) or as .safetensors"
    if not isinstance(exc, pickle.UnpicklingError) or "WeightsUnpickler error" not in text:
        first = text.strip().splitlines()[0].split(". ", 1)[0][:200] if text.strip() else ""
        return f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another format?): {type(exc).__name__}: {first}"
    detail = text.split("WeightsUnpickler error:", 1)[1].strip()
    found = re.match(r"Unsupported global: GLOBAL (\S+) was not an allowed global", detail)
    if found:
        why = (f"its pickle refers to {found.group(1)!r}, a Python function or class rather than a tensor or a "
               "plain container, and unpickling it would call that code")  # fmt: skip
    else:
        step = re.sub(r"\s+", " ", detail.split("\n\n")[0] if "\n\n" in detail else detail).strip()
        step = step.split(" Please use", 1)[0].split("Check the documentation", 1)[0].strip()[:200]
        why = f"its pickle uses something a tensor-only reader does not allow ({step or 'an unsupported instruction'})"
    return (f"{path} was refused: {why}. smallnets reads checkpoints with torch.load(weights_only=True), loads only "
            f"tensors and never runs a checkpoint's pickled code; {fix}")  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Module order


# The order in which the reference libraries register sibling submodules that have names, read off
# their checkpoints (numbered siblings go by number; ``nameN`` siblings of one prefix by N).
_SIBLING_ORDER: tuple[tuple[str, ...], ...] = (
    ("features", "classifier"),
    ("squeeze", "expand1x1", "expand3x3"),
    ("conv1", "stage2", "stage3", "stage4", "conv5", "fc"),
    ("branch1", "branch2"),
    ("conv0", "norm0", "denseblock1", "transition1", "denseblock2", "transition2", "denseblock3", "transition3", "denseblock4", "norm5"),
    ("norm1", "conv1", "norm2", "conv2"),
    ("norm", "conv"),
    ("fc1", "fc2"),
    ("conv_stem", "bn1", "blocks", "classifier"),
    ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier"),
    ("conv_dw", "bn1", "conv_pw", "bn2"),
    ("conv_dw", "bn1", "se", "conv_pw", "bn2"),
    ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3"),
    ("conv_pw", "bn1", "conv_dw", "bn2", "se", "conv_pwl", "bn3"),
    ("conv_reduce", "conv_expand"),
    ("conv1", "bn1", "conv2", "bn2", *(f"block{i}" for i in range(1, 13)), "conv3", "bn3", "conv4", "bn4", "fc"),
    ("skip", "skipbn", "rep"),
    ("conv1", "pointwise"),
)
_ORDER_BY_SET = {frozenset(order): order for order in _SIBLING_ORDER}


def _natural(name: str) -> tuple:
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def _order_children(names: Sequence[str]) -> list[str]:
    numbered = sorted((n for n in names if n.isdigit()), key=int)
    named = [n for n in names if not n.isdigit()]
    known = _ORDER_BY_SET.get(frozenset(named))
    if known is not None:
        named = list(known)
    else:
        named = sorted(named, key=_natural)
    return numbered + named


def _module_of(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def source_modules(keys: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The checkpoint's modules in the reference library's registration order, with their parameter names."""
    params: dict[str, list[str]] = {}
    for key in keys:
        module, param = _module_of(key)
        params.setdefault(module, []).append(param)
    children: dict[str, set[str]] = {}
    for module in params:
        parts = module.split(".") if module else []
        for i, part in enumerate(parts):
            children.setdefault(".".join(parts[:i]), set()).add(part)
    rank: dict[str, dict[str, int]] = {parent: {c: i for i, c in enumerate(_order_children(sorted(kids)))} for parent, kids in children.items()}

    def sort_key(module: str) -> tuple[int, ...]:
        parts = module.split(".") if module else []
        return tuple(rank[".".join(parts[:i])][p] for i, p in enumerate(parts))

    return [(m, params[m]) for m in sorted(params, key=sort_key)]


def model_modules(state: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    out: dict[str, list[str]] = {}
    for key in state:
        module, param = _module_of(key)
        out.setdefault(module, []).append(param)
    return list(out.items())


# ------------------------------------------------------------------------------------------------
# Conversion


_OPTIONAL = {"num_batches_tracked"}  # older checkpoints lack it; it does not change any output


def _pair(
    theirs: Sequence[tuple[str, list[str]]], src: Mapping[str, torch.Tensor], own: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, str], list[str]]:
    """Map checkpoint keys to model keys module by module; returns (mapping, problems).

    ``theirs``: ``source_modules(src)``; ``own``: the model's state-dict shapes, in its order.
    """
    ours = model_modules(own)
    mapping: dict[str, str] = {}
    problems: list[str] = []
    first_shape: str | None = None  # where the layouts part, when the names still pair up
    for i, ((s_mod, s_params), (o_mod, o_params)) in enumerate(zip(theirs, ours)):
        s_set, o_set = set(s_params) - _OPTIONAL, set(o_params) - _OPTIONAL
        if s_set != o_set:
            problems.append(f"module {i}: checkpoint {s_mod!r} has {sorted(s_params)}, model {o_mod!r} has {sorted(o_params)}")
            break
        for p in o_params:
            s_key = f"{s_mod}.{p}" if s_mod else p
            if s_key in src:
                o_key = f"{o_mod}.{p}" if o_mod else p
                mapping[s_key] = o_key
                if first_shape is None and tuple(src[s_key].shape) != own[o_key]:
                    first_shape = f"first shape mismatch: checkpoint {s_key} {tuple(src[s_key].shape)} vs model {o_key} {own[o_key]}"
    if not problems and len(theirs) != len(ours):
        extra = theirs[len(ours):] if len(theirs) > len(ours) else []
        missing = ours[len(theirs):] if len(ours) > len(theirs) else []
        if extra:
            problems.append(f"the checkpoint has {len(extra)} more module(s) than the model: {', '.join(m for m, _ in extra[:5])}")
        if missing:
            problems.append(f"the model has {len(missing)} more module(s) than the checkpoint: {', '.join(m for m, _ in missing[:5])}")
    if problems and first_shape is not None:
        problems.insert(0, first_shape)
    return mapping, problems


def _classifier_prefix(model: nn.Module) -> str | None:
    """State-dict prefix of the last layer (the one a new number of classes replaces)."""
    keys = [k for k in model.state_dict() if k.endswith(".weight")]
    return keys[-1].rpartition(".")[0] if keys else None


def _num_classes_in(src: Mapping[str, torch.Tensor], theirs: Sequence[tuple[str, list[str]]]) -> int:
    """Outputs of the checkpoint's last layer; ``theirs``: ``source_modules(src)``."""
    return int(src[f"{theirs[-1][0]}.weight"].shape[0])


def _checkpoint_classes(src: Mapping[str, torch.Tensor], fmt: WeightFormat) -> int:
    """Outputs of the checkpoint's classifier (smallnets' own files: as their sidecar records)."""
    if fmt.num_classes is not None:
        return fmt.num_classes
    return _num_classes_in(src, source_modules(list(src)))


def _match_by_name(
    src: Mapping[str, torch.Tensor], model: nn.Module, *, source: str = "the checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """smallnets weights into a smallnets model: keys load by name (as ``load_weights``); the report as ``convert_state_dict``'s."""
    from smallnets.checkpoint import _mismatch, conform_state

    own = model.state_dict()
    missing, unexpected, shapes = _mismatch(model, src)
    state = conform_state({k: src[k] for k in own if k in src and k not in shapes}, own, where=source)
    return state, {
        "missing": [k for k in missing if not k.endswith("num_batches_tracked")],
        "unexpected": unexpected,
        "shape_mismatch": [f"{k} (checkpoint {k}): checkpoint {tuple(src[k].shape)} vs model {tuple(own[k].shape)}" for k in shapes],
    }


@lru_cache(maxsize=None)
def _meta_state(model: str, knobs_items: tuple, num_classes: int) -> dict[str, tuple]:
    from smallnets.zoo import create_model

    with torch.device("meta"):
        m = create_model(model, num_classes=num_classes, **dict(knobs_items))
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _fits(fmt: WeightFormat, src: Mapping[str, torch.Tensor], theirs: Sequence[tuple[str, list[str]]], num_classes: int) -> bool:
    if theirs[0][0] != fmt.first_module:
        return False
    try:
        shapes = _meta_state(fmt.model, tuple(sorted(fmt.knobs.items())), num_classes)
    except (TypeError, ValueError):
        return False
    mapping, problems = _pair(theirs, src, shapes)
    return not problems and all(tuple(src[s].shape) == shapes[o] for s, o in mapping.items())


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The format of a reference-library state dict, from its key names and shapes.

    Formats that share keys and shapes with another (``timm:tf_efficientnet_*``, whose differences
    are padding and BN eps, not weights) are never detected: name them.
    """
    theirs = source_modules(list(state_dict))  # sorted once for every candidate
    num_classes = _num_classes_in(state_dict, theirs)
    hits = [f.name for f in FORMATS.values() if f.detect and _fits(f, state_dict, theirs, num_classes)]
    if len(hits) == 1:
        return hits[0]
    first = theirs[0][0]
    if not hits:
        raise PretrainedMismatch(
            f"could not tell the checkpoint's format (first module {first!r}, {len(state_dict)} tensors): it matches none of "
            f"smallnets' {len(FORMATS)} formats. Name it with format='torchvision:NAME' or 'timm:NAME' to see where it differs."
        )
    raise PretrainedMismatch(f"the checkpoint fits several formats ({', '.join(hits)}); name one with format=...")


def _refuse(model: nn.Module, report: Mapping[str, list[str]]) -> None:
    """Raise :class:`PretrainedMismatch` listing a report's missing, unexpected and mis-shaped keys, if any."""
    titles = {"missing": "missing from the checkpoint", "unexpected": "unexpected in the checkpoint", "shape_mismatch": "shape mismatch"}
    lines = [f"{titles[k]} ({len(report[k])}): " + ", ".join(report[k][:10]) + (" ..." if len(report[k]) > 10 else "")
             for k in titles if report[k]]  # fmt: skip
    if lines:
        raise PretrainedMismatch(
            f"the checkpoint does not fit {type(model).__name__}:\n  " + "\n  ".join(lines)
            + "\nPass strict=False (CLI: --partial) to load what fits and keep the model's own values for the rest."
        )


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, *, strict: bool = True, source: str = "the checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """A reference-library state dict renamed to ``model``'s keys, in the model's dtypes.

    Returns ``(state, report)``: ``report`` lists the model keys left out (``missing``), checkpoint
    keys not used (``unexpected``) and shape mismatches. With ``strict=True`` any of them raises
    :class:`PretrainedMismatch` naming them. With ``strict=False`` keys of mismatched shape (a
    classifier for another number of classes) are left out, so the model keeps its own values.
    A tensor of the wrong kind of dtype (a float weight stored as int or bool) is always refused
    (``ValueError``); other float widths are cast; NaN / inf values warn. ``source`` names the file in messages.
    """
    from smallnets.checkpoint import conform_state

    own = model.state_dict()
    mapping, problems = _pair(source_modules(list(state_dict)), state_dict, {k: tuple(v.shape) for k, v in own.items()})
    if problems:
        raise PretrainedMismatch("the checkpoint does not fit the model " + type(model).__name__ + ":\n  " + "\n  ".join(problems))
    matched: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    shapes: list[str] = []
    for s_key, o_key in mapping.items():
        tensor = state_dict[s_key]
        if tuple(tensor.shape) != tuple(own[o_key].shape):
            shapes.append(f"{o_key} (checkpoint {s_key}): checkpoint {tuple(tensor.shape)} vs model {tuple(own[o_key].shape)}")
            continue
        matched[o_key], names[o_key] = tensor, s_key
    state = conform_state(matched, own, where=source, names=names)
    mapped = set(mapping.values())
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected = sorted(k for k in state_dict if k not in mapping)
    report = {"missing": missing, "unexpected": unexpected, "shape_mismatch": shapes}
    if strict:
        _refuse(model, report)
    # BatchNorm counters an old checkpoint lacks: start at zero rather than keep a random model's
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(own[key])
    return state, report


# ------------------------------------------------------------------------------------------------
# Sources: files and URLs


def default_cache_dir() -> Path:
    root = os.environ.get("SMALLNETS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smallnets")
    return Path(root) / "weights"


def _offline_default() -> bool:
    return os.environ.get("SMALLNETS_OFFLINE", "").lower() in ("1", "true", "yes")


def fetch_checkpoint(
    url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None, offline: bool | None = None, progress: bool = True
) -> Path:
    """The local copy of ``url`` in the cache, downloading (resumably) if needed; checked against ``sha256``.

    Offline (``offline=True`` or ``SMALLNETS_OFFLINE=1``) only the cache is used, and a missing
    file is a clear error rather than a network timeout.
    """
    from smallnets.data.download import ChecksumError, download, file_digest

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ValueError(f"source must be a local file or an http(s) URL, got {url!r}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    name = os.path.basename(parsed.path) or "checkpoint"
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]  # two URLs ending in the same file name never collide
    dest = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = dest / f"{tag}-{name}"
    # torch.hub's convention: NAME-<first hex digits of the SHA-256>.EXT, checked when no full digest is given
    m = re.search(r"-([0-9a-f]{8,64})\.[a-z]+$", name)
    prefix = m.group(1) if m and sha256 is None else None
    offline = _offline_default() if offline is None else offline
    if not dest.exists():
        if offline:
            raise FileNotFoundError(f"offline: {url} is not in the cache ({dest}); download it once online, or pass a local file")
        download(url, dest, sha256=sha256, progress=progress)
        if prefix is not None and not file_digest(dest, "sha256").startswith(prefix):
            dest.unlink()
            raise ChecksumError(f"{url}: the downloaded file's SHA-256 does not start with {prefix}, as its name says; it was deleted")
    elif sha256 is not None and file_digest(dest, "sha256") != sha256:
        raise ChecksumError(f"{dest}: cached copy of {url} does not match sha256 {sha256}; delete it to download again")
    return dest


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
    from smallnets.checkpoint import _meta_from_metadata, read_sidecar, recorded_knobs

    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    if path.with_suffix(".json").is_file():
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
                        num_classes=int(meta["num_classes"]))  # fmt: skip


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
    from smallnets.zoo import create_model

    if strict is not None and not isinstance(strict, bool):
        raise ValueError(f"strict must be True, False or None, got {strict!r}")
    path, fmt = resolve_source(source, format=format, sha256=sha256, cache_dir=cache_dir, offline=offline, progress=progress)
    src = read_checkpoint(path)
    if fmt is None:
        fmt = get_format(detect_format(src))
    if model_or_name is None:
        model_or_name = fmt.model
    if isinstance(model_or_name, str):
        classes = num_classes or _checkpoint_classes(src, fmt)
        model = create_model(model_or_name, num_classes=classes, **{**fmt.knobs, **knobs})
    elif isinstance(model_or_name, nn.Module):
        if knobs or num_classes is not None:
            raise ValueError("knobs and num_classes apply when model_or_name is a zoo name; this model is already built")
        model = model_or_name
    else:
        raise TypeError(f"model_or_name must be a zoo name or an nn.Module, got {type(model_or_name).__qualname__}")
    return apply_checkpoint(model, src, fmt, strict=strict, source=os.fspath(source), path=path)


def apply_checkpoint(model: nn.Module, src: Mapping[str, torch.Tensor], fmt: WeightFormat, *, strict: bool | None = None,
                     source: str | None = None, path: str | os.PathLike | None = None) -> nn.Module:  # fmt: skip
    """Load an already-read checkpoint ``src`` of format ``fmt`` into ``model`` (what ``load_pretrained``
    does after reading and detecting); ``strict`` as there. Returns the model."""
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
        "load_report": {**report, "reinitialised": [f"{head}.weight", f"{head}.bias"] if new_head else []},
    })  # fmt: skip
    model.smallnets_meta = meta
    return model
