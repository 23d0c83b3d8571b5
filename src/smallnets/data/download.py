"""Resumable, checksum-verified downloads: stream to NAME.part, resume it with an HTTP Range request, rename when verified."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from smallnets.progress import Progress

CHUNK = 1 << 20  # bytes per read


class DownloadError(OSError):
    """The server could not be reached or the transfer failed; the partial file is kept for a resume."""


class ChecksumError(ValueError):
    """A downloaded or supplied file does not have the published checksum."""


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
             progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` unless it is there already; verify ``md5``/``sha256`` before the rename.

    Data is streamed to ``dest + '.part'``; if that exists from an interrupted run, only the rest is
    requested (``Range: bytes=N-``). The stable ``.part`` name is what makes resuming possible, so
    this does not use a random temporary name; the final ``os.replace`` is still atomic.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "smallnets"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the partial file may already be complete
            response = None
        else:
            raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not download {url}: {reason}") from e
    if response is not None:
        with response:
            mode = "ab"
            if offset and response.status != 206:
                mode, offset = "wb", 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            try:
                with open(part, mode) as out, Progress(f"downloading {dest.name}", total, unit="bytes", enabled=progress, initial=offset) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"download of {url} interrupted ({e}); run again to resume from {part}") from e
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            got = file_digest(part, algorithm)
            if got != expected.lower():
                part.unlink(missing_ok=True)
                raise ChecksumError(
                    f"{algorithm} of the file downloaded from {url} is {got}, expected {expected}; "
                    f"deleted the partial file {part}. Try again, or place a good copy at {dest}"
                )
    os.replace(part, dest)
    return dest
