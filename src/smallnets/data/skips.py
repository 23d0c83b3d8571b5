"""The record of files left out (empty, not an image, undecodable, outside class folders, links not followed): counted, a few named."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable

EMPTY = "empty file"
NOT_IMAGE = "not an image file"
UNREADABLE = "unreadable image"
OUTSIDE = "outside class folders"
UNSAFE = "unsafe path in archive"
LINK_LOOP = "symlink loop"  # a link to a folder it is in
LINK_LISTED = "link to a path already listed under its own name"  # inside the data folder: following it would copy or relabel
LINK_OUTSIDE = "link outside the data folder (follow_links=True follows it)"

_KEEP = 20  # names kept for the record; the warning names the first 5


class SkipLog:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []
        self._seen: set[str] = set()

    def add(self, name: str, reason: str, detail: str = "") -> bool:
        """Record a file once (the loader path meets a bad file again every epoch); True if it is new."""
        if name in self._seen:
            return False
        self._seen.add(name)
        self.counts[reason] += 1
        if len(self.examples) < _KEEP:
            self.examples.append(f"{name} ({reason}{': ' + detail if detail else ''})")
        return True

    def extend(self, items: Iterable[tuple[str, str, str]]) -> None:
        for name, reason, detail in items:
            self.add(name, reason, detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())), "examples": list(self.examples)}

    def warn(self, where: str, stacklevel: int = 3) -> None:
        if not self.total:
            return
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.counts.items()))
        first = "; ".join(self.examples[:5]) + ("; ..." if self.total > 5 else "")
        warnings.warn(f"smallnets.data: skipped {self.total} file(s) {where} ({reasons}): {first}", stacklevel=stacklevel)
