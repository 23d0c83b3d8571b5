"""Unstructured magnitude pruning: one shot (global or per layer) or gradual on the cubic schedule of
Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for model compression"
(arXiv:1710.01878, eq. 1).

Pruning here only writes zeros into the existing weight tensors: no parametrizations, no forward
hooks, no ``weight_orig``/``weight_mask`` buffers, so state-dict keys (a public format) stay exactly
as they were. The masks are plain boolean tensors keyed by state-dict name (True = weight kept);
storing the zeros sparsely is the compressed file format's job.

Hand-written training loop with gradual pruning (the Trainer makes the same three calls)::

    hook = GradualPruning(0.9, begin=0.1, end=0.75, frequency=100)
    hook.start(model, total_steps)             # once; masks rebuilt from zeros already in the weights
    for step, (x, y) in enumerate(batches):    # step: 0-based index of this optimizer step
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        hook.after_backward(model, step)       # pruned weights get zero gradient (before clipping)
        optimizer.step()
        hook.after_step(model, step)           # re-zero pruned weights; prune more at schedule knots
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch
from torch import nn

from smallnets._checks import check_bool, check_choice, check_int, check_range, suggest
from smallnets.profiler import _check_input_size, count_layers, layer_kind

__all__ = [
    "GradualPruning",
    "apply_masks",
    "cubic_sparsity",
    "magnitude_masks",
    "prunable_weights",
    "prune_magnitude",
    "sparsity_report",
]

SCOPES = ("global", "per_layer")
KINDS = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "linear": (nn.Linear,)}  # the layers the profiler counts MACs of
MACS_NOTE = (
    "macs: conv and linear mult-adds for one image at input_size (the profiler's convention); "
    "a zero weight skips one MAC at every output position it is applied at"
)


# --------------------------------------------------------------------------------------------
# Argument checks


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_sparsity(name: str, value: object) -> None:
    check_range(name, value, 0, 1, high_open=True)


def _check_names(name: str, value: object) -> tuple[str, ...]:
    """A sequence of strings; a bare string would silently iterate over its characters."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a sequence of strings (a list or tuple), got {value!r}")
    return tuple(value)


def _check_include(include: object) -> tuple[str, ...]:
    include = _check_names("include", include)
    if not include:
        raise ValueError("include must name at least one of 'conv', 'linear', got ()")
    for kind in include:
        check_choice("include entries", kind, KINDS)
    return include


def _unknown(name: str, value: object, known: Sequence[str], what: str = "prunable weights") -> ValueError:
    hint = suggest(value, known)
    if not hint and isinstance(value, str):  # long dotted names differ in many places: a looser cutoff
        close = difflib.get_close_matches(value, list(known), n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"{name} must name {what} of the model (state-dict names, e.g. {known[0]!r}), got {value!r}{hint}")


# --------------------------------------------------------------------------------------------
# Which weights


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, KINDS["conv"]) and module.groups > 1 and module.groups == module.in_channels


def prunable_weights(model: nn.Module, *, include: Sequence[str] = ("conv", "linear"),
                     skip_depthwise: bool = False) -> dict[str, nn.Parameter]:  # fmt: skip
    """The weights magnitude pruning applies to, by state-dict name, in model order.

    ``include`` picks the layer types: "conv" (Conv1d/2d/3d) and "linear" (Linear). Biases and
    normalisation parameters are never pruned. Depthwise convolutions (groups == in_channels > 1)
    are included unless ``skip_depthwise``. A weight shared by several modules is listed once, under
    its first name.
    """
    _check_model(model)
    include = _check_include(include)
    check_bool("skip_depthwise", skip_depthwise)
    types = tuple(t for kind in include for t in KINDS[kind])
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, types) or (skip_depthwise and _is_depthwise(module)):
            continue
        weight = module.weight
        if not isinstance(weight, nn.Parameter) or id(weight) in seen:
            continue
        seen.add(id(weight))
        found[f"{name}.weight" if name else "weight"] = weight
    return found


# --------------------------------------------------------------------------------------------
# Masks


def _resolve_protect(protect: object, names: Sequence[str]) -> set[str]:
    protected: set[str] = set()
    for pattern in _check_names("protect", protect):
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise _unknown("protect", pattern, names)
        protected.update(hits)
    return protected


def _resolve_overrides(layer_sparsity: object, names: Sequence[str], protected: set[str]) -> dict[str, float]:
    if layer_sparsity is None:
        return {}
    if not isinstance(layer_sparsity, Mapping):
        raise TypeError(f"layer_sparsity must be a mapping of weight name to sparsity, got {layer_sparsity!r}")
    known = set(names)
    for name, value in layer_sparsity.items():
        if not isinstance(name, str) or name not in known:
            raise _unknown("layer_sparsity", name, names)
        if name in protected:
            raise ValueError(f"layer_sparsity and protect must not both name a weight, got {name!r} in both")
        _check_sparsity(f"layer_sparsity[{name!r}]", value)
    return {name: float(value) for name, value in layer_sparsity.items()}


def _magnitudes(weights: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """|w| of the named weights, flattened and concatenated in order, on the first one's device."""
    first = weights[names[0]]
    dtype = torch.float64 if any(weights[n].dtype == torch.float64 for n in names) else torch.float32
    parts = [weights[n].detach().reshape(-1).to(device=first.device, dtype=dtype).abs() for n in names]
    values = torch.cat(parts)
    if not bool(torch.isfinite(values).all()):
        bad = next(n for n, p in zip(names, parts) if not bool(torch.isfinite(p).all()))
        raise ValueError(f"weights must be finite to be pruned by magnitude, got NaN or inf in {bad!r}")
    return values


def _smallest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean: True at exactly ``count`` smallest values; ties go to the earlier position."""
    chosen = torch.zeros_like(values, dtype=torch.bool)
    if count <= 0:
        return chosen
    if count >= values.numel():
        return ~chosen
    threshold = torch.kthvalue(values, count).values
    chosen = values < threshold
    need = count - int(chosen.sum())
    ties = torch.nonzero(values == threshold).flatten()[:need]
    chosen[ties] = True
    return chosen


def _prune_group(weights: Mapping[str, torch.Tensor], names: Sequence[str], sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks for ``names`` pruned together under one threshold: round(sparsity * their total)."""
    values = _magnitudes(weights, names)
    pruned = _smallest(values, round(sparsity * values.numel()))
    masks, start = {}, 0
    for name in names:
        w = weights[name]
        masks[name] = (~pruned[start : start + w.numel()]).reshape(w.shape).to(w.device)
        start += w.numel()
    return masks


def magnitude_masks(model: nn.Module, sparsity: float, *, scope: str = "global",
                    layer_sparsity: Mapping[str, float] | None = None, protect: Sequence[str] = (),
                    include: Sequence[str] = ("conv", "linear"), skip_depthwise: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """Boolean keep-masks (True = kept) that remove the smallest-magnitude weights.

    ``sparsity`` in [0, 1) is the fraction removed from the pool: the prunable weights
    (:func:`prunable_weights` with ``include``/``skip_depthwise``) that are neither protected nor
    overridden. ``scope="global"``: one threshold over the whole pool, exactly
    round(sparsity * pool size) weights removed (ties broken by position: earlier layers, then
    earlier elements, go first), so layers with larger weights lose fewer. ``scope="per_layer"``:
    every pool layer loses round(sparsity * its size). ``layer_sparsity`` gives named layers their
    own fraction (pruned within the layer, outside the pool); ``protect`` lists state-dict names or
    fnmatch patterns never pruned (their masks are all True). Weights that are already zero have the
    smallest magnitude, so they count as pruned first. The model is not changed.

    Returns a mask for every prunable weight, on its device, keyed by state-dict name.
    """
    _check_model(model)
    _check_sparsity("sparsity", sparsity)
    check_choice("scope", scope, SCOPES)
    weights = prunable_weights(model, include=include, skip_depthwise=skip_depthwise)
    names = list(weights)
    if not names:
        raise ValueError(f"model must have prunable weights (Conv1d/2d/3d or Linear, include={tuple(include)!r}, "
                         f"skip_depthwise={skip_depthwise}), got none in {type(model).__name__}")  # fmt: skip
    protected = _resolve_protect(protect, names)
    overrides = _resolve_overrides(layer_sparsity, names, protected)
    masks = {n: torch.ones_like(weights[n], dtype=torch.bool) for n in protected}
    for name, fraction in overrides.items():
        masks.update(_prune_group(weights, [name], fraction))
    pool = [n for n in names if n not in protected and n not in overrides]
    if pool and scope == "global":
        masks.update(_prune_group(weights, pool, float(sparsity)))
    else:
        for name in pool:
            masks.update(_prune_group(weights, [name], float(sparsity)))
    return {n: masks[n] for n in names}


def _check_masks(masks: object, known: Mapping[str, torch.Tensor], what: str) -> Mapping[str, torch.Tensor]:
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of state-dict name to boolean tensor, got {type(masks).__name__}")
    names = list(known)
    for name, mask in masks.items():
        if name not in known:
            if not names:
                raise ValueError(f"masks must name {what} of the model, got {name!r} (the model has none)")
            raise _unknown("masks", name, names, what)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"masks[{name!r}] must be a boolean tensor (True = kept), got {mask!r:.80}")
        if mask.shape != known[name].shape:
            raise ValueError(f"masks[{name!r}] must have the weight's shape {tuple(known[name].shape)}, got {tuple(mask.shape)}")
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, every weight whose mask is False; nothing else about the model changes."""
    _check_model(model)
    params = dict(model.named_parameters())
    for name, mask in _check_masks(masks, params, "parameters").items():
        params[name].masked_fill_(~mask.to(params[name].device), 0)


# --------------------------------------------------------------------------------------------
# Report


def _macs_per_weight(model: nn.Module, weights: Mapping[str, nn.Parameter], input_size, macs_per_weight) -> dict[str, float] | None:
    if input_size is not None and macs_per_weight is not None:
        raise ValueError("input_size and macs_per_weight must not both be given (one measures what the other states), "
                         f"got input_size={input_size!r} and macs_per_weight")  # fmt: skip
    names = list(weights)
    if macs_per_weight is not None:
        if not isinstance(macs_per_weight, Mapping):
            raise TypeError(f"macs_per_weight must be a mapping of weight name to MACs per weight, got {macs_per_weight!r}")
        for name, value in macs_per_weight.items():
            if name not in weights:
                raise _unknown("macs_per_weight", name, names)
            if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"macs_per_weight[{name!r}] must be a finite number >= 0, got {value!r}")
        missing = [n for n in names if n not in macs_per_weight]
        if missing:
            raise ValueError(f"macs_per_weight must cover every prunable weight, got none for {missing[:3]!r}"
                             f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}")  # fmt: skip
        return {n: float(macs_per_weight[n]) for n in names}
    if input_size is None:
        return None
    size = _check_input_size(input_size)
    by_id = {id(p): n for n, p in weights.items()}
    modules = dict(model.named_modules())
    macs = dict.fromkeys(names, 0)
    for record in count_layers(model, size):  # a module called twice appears twice: its MACs add up
        name = by_id.get(id(modules[record.name].weight))
        if name is not None:
            macs[name] += record.macs
    return {n: macs[n] / weights[n].numel() for n in names}


@torch.no_grad()
def sparsity_report(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, *,
                    input_size: int | tuple[int, int, int] | None = None,
                    macs_per_weight: Mapping[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """Weights, zeros and sparsity of every conv / linear weight and in total.

    A weight counts as zero if it is zero now or its mask (when ``masks`` is given) is False: what
    the model holds once the masks are applied. With ``input_size`` (C, H, W) one zero image is run
    through the model (eval, no grad) to measure how many MACs each weight takes part in (a conv's
    output H*W per call); ``macs_per_weight`` states those counts instead. Either adds each layer's
    ``macs`` and ``macs_skipped`` and the total ``macs_skipped_fraction``; without them they are None.
    """
    _check_model(model)
    weights = prunable_weights(model)
    if masks is not None:
        masks = _check_masks(masks, weights, "conv or linear weights")
    per_weight = _macs_per_weight(model, weights, input_size, macs_per_weight)
    modules = {id(m.weight): m for m in model.modules() if isinstance(m, KINDS["conv"] + KINDS["linear"])}
    layers: dict[str, dict[str, Any]] = {}
    for name, w in weights.items():
        zero = w == 0
        if masks is not None and name in masks:
            zero |= ~masks[name].to(w.device)
        zeros = int(zero.sum())
        row = {"kind": layer_kind(modules[id(w)]), "shape": list(w.shape), "weights": w.numel(), "zeros": zeros,
               "sparsity": zeros / w.numel(), "macs": None, "macs_skipped": None}  # fmt: skip
        if per_weight is not None:
            row["macs"] = round(per_weight[name] * w.numel())
            row["macs_skipped"] = round(per_weight[name] * zeros)
        layers[name] = row
    total_weights = sum(r["weights"] for r in layers.values())
    total_zeros = sum(r["zeros"] for r in layers.values())
    total: dict[str, Any] = {"weights": total_weights, "zeros": total_zeros,
                             "sparsity": total_zeros / total_weights if total_weights else 0.0,
                             "macs": None, "macs_skipped": None, "macs_skipped_fraction": None}  # fmt: skip
    if per_weight is not None:
        total["macs"] = sum(r["macs"] for r in layers.values())
        total["macs_skipped"] = sum(r["macs_skipped"] for r in layers.values())
        total["macs_skipped_fraction"] = total["macs_skipped"] / total["macs"] if total["macs"] else 0.0
    report: dict[str, Any] = {"layers": layers, "total": total}
    if per_weight is not None:
        report["input_size"] = list(_check_input_size(input_size)) if input_size is not None else None
        report["macs_convention"] = MACS_NOTE
    return report


# --------------------------------------------------------------------------------------------
# One shot


def prune_magnitude(model: nn.Module, sparsity: float, *, scope: str = "global",
                    layer_sparsity: Mapping[str, float] | None = None, protect: Sequence[str] = (),
                    include: Sequence[str] = ("conv", "linear"), skip_depthwise: bool = False,
                    inplace: bool = False, input_size: int | tuple[int, int, int] | None = None,
                    macs_per_weight: Mapping[str, float] | None = None) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """One-shot magnitude pruning: :func:`magnitude_masks` applied to a deep copy of ``model``
    (to ``model`` itself with ``inplace=True``). Returns the pruned model and its
    :func:`sparsity_report` (MACs with ``input_size``), with the settings under "pruning"."""
    _check_model(model)
    check_bool("inplace", inplace)
    masks = magnitude_masks(model, sparsity, scope=scope, layer_sparsity=layer_sparsity, protect=protect,
                            include=include, skip_depthwise=skip_depthwise)  # fmt: skip
    out = model if inplace else copy.deepcopy(model)
    apply_masks(out, masks)
    report = sparsity_report(out, input_size=input_size, macs_per_weight=macs_per_weight)
    report["pruning"] = {"method": "magnitude, one shot", "sparsity": float(sparsity), "scope": scope,
                         "layer_sparsity": dict(layer_sparsity or {}), "protect": list(protect),
                         "include": list(include), "skip_depthwise": skip_depthwise}  # fmt: skip
    return out, report


# --------------------------------------------------------------------------------------------
# Gradual (Zhu & Gupta 2017)


def cubic_sparsity(step: int, *, initial: float = 0.0, final: float, begin_step: int, end_step: int, frequency: int) -> float:
    """Zhu & Gupta's eq. 1: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3.

    ``step`` (t) counts optimizer steps done. The sparsity is updated at the knots
    t0 = ``begin_step``, t0 + dt, t0 + 2 dt, ... (dt = ``frequency``) and at ``end_step`` = t0 + n dt,
    and held constant in between; it is ``initial`` before t0 and ``final`` from ``end_step`` on.
    When end_step - begin_step is not a multiple of dt (the paper assumes it is), the last interval
    is shorter and n dt means end_step - begin_step.
    """
    check_int("step", step, minimum=0)
    _check_sparsity("initial", initial)
    _check_sparsity("final", final)
    if initial > final:
        raise ValueError(f"initial must be <= final (pruning only adds zeros), got initial={initial!r} and final={final!r}")
    check_int("begin_step", begin_step, minimum=0)
    if not isinstance(end_step, int) or isinstance(end_step, bool) or end_step <= begin_step:
        raise ValueError(f"end_step must be an integer > begin_step={begin_step}, got {end_step!r}")
    check_int("frequency", frequency, minimum=1)
    if step < begin_step:
        return float(initial)
    if step >= end_step:
        return float(final)
    knot = begin_step + (step - begin_step) // frequency * frequency
    progress = (knot - begin_step) / (end_step - begin_step)
    value = final + (initial - final) * (1.0 - progress) ** 3
    return min(max(value, float(initial)), float(final))  # at t0, s_f + (s_i - s_f) can round below s_i


def _check_when(name: str, value: object) -> None:
    """A fraction of the run (float in [0, 1]) or an absolute step (int >= 0)."""
    fraction = isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0
    step = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if not (fraction or step):
        raise ValueError(f"{name} must be a fraction of the total steps (a float in [0, 1]) or a step (an int >= 0), got {value!r}")


class GradualPruning:
    """Trainer hook: magnitude pruning that grows from ``initial_sparsity`` to ``final_sparsity`` on
    Zhu & Gupta's cubic schedule (:func:`cubic_sparsity`), updated every ``frequency`` steps.

    ``begin`` and ``end`` are fractions of the run (floats in [0, 1], of ``total_steps`` given to
    :meth:`start`) or absolute step counts (ints). The sparsity is that of :func:`magnitude_masks`
    with ``scope``, ``protect``, ``include`` and ``skip_depthwise``: exactly the scheduled count is
    zero after each update. Pruned weights stay pruned (masks only grow) and stay exactly zero.

    The hook keeps no state that needs saving: :meth:`start` (or the first call without it) takes
    the zeros already in the weights as the pruned set, so a run resumed from a checkpoint carries
    on where it stopped; the sparsity due at the current step is caught up on at the first
    :meth:`after_step`. Weights that are exactly zero for another reason (a zero initialisation)
    are taken as pruned too.

    Calls, with ``step`` the 0-based index of the optimizer step being taken:
    ``start(model, total_steps)`` once before training; ``after_backward(model, step)`` when the
    gradients are ready, before clipping and ``optimizer.step()`` (pruned weights get zero
    gradient); ``after_step(model, step)`` after ``optimizer.step()`` (pruned weights are zeroed
    again, since momentum and weight decay move them, and at a knot of the schedule more are
    pruned). An EMA copy of the weights is not masked by the hook: apply :attr:`masks` to it.
    """

    def __init__(self, final_sparsity: float, *, initial_sparsity: float = 0.0, begin: float | int = 0.0,
                 end: float | int = 0.75, frequency: int = 100, scope: str = "global", protect: Sequence[str] = (),
                 include: Sequence[str] = ("conv", "linear"), skip_depthwise: bool = False) -> None:  # fmt: skip
        _check_sparsity("final_sparsity", final_sparsity)
        _check_sparsity("initial_sparsity", initial_sparsity)
        if initial_sparsity > final_sparsity:
            raise ValueError(f"initial_sparsity must be <= final_sparsity (pruning only adds zeros), "
                             f"got {initial_sparsity!r} > {final_sparsity!r}")  # fmt: skip
        _check_when("begin", begin)
        _check_when("end", end)
        if type(begin) is type(end) and not end > begin:
            raise ValueError(f"end must be after begin, got begin={begin!r} and end={end!r}")
        check_int("frequency", frequency, minimum=1)
        check_choice("scope", scope, SCOPES)
        self.final_sparsity = float(final_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.begin, self.end, self.frequency, self.scope = begin, end, frequency, scope
        self.protect = _check_names("protect", protect)
        self.include = _check_include(include)
        check_bool("skip_depthwise", skip_depthwise)
        self.skip_depthwise = skip_depthwise
        self.total_steps: int | None = None
        self.begin_step: int | None = None
        self.end_step: int | None = None
        self._pruned: dict[str, torch.Tensor] | None = None  # True = pruned (the inverse of a keep-mask)
        self._level: float | None = None  # sparsity the masks were last computed at; None = taken from zeros
        self._counts = (0, 0)  # (pruned, weights) after the last update

    # -- schedule ------------------------------------------------------------------------------

    def _resolve(self, total_steps: int | None) -> None:
        steps = {}
        for name, value in (("begin", self.begin), ("end", self.end)):
            if isinstance(value, float):
                if total_steps is None:
                    raise ValueError(f"{name} is a fraction of the run ({value!r}): call start(model, total_steps) first, "
                                     f"or give {name} as an int step")  # fmt: skip
                steps[name] = round(value * total_steps)
            else:
                steps[name] = value
        if not steps["end"] > steps["begin"]:
            raise ValueError(f"end must be after begin, got begin={self.begin!r} (step {steps['begin']}) and "
                             f"end={self.end!r} (step {steps['end']}) with total_steps={total_steps!r}")  # fmt: skip
        if total_steps is not None and steps["end"] > total_steps:
            raise ValueError(f"end must be within total_steps={total_steps} (the final sparsity would never be reached), "
                             f"got end={self.end!r}")  # fmt: skip
        self.begin_step, self.end_step = steps["begin"], steps["end"]

    def sparsity_at(self, steps_done: int) -> float:
        """The scheduled sparsity once ``steps_done`` optimizer steps are complete."""
        if self.end_step is None:
            self._resolve(self.total_steps)
        return cubic_sparsity(steps_done, initial=self.initial_sparsity, final=self.final_sparsity,
                              begin_step=self.begin_step, end_step=self.end_step, frequency=self.frequency)  # fmt: skip

    # -- masks ---------------------------------------------------------------------------------

    def _weights(self, model: nn.Module) -> dict[str, nn.Parameter]:
        weights = prunable_weights(model, include=self.include, skip_depthwise=self.skip_depthwise)
        if self._pruned is not None and weights.keys() != self._pruned.keys():
            theirs, ours = sorted(weights.keys() - self._pruned.keys()), sorted(self._pruned.keys() - weights.keys())
            raise ValueError(f"model must have the prunable weights it had at start (pass the same module, not a wrapper), "
                             f"got new {theirs[:3]!r} and missing {ours[:3]!r}")  # fmt: skip
        return weights

    def _from_zeros(self, model: nn.Module) -> None:
        weights = prunable_weights(model, include=self.include, skip_depthwise=self.skip_depthwise)
        protected = _resolve_protect(self.protect, list(weights)) if weights else set()
        with torch.no_grad():
            self._pruned = {n: torch.zeros_like(w, dtype=torch.bool) if n in protected else w == 0 for n, w in weights.items()}
        self._level = None
        self._counts = (sum(int(p.sum()) for p in self._pruned.values()), sum(w.numel() for w in weights.values()))

    def _ensure(self, model: nn.Module, step: int) -> dict[str, nn.Parameter]:
        _check_model(model)
        check_int("step", step, minimum=0)
        if self._pruned is None:
            self._resolve(self.total_steps)
            self._from_zeros(model)
        return self._weights(model)

    @torch.no_grad()
    def _zero(self, weights: Mapping[str, nn.Parameter]) -> None:
        for name, w in weights.items():
            pruned = self._pruned[name]
            if pruned.device != w.device:  # the model moved after start
                pruned = self._pruned[name] = pruned.to(w.device)
            w.masked_fill_(pruned, 0)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Current keep-masks (True = kept) by state-dict name; empty before the first call."""
        return {n: ~p for n, p in (self._pruned or {}).items()}

    # -- the trainer's calls -------------------------------------------------------------------

    def start(self, model: nn.Module, total_steps: int) -> None:
        """Before training: resolve begin/end against ``total_steps`` and take the zeros already in
        the weights (a resumed run's) as pruned."""
        _check_model(model)
        check_int("total_steps", total_steps, minimum=1)
        self.total_steps = total_steps
        self._resolve(total_steps)
        self._from_zeros(model)

    @torch.no_grad()
    def after_backward(self, model: nn.Module, step: int) -> None:
        """Gradients ready, before clipping and optimizer.step(): pruned weights get zero gradient."""
        weights = self._ensure(model, step)
        for name, w in weights.items():
            if w.grad is not None:
                pruned = self._pruned[name]
                w.grad.masked_fill_(pruned.to(w.grad.device), 0)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """After optimizer.step() of step ``step``: re-zero pruned weights; at a knot, prune up to
        the sparsity scheduled for ``step + 1`` steps done."""
        weights = self._ensure(model, step)
        self._zero(weights)
        target = self.sparsity_at(step + 1)
        if self._level is not None and target <= self._level:
            return
        if not weights:
            raise ValueError(f"model must have prunable weights (include={self.include!r}, skip_depthwise={self.skip_depthwise}), "
                             f"got none in {type(model).__name__}")  # fmt: skip
        keep = magnitude_masks(model, target, scope=self.scope, protect=self.protect, include=self.include,
                               skip_depthwise=self.skip_depthwise)  # fmt: skip
        for name, mask in keep.items():  # zeros count as pruned first, so this only adds to the pruned set
            self._pruned[name] |= ~mask.to(self._pruned[name].device)
        self._zero(weights)
        self._level = target
        self._counts = (sum(int(p.sum()) for p in self._pruned.values()), sum(w.numel() for w in weights.values()))

    def describe(self) -> dict[str, Any]:
        pruned, total = self._counts
        return {
            "method": "gradual magnitude pruning, cubic schedule (Zhu & Gupta 2017, eq. 1)",
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin": self.begin,
            "end": self.end,
            "begin_step": self.begin_step,  # resolved at start (None before)
            "end_step": self.end_step,
            "frequency": self.frequency,  # optimizer steps between updates
            "scope": self.scope,
            "protect": list(self.protect),
            "include": list(self.include),
            "skip_depthwise": self.skip_depthwise,
            "sparsity": self._level,  # scheduled sparsity of the last update; None until the first
            "pruned": pruned,
            "weights": total,
        }
