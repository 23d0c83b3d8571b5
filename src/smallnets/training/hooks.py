"""Step hooks: code that runs inside the trainer's loop at fixed points (gradual pruning, weight
sharing, gradient surgery), without a copy of the loop.

A hook is any object with any subset of the methods of :class:`TrainHook`; the trainer calls only
those it has, on every rank, always with the unwrapped module (never the DDP or compiled wrapper).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from torch import nn

__all__ = ["HOOK_METHODS", "Hooks", "TrainHook"]

HOOK_METHODS = ("start", "after_backward", "after_step", "describe")


class TrainHook(Protocol):
    """The methods a hook may have (any subset of them; the trainer calls only those that exist).

    ``step`` is the 0-based global optimizer step: 0 for the run's first step, continuing across
    epochs and resumes.
    """

    def start(self, model: nn.Module, total_steps: int) -> None:
        """Once per ``fit()``, before its first step (after a resume too: the model holds the resumed
        weights then); ``total_steps`` is the whole run's, epochs x steps per epoch."""

    def after_backward(self, model: nn.Module, step: int) -> None:
        """Gradients are ready and unscaled (after GradScaler.unscale_ and gradient clipping, if any;
        under torchrun already averaged over ranks), before ``optimizer.step``."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Right after ``optimizer.step`` (also when fp16's GradScaler skipped it), before the EMA update."""

    def describe(self) -> dict[str, Any]:
        """What config.json and run.json record about the hook (default: its class name)."""


class Hooks:
    """The trainer's hooks, each method bound once: ``hooks.call('after_step', model, step)``."""

    def __init__(self, hooks: Iterable[Any] = ()):
        if isinstance(hooks, (str, bytes, nn.Module)) or not isinstance(hooks, Iterable):
            raise TypeError(f"hooks must be a sequence of hook objects (with any of {', '.join(HOOK_METHODS)}), "
                            f"got {type(hooks).__qualname__}")  # fmt: skip
        self.hooks = tuple(hooks)
        self._bound: dict[str, list] = {name: [] for name in HOOK_METHODS}
        for i, hook in enumerate(self.hooks):
            present = [name for name in HOOK_METHODS if getattr(hook, name, None) is not None]
            if not present:
                raise TypeError(f"hooks[{i}] must have at least one of the methods {', '.join(HOOK_METHODS)}, got a {type(hook).__qualname__} with none")
            for name in present:
                method = getattr(hook, name)
                if not callable(method):
                    raise TypeError(f"hooks[{i}].{name} must be a method, got {type(method).__qualname__}")
                self._bound[name].append(method)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def has(self, name: str) -> bool:
        return bool(self._bound[name])

    def call(self, name: str, *args: Any) -> None:
        for method in self._bound[name]:
            method(*args)

    def describe(self) -> list[dict[str, Any]]:
        """One record per hook: its class name, updated by its own ``describe()``."""
        out = []
        for hook in self.hooks:
            own = getattr(hook, "describe", None)
            out.append({"name": type(hook).__qualname__, **(dict(own()) if own is not None else {})})
        return out

    def names(self) -> list[str]:
        return [record["name"] for record in self.describe()]
