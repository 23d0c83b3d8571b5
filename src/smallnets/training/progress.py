"""A dependency-free progress line: step counts, running loss, images/s and ETA on stderr.

On a terminal it redraws one line (carriage return); when stderr is a file or a pipe (CI logs,
nohup) it prints a plain line every ``log_every_s`` seconds so logs stay readable.
"""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, *, desc: str = "", enabled: bool = True, stream=None, log_every_s: float = 10.0):
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every_s = log_every_s
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.count = 0
        self.items = 0
        self.fields: dict[str, str] = {}

    def update(self, steps: int = 1, items: int = 0, **fields) -> None:
        self.count += steps
        self.items += items
        self.fields.update({k: v if isinstance(v, str) else f"{v:.4g}" for k, v in fields.items()})
        now = time.perf_counter()
        interval = 0.2 if self.tty else self.log_every_s
        if self.enabled and (now - self.last_draw >= interval or self.count >= self.total):
            self.last_draw = now
            self._draw(now)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.items / elapsed if elapsed > 0 else 0.0

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        eta = (self.total - self.count) * elapsed / self.count if self.count else float("inf")
        pct = 100.0 * self.count / self.total if self.total else 100.0
        extra = " ".join(f"{k} {v}" for k, v in self.fields.items())
        line = (
            f"{self.desc} {self.count}/{self.total} ({pct:3.0f}%) {extra} "
            f"{self.rate():.0f} img/s {format_duration(elapsed)}<{format_duration(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
