"""Checkpoints from the web: downloaded once into the cache (resumable, with a progress bar), checked
against a SHA-256 (a full digest, or the prefix torch.hub file names carry), and found offline."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from smallnets._paths import cache_root

__all__ = ["default_cache_dir", "fetch_checkpoint"]


def default_cache_dir() -> Path:
    """Where downloaded checkpoints are kept: ``weights/`` in smallnets' cache (see ``smallnets._paths.cache_root``)."""
    return cache_root() / "weights"


def _offline_default() -> bool:
    return os.environ.get("SMALLNETS_OFFLINE", "").lower() in ("1", "true", "yes")


def fetch_checkpoint(
    url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None, offline: bool | None = None, progress: bool = True
) -> Path:
    """The local copy of ``url`` in the cache, downloading (resumably) if needed; checked against ``sha256``.

    Offline (``offline=True`` or ``SMALLNETS_OFFLINE=1``) only the cache is used, and a missing
    file is a clear error rather than a network timeout.
    """
    from smallnets.data.download import ChecksumError, download, file_digest

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ValueError(f"source must be a local file or an http(s) URL, got {url!r}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    name = os.path.basename(parsed.path) or "checkpoint"
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]  # two URLs ending in the same file name never collide
    dest = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()  # "~/models" means the home folder
    dest = dest / f"{tag}-{name}"
    # torch.hub's convention: NAME-<first hex digits of the SHA-256>.EXT, checked when no full digest is given
    m = re.search(r"-([0-9a-f]{8,64})\.[a-z]+$", name)
    prefix = m.group(1) if m and sha256 is None else None
    offline = _offline_default() if offline is None else offline
    if not dest.exists():
        if offline:
            raise FileNotFoundError(f"offline: {url} is not in the cache ({dest}); download it once online, or pass a local file")
        download(url, dest, sha256=sha256, progress=progress)
        if prefix is not None and not file_digest(dest, "sha256").startswith(prefix):
            dest.unlink()
            raise ChecksumError(f"{url}: the downloaded file's SHA-256 does not start with {prefix}, as its name says; it was deleted")
    elif sha256 is not None and file_digest(dest, "sha256") != sha256:
        raise ChecksumError(f"{dest}: cached copy of {url} does not match sha256 {sha256}; delete it to download again")
    return dest
