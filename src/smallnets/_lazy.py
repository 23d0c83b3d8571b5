"""PEP 562 lazy attributes for a package's ``__init__``: names imported from their modules on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                    missing_hint: Callable[[str, ModuleNotFoundError], Exception | None] | None = None):  # fmt: skip
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each public name to its module;
    the value is cached in ``namespace`` (the package's globals) once imported. ``missing_hint``
    may turn a ModuleNotFoundError into a clearer error (say, which extra to install)."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(names[name])
        except ModuleNotFoundError as e:
            better = missing_hint(name, e) if missing_hint is not None else None
            if better is None:
                raise
            raise better from e
        value = getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
