"""Argument checks for the public boundary: each error names the argument, the rule and the value."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from numbers import Real


def _is_number(value: object) -> bool:
    """A real, finite number (not a bool): NaN and infinities are never a valid setting."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_finite(name: str, value: object) -> None:
    """Float settings must be finite: ``inf`` overflows later, ``nan`` compares false everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_positive(name: str, value: object) -> None:
    check_finite(name, value)
    if not _is_number(value) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_range(name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    check_finite(name, value)
    if _is_number(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if above and below:
            return
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")


def check_int(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}{suggest(value, choices)}")


def suggest(value: object, candidates: Iterable[object]) -> str:
    """'; did you mean ...?' for near misses, else ''."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in candidates], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_bool(name: str, value: object) -> None:
    """Flags must be real booleans: 0/1 or 'false' would silently mean something else."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
