"""A one-line progress meter on stderr (count, rate, ETA) for decoding, hashing and downloads."""

from __future__ import annotations

import sys
import time


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


class Progress:
    """``update(n)`` as work completes; redraws at most every ``interval`` seconds; ``close()`` ends the line."""

    def __init__(self, desc: str, total: int | None, *, unit: str = "images", enabled: bool = True, interval: float = 0.25, initial: int = 0):
        self.desc, self.total, self.unit, self.enabled, self.interval = desc, total, unit, enabled, interval
        self.done = initial
        self._initial = initial
        self._start = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def _fmt(self, n: float) -> str:
        return _bytes(n) if self.unit == "bytes" else f"{int(n):,}"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._initial) / elapsed
        rate_s = f"{_bytes(rate)}/s" if self.unit == "bytes" else f"{rate:,.0f} {self.unit}/s"
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
            line = f"{self.desc}: {self._fmt(self.done)}/{self._fmt(self.total)} ({pct:.0f}%) {rate_s} ETA {eta}"
        else:
            line = f"{self.desc}: {self._fmt(self.done)} {rate_s} elapsed {_clock(elapsed)}"
        sys.stderr.write("\r" + line + "\033[K")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
