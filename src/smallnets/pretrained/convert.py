"""Converting a reference-library state dict to a smallnets model, module by module.

smallnets' models register their layers in the same order as torchvision / timm do, so a checkpoint's
modules, put back in the library's registration order (recovered from the key names, since a
safetensors file stores its keys sorted), pair with the model's modules in order; each pair must have
the same parameter names and shapes. Also: reading checkpoint files without running pickled code,
telling a checkpoint's format from its keys, and the reports of what did not fit.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smallnets.models import build_model
from smallnets.pretrained.formats import FORMATS, WeightFormat
from smallnets.registry import model_spec, resolve_knobs

__all__ = ["PretrainedMismatch", "convert_state_dict", "detect_format", "model_modules", "read_checkpoint", "source_modules"]


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
    if path.suffix == ".sncz":  # smallnets' compressed weights, decoded
        from smallnets.checkpoint import read_weights

        sd: Any = read_weights(path)[2]
    elif path.suffix == ".safetensors":
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
    # torchvision ResNet / ResNeXt: the network, a basic block and a bottleneck (with and without downsample)
    ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"),
    ("conv1", "bn1", "conv2", "bn2"),
    ("conv1", "bn1", "conv2", "bn2", "downsample"),
    ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"),
    ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample"),
    # torchvision GoogLeNet / Inception v3: BasicConv2d (conv before bn), GoogLeNet's top level, InceptionA
    ("conv", "bn"),
    ("conv1", "conv2", "conv3", *(f"inception{m}" for m in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")), "fc"),
    ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool"),
    # timm DPN: a dual path block, with and without its projection (c1x1_w_s1 / _s2: the block that opens a stage)
    ("c1x1_w_s1", "c1x1_a", "c3x3_b", "c1x1_c"),
    ("c1x1_w_s2", "c1x1_a", "c3x3_b", "c1x1_c"),
    ("c1x1_a", "c3x3_b", "c1x1_c"),
)
_ORDER_BY_SET = {frozenset(order): order for order in _SIBLING_ORDER}
# Where one set of siblings comes in two orders, the parent's name decides: timm DPN's pre-activation
# BnActConv2d (c1x1_a, c3x3_b, ...) registers bn before conv; everywhere else (GoogLeNet's BasicConv2d, DPN's stem) conv before bn.
_ORDER_BY_PARENT: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = ((re.compile(r"c\d+x\d+_\w+"), ("bn", "conv")),)


def _natural(name: str) -> tuple:
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def _order_children(names: Sequence[str], parent: str = "") -> list[str]:
    numbered = sorted((n for n in names if n.isdigit()), key=int)
    named = [n for n in names if not n.isdigit()]
    last = parent.rpartition(".")[2]
    known = next((o for pat, o in _ORDER_BY_PARENT if pat.fullmatch(last) and set(o) == set(named)), None)
    known = known or _ORDER_BY_SET.get(frozenset(named))
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
    rank: dict[str, dict[str, int]] = {parent: {c: i for i, c in enumerate(_order_children(sorted(kids), parent))} for parent, kids in children.items()}

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
    """State-dict prefix of the layer a new number of classes replaces: the zoo model says which
    (``SmallNet.classifier_layer``); any other module: its last layer with a weight."""
    if hasattr(model, "classifier_layer"):
        return model.classifier_layer()
    keys = [k for k in model.state_dict() if k.endswith(".weight")]
    return keys[-1].rpartition(".")[0] if keys else None


def _num_classes_in(src: Mapping[str, torch.Tensor], theirs: Sequence[tuple[str, list[str]]]) -> int:
    """Outputs of the checkpoint's last layer; ``theirs``: ``source_modules(src)``."""
    return int(src[f"{theirs[-1][0]}.weight"].shape[0])


def _checkpoint_classes(src: Mapping[str, torch.Tensor], fmt: WeightFormat) -> int:
    """Outputs of the checkpoint's classifier (smallnets' own files: as their sidecar records)."""
    if fmt.num_classes is not None:
        return fmt.num_classes
    kept = fmt.kept(src)[0] if fmt.drop_keys else src  # an auxiliary head is not the classifier
    return _num_classes_in(kept, source_modules(list(kept)))


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


def build_named(name: str, *, num_classes: int | None = None, in_chans: int | None = None, **knobs: Any) -> nn.Module:
    """The zoo model ``name`` with ``knobs``, freshly initialised and recording how it was built, as
    ``smallnets.zoo.create_model`` builds it (which this package cannot call: zoo imports it)."""
    spec = model_spec(name, num_classes, in_chans, **knobs)
    model = build_model(spec)
    model.smallnets_config = {"name": name, "num_classes": spec.num_classes, "in_chans": spec.in_chans, "knobs": resolve_knobs(name, knobs)}
    return model


@lru_cache(maxsize=None)
def _meta_state(model: str, knobs_items: tuple, num_classes: int) -> dict[str, tuple]:
    with torch.device("meta"):
        m = build_named(model, num_classes=num_classes, **dict(knobs_items))
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

    def fits(f: WeightFormat) -> bool:
        if not f.drop_keys:
            return _fits(f, state_dict, theirs, num_classes)
        kept, dropped = f.kept(state_dict)
        if not dropped:
            return _fits(f, state_dict, theirs, num_classes)
        order = source_modules(list(kept))
        return bool(order) and _fits(f, kept, order, _num_classes_in(kept, order))

    hits = [f.name for f in FORMATS.values() if f.detect and fits(f)]
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
