"""Image files for evaluation and prediction: listing, decoding with a model's eval transform, batching.

Built on the data package's public pieces (``decode_image``, ``EvalTransform``, ``normalize``),
so a file gives bit-for-bit the tensor that validation gives it. Two kinds of sets:

* ``find_images``: the files named on a command line, directories walked recursively (predict).
* ``list_labelled``: every image of a class-folder tree or a .tar/.tar.gz/.tgz archive of one
  (evaluation of a separate test set): ``ROOT/<class>/**``, or ``ROOT/test/<class>/**``, or
  ``ROOT/val/<class>/**`` (``validation/`` too). One shared top-level folder is looked through, as
  archives often have one.

Folders are walked and archives read by the data package's own code (``walk_folder``,
``ArchiveSource``), so these sets follow training's rules: a symbolic link never lists a file twice
or under another class (loops and links to listed paths are skipped, links out of the folder too
unless ``follow_links``), and a truncated or corrupt archive is a ValueError naming it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from smallnets.data.file_path import _worker_init
from smallnets.data.images import EvalTransform, UnreadableImageError, decode_image, load_image, norm_constants, normalize
from smallnets.data.listing import LabelledFiles, find_images, list_labelled  # noqa: F401  (re-exported)
from smallnets.data.sources import ArchiveSource

_POOL_MIN = 256  # below this many files, decoding in-process beats starting DataLoader workers


# ---------------------------------------------------------------------------------------------
# Decoding and batching
# ---------------------------------------------------------------------------------------------


class _Files(Dataset):
    """Item i: (uint8 CHW after the eval resize and crop, or None; i; failure detail)."""

    def __init__(self, paths: Sequence[str | os.PathLike], transform: EvalTransform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform.uint8(load_image(self.paths[i])), i, ""
        except UnreadableImageError as e:
            return None, i, e.detail
        except OSError as e:
            return None, i, f"{type(e).__name__}: {e.strerror or e}"


def _collate(items: list) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    good = [it for it in items if it[0] is not None]
    failed = [(it[1], it[2]) for it in items if it[0] is None]
    return (torch.stack([it[0] for it in good]) if good else None), [it[1] for it in good], failed


def default_workers(n: int) -> int:
    return min(4, os.cpu_count() or 1) if n >= _POOL_MIN else 0


Batch = tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]  # images (None: none decoded), their indices, (index, why) of the others


def file_batches(
    paths: Sequence[str | os.PathLike], transform: EvalTransform, batch_size: int, workers: int | None = None
) -> Iterator[Batch]:
    """Consecutive batches of ``paths`` decoded to uint8 (resize and crop of ``transform``), in order."""
    n = len(paths)
    workers = default_workers(n) if workers is None else workers
    chunks = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    loader = DataLoader(_Files(paths, transform), batch_sampler=chunks, num_workers=workers, collate_fn=_collate,
                        worker_init_fn=_worker_init if workers else None)  # fmt: skip
    yield from loader


def archive_batches(path: Path, names: Sequence[str], transform: EvalTransform, batch_size: int) -> Iterator[Batch]:
    """Batches of the wanted members of an archive, decoded in one streaming pass (in archive order);
    an archive that cannot be read to its end is a ValueError naming it (``ArchiveSource.members``)."""
    source = ArchiveSource(path)
    index = {n: i for i, n in enumerate(names)}
    images: list[torch.Tensor] = []
    ok: list[int] = []
    failed: list[tuple[int, str]] = []
    for tar, m, name in source.members():
        i = index.pop(name, None) if name is not None else None
        if i is None:
            continue
        data = source.member_bytes(tar, m)  # a member cut short: the archive's error, outside the decoding's
        try:
            images.append(transform.uint8(decode_image(data if data is not None else b"", name)))
            ok.append(i)
        except UnreadableImageError as e:
            failed.append((i, e.detail))
        if len(ok) + len(failed) == batch_size:
            yield (torch.stack(images) if images else None), ok, failed
            images, ok, failed = [], [], []
    failed += [(i, "not found in the archive on the second read") for i in index.values()]
    if ok or failed:
        yield (torch.stack(images) if images else None), ok, failed


def normalized(batches: Iterable[Batch], transform: EvalTransform, device: torch.device) -> Iterator[Batch]:
    """The same batches as float32 ``(x / 255 - mean) / std`` on ``device`` (the pipelines' one normalisation)."""
    shift, scale = norm_constants(transform.mean, transform.std, device)
    for x, ok, failed in batches:
        yield (None if x is None else normalize(x.to(device, non_blocking=True), shift, scale)), ok, failed
