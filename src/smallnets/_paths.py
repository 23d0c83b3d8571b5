"""Where smallnets keeps what it downloads and decodes: one cache root for weights and data sets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder: ``$SMALLNETS_CACHE``, else ``$XDG_CACHE_HOME/smallnets``, else ``~/.cache/smallnets``.

    Pretrained weights go under ``weights/``, decoded data sets under ``tensors/``, ``extracted/``
    and ``datasets/``. An empty variable counts as unset; ``~`` is expanded; a relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG Base Directory spec requires. Read on every call, so a
    variable set after import is honoured.
    """
    own = os.environ.get("SMALLNETS_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "smallnets"
    return Path.home() / ".cache" / "smallnets"
