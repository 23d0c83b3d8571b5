"""One progress line for every long task (training epochs, downloads, hashing, decoding): done/total,
percentage, named fields (loss, lr), rate, elapsed time and ETA, on stderr.

On a terminal the line is redrawn in place. When the stream is a file or a pipe (CI logs, nohup)
a plain line is written at the first update, then at most every ``log_every_s`` seconds, and once
more at the end, so logs stay readable instead of filling with carriage returns.
"""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    """``MM:SS`` or ``H:MM:SS``; ``?`` for an unknown (NaN or infinite) duration."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_bytes(n: float, digits: int = 1) -> str:
    """``n`` bytes in SI units (kB = 1000 B, MB, GB), as model sizes and downloads are usually quoted:
    ``format_bytes(1_500_000) == '1.5 MB'``; ``digits`` after the point above bytes."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """``update(n)`` as work completes; ``close()`` (or leaving a ``with`` block) ends the line.

    ``unit`` is what ``update`` counts (``"bytes"`` prints kB/MB). When the rate should count
    something else than the progress (a training epoch counts steps but rates images), pass
    ``items=`` to ``update`` and name it with ``rate_unit``. ``initial`` is work already done
    before this start (a resumed download or epoch): it counts towards the total, not the rate.
    """

    def __init__(self, desc: str, total: int | None, *, unit: str = "images", rate_unit: str | None = None, enabled: bool = True,
                 stream=None, initial: int = 0, interval: float = 0.25, log_every_s: float = 10.0):  # fmt: skip
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled
        self.rate_unit = rate_unit or unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_every_s
        self.done = self._initial = initial
        self.items = 0
        self.fields: dict[str, str] = {}
        self._start = time.perf_counter()
        self._last = float("-inf")  # never drawn: the first update always is (perf_counter's zero is arbitrary, often the boot)
        self._drawn_at = -1  # ``done`` when the line was last drawn

    def update(self, n: int = 1, *, items: int | None = None, **fields) -> None:
        self.done += n
        self.items += n if items is None else items
        self.fields.update({k: v if isinstance(v, str) else f"{v:.4g}" for k, v in fields.items()})
        now = time.perf_counter()
        # Reaching the total is drawn when it happens, once: a reader that counts bytes consumed can sit
        # at 100% through many more updates (a gzip stream read ahead into its buffer).
        reached = self.total is not None and self.done >= self.total > self.done - n
        if self.enabled and (now - self._last >= self.interval or reached):
            self._last = now
            self._draw(now)

    def rate(self) -> float:
        """``rate_unit`` per second since the start."""
        elapsed = time.perf_counter() - self._start
        return self.items / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        fmt = format_bytes if self.unit == "bytes" else (lambda v: f"{int(v):,}")
        rate = self.items / elapsed
        parts = [f"{self.desc}:"]
        if self.total:
            parts.append(f"{fmt(self.done)}/{fmt(self.total)} ({100.0 * self.done / self.total:.0f}%)")
        else:
            parts.append(f"{fmt(self.done)} {self.unit}" if self.unit != "bytes" else fmt(self.done))
        parts += [f"{k} {v}" for k, v in self.fields.items()]
        parts.append(f"{format_bytes(rate)}/s" if self.rate_unit == "bytes" else f"{rate:,.0f} {self.rate_unit}/s")
        if self.total:
            progress_rate = (self.done - self._initial) / elapsed
            eta = (self.total - self.done) / progress_rate if progress_rate > 0 else float("inf")
            parts.append(f"{format_duration(elapsed)}<{format_duration(eta)}")
        else:
            parts.append(format_duration(elapsed))
        return " ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self.stream.write("\r" + text + "\033[K" if self.tty else text + "\n")
        self.stream.flush()
        self._drawn_at = self.done

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty or self._drawn_at != self.done:  # the final state, once
            self._draw(time.perf_counter())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False  # a second close() is a no-op

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
