"""The tensor path's on-disk cache: a source decoded once into uint8 NCHW, in one safetensors file.

Keyed by the source's content (sha256 of the archive, or of the folder's relative paths and
bytes; CIFAR's verified md5s) plus the decode settings, so it is reused across runs and rebuilt
when either changes. The catalog (names, labels, parts) is stored with the pixels, so a cache hit
decodes nothing (and, for archives and CIFAR, does not even list the source).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from smallnets._io import atomic_path
from smallnets._paths import cache_root
from smallnets.data import skips
from smallnets.data.images import UnreadableImageError, center_crop, decode_image, resize_shorter
from smallnets.progress import Progress
from smallnets.data.sources import Catalog

CACHE_FORMAT = 1  # bump when the decode rules or the file layout change
PARTS = ("train", "val", "test")
_CHUNK = 256  # images per decode task
_POOL_MIN = 2048  # below this many images, decoding in-process beats starting workers


def default_cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` when given, else smallnets' cache (``smallnets._paths.cache_root``)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root()


def cache_key(content: str, settings: dict) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "content": content, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def pixel_moments(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the sum of pixel values and of their squares: int64 [M, 2, 3] (exact).

    Stored with the cache so that the mean/std of any training subset costs an index and a sum.
    """
    out = torch.empty((len(images), 2, 3), dtype=torch.int64)
    for start in range(0, len(images), 1024):
        x = images[start : start + 1024].to(torch.int32)
        out[start : start + len(x), 0] = x.sum((2, 3), dtype=torch.int64)
        out[start : start + len(x), 1] = (x * x).sum((2, 3), dtype=torch.int64)
    return out


@dataclass
class TensorCache:
    images: torch.Tensor  # uint8 [M, 3, S, S]: the samples that decoded
    rows: torch.Tensor  # int64 [N]: row in ``images`` of each catalog entry, -1 where decoding failed
    catalog: Catalog
    size: int  # S, px
    decode_skipped: list  # (name, reason, detail) of the entries that failed to decode
    source: dict
    moments: torch.Tensor | None = None  # pixel_moments(images), filled in by ``save``/``load``


def save(path: Path, cache: TensorCache) -> None:
    names = "\0".join(cache.catalog.names).encode("utf-8", "surrogateescape")  # file names need not be UTF-8
    if cache.moments is None:
        cache.moments = pixel_moments(cache.images)
    tensors = {
        "images": cache.images.contiguous(),
        "moments": cache.moments,
        "rows": cache.rows.contiguous(),
        "labels": torch.tensor(cache.catalog.labels, dtype=torch.int64),
        "parts": torch.tensor([PARTS.index(p) for p in cache.catalog.parts], dtype=torch.uint8),
        "names": torch.frombuffer(bytearray(names), dtype=torch.uint8),
    }
    meta = {
        "format": CACHE_FORMAT,
        "catalog": cache.catalog.to_json(),
        "size": cache.size,
        "decode_skipped": [list(s) for s in cache.decode_skipped],
        "source": cache.source,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"smallnets": json.dumps(meta)})


def load(path: Path) -> TensorCache | None:
    """The cache at ``path``, or None when absent; an unreadable file is reported and ignored (rebuilt)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["smallnets"])
        if meta.get("format") != CACHE_FORMAT:
            return None
        t = load_file(str(path))
        names = bytes(t["names"].numpy()).decode("utf-8", "surrogateescape").split("\0")
        catalog = Catalog.from_json(meta["catalog"], names, t["labels"].tolist(), [PARTS[i] for i in t["parts"].tolist()])
        return TensorCache(t["images"], t["rows"], catalog, meta["size"], [tuple(s) for s in meta["decode_skipped"]], meta["source"],
                           moments=t["moments"])
    except Exception as e:
        warnings.warn(f"smallnets.data: ignoring unreadable cache file {path} ({type(e).__name__}: {e}); rebuilding it", stacklevel=3)
        return None


def decode_to_array(data: bytes, name: str, size: int) -> np.ndarray:
    """Encoded bytes -> uint8 HWC at size x size: shorter side resized, center-cropped (make_eval_transform's rule)."""
    return np.asarray(center_crop(resize_shorter(decode_image(data, name), size), size))


def _decode_chunk(task: tuple[int, list]) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
    size, items = task
    positions, arrays, failed = [], [], []
    for pos, name, data in items:
        if isinstance(data, str):  # a read error, already described
            failed.append((pos, data))
            continue
        try:
            arrays.append(decode_to_array(data, name, size))
            positions.append(pos)
        except UnreadableImageError as e:
            failed.append((pos, e.detail))
    return positions, (np.stack(arrays) if arrays else None), failed


def decode_source(source, catalog: Catalog, size: int, *, workers: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Decode every catalog entry of a folder/archive source: (images, rows, decode_skipped)."""
    n = len(catalog)
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    ok = torch.zeros(n, dtype=torch.bool)
    position = {name: i for i, name in enumerate(catalog.names)}
    skipped = []

    def chunks():
        items = []
        for name, data in source.read(list(catalog.names)):
            items.append((position[name], name, data if isinstance(data, bytes) else f"read error: {data}"))
            if len(items) == _CHUNK:
                yield size, items
                items = []
        if items:
            yield size, items

    def take(result, bar):
        positions, arrays, failed = result
        if positions:
            idx = torch.tensor(positions)
            out[idx] = torch.from_numpy(arrays).permute(0, 3, 1, 2)
            ok[idx] = True
        for pos, detail in failed:
            skipped.append((catalog.names[pos], skips.UNREADABLE, detail))
        bar.update(len(positions) + len(failed))

    with Progress("decoding images", n, enabled=progress) as bar:
        if workers > 1 and n >= _POOL_MIN:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
                pending = collections.deque()
                for task in chunks():  # at most 2 tasks per worker in flight: bounded memory
                    pending.append(pool.submit(_decode_chunk, task))
                    if len(pending) >= 2 * workers:
                        take(pending.popleft().result(), bar)
                while pending:
                    take(pending.popleft().result(), bar)
        else:
            for task in chunks():
                take(_decode_chunk(task), bar)
    keep = ok.nonzero().squeeze(1)
    rows = torch.full((n,), -1, dtype=torch.int64)
    rows[keep] = torch.arange(len(keep))
    images = out if len(keep) == n else out.index_select(0, keep)
    return images, rows, skipped


def resize_array(images: np.ndarray, size: int, progress: bool) -> torch.Tensor:
    """uint8 NCHW array (CIFAR) -> tensor at size x size by the same PIL rule as decoded files."""
    from PIL import Image

    if images.shape[2:] == (size, size):
        return torch.from_numpy(np.ascontiguousarray(images))
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    with Progress("resizing images", len(images), enabled=progress) as bar:
        for i, chw in enumerate(images):
            img = center_crop(resize_shorter(Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))), size), size)
            out[i] = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)
            bar.update()
    return out
