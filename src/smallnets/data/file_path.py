"""The loader path: DataLoader workers decode files with PIL (RandomResizedCrop + flip for training).

Workers return uint8 tensors; the main process moves them to the device and normalises there,
with the same ``normalize`` as ``make_eval_transform``. Each sample's crop and flip come from a
seed of (seed, epoch, dataset index), so batches do not depend on the number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from smallnets.data import skips
from smallnets.data.images import EvalTransform, UnreadableImageError, load_image, norm_constants, normalize, random_resized_crop, to_uint8_chw
from smallnets.data.sampling import STREAM_BATCH, STREAM_SAMPLE, EpochSharding, EvalSharding, generator, mix, mix_array
from smallnets.data.skips import SkipLog
from smallnets.data.tensor_path import BatchCutout, _finish


class FileImages:
    """Image i of a list of files under a root folder."""

    def __init__(self, root: Path, names: Sequence[str]):
        self.root, self.names = root, list(names)

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> Image.Image:
        return load_image(self.root / self.names[i])


class ArrayImages:
    """Image i of a uint8 NCHW array (CIFAR's python format through the loader path)."""

    def __init__(self, images: np.ndarray, names: Sequence[str]):
        self.images, self.names = images, list(names)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.images[i].transpose(1, 2, 0)))


class _TrainSet(Dataset):
    def __init__(self, images, labels: Sequence[int], size: int, flip: bool):
        self.images, self.labels, self.size, self.flip = images, list(labels), size, flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]):
        i, seed = item
        rng = random.Random(seed)
        try:
            img = random_resized_crop(self.images.load(i), self.size, rng)
        except (UnreadableImageError, OSError) as e:
            return None, self.labels[i], i, getattr(e, "detail", str(e))
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_uint8_chw(img), self.labels[i], i, ""


class _EvalSet(Dataset):
    def __init__(self, images, labels: Sequence[int], transform: EvalTransform):
        self.images, self.labels, self.transform = images, list(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            return self.transform.uint8(self.images.load(i)), self.labels[i], i, ""
        except (UnreadableImageError, OSError) as e:
            return None, self.labels[i], i, getattr(e, "detail", str(e))


def collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[int, str]]]:
    """Stack the samples that decoded; report the others as (index, detail) so they can be counted."""
    good = [it for it in items if it[0] is not None]
    failed = [(it[2], it[3]) for it in items if it[0] is None]
    images = torch.stack([it[0] for it in good]) if good else None
    return images, torch.tensor([it[1] for it in good], dtype=torch.int64), failed


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode with PIL; torch threads would only oversubscribe the cores


class _EpochBatchSampler(Sampler):
    """Batches of (dataset index, per-sample seed) from batch ``start`` of an epoch's shard."""

    def __init__(self, batches: list[torch.Tensor], seed_base: int):
        self.batches, self.seed_base = batches, seed_base

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            idx = b.numpy()
            yield list(zip(idx.tolist(), mix_array(self.seed_base, idx).tolist()))


class _LoaderBase:
    def __init__(self, *, workers: int, device, channels_last: bool, mean, std, skiplog: SkipLog, names: Sequence[str]):
        self.workers, self.channels_last = workers, channels_last
        self.device = torch.device(device)
        self._shift, self._scale = norm_constants(mean, std, self.device)
        self._skiplog, self._names = skiplog, names

    def _loader(self, dataset, **kw) -> DataLoader:
        return DataLoader(
            dataset,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if self.workers else None,
            **kw,
        )

    def _run(self, loader: DataLoader, where: str) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Normalised batches on the device, (None, None) where every sample of a batch failed to decode."""
        local = SkipLog()
        try:
            for images, labels, failed in loader:
                for i, detail in failed:
                    if self._skiplog.add(self._names[i], skips.UNREADABLE, detail):  # warn once per file, not every epoch
                        local.add(self._names[i], skips.UNREADABLE, detail)
                if images is None:  # every sample of the batch failed
                    yield None, None
                    continue
                x = normalize(images.to(self.device, non_blocking=True), self._shift, self._scale)
                yield x, labels.to(self.device, non_blocking=True)
        finally:
            local.warn(where, stacklevel=4)


class FileTrainLoader(EpochSharding, _LoaderBase):
    """Training batches decoded by DataLoader workers; ``len()`` is the number of batches per epoch on this rank."""

    def __init__(self, images, labels: Sequence[int], *, image_size: int, flip: bool, cutout: int, batch_size: int, seed: int,
                 rank: int, world_size: int, drop_last: bool, **kw):
        super().__init__(names=images.names, **kw)
        self.dataset = _TrainSet(images, labels, image_size, flip)
        self.batch_size, self.seed, self.rank, self.world_size, self.drop_last = batch_size, seed, rank, world_size, drop_last
        self._cutout = BatchCutout(cutout)
        self.num_items = len(images)
        self.epoch = 0

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from batch index ``start`` on; the sampler begins at that batch."""
        self.check_start(start)
        batches = list(self.epoch_indices(epoch).split(self.batch_size))[start : len(self)]
        sampler = _EpochBatchSampler(batches, mix(self.seed, epoch, STREAM_SAMPLE))
        return self._batches(sampler, epoch, start)

    def _batches(self, sampler, epoch: int, start: int):
        stream = self._run(self._loader(self.dataset, batch_sampler=sampler), f"while loading epoch {epoch}")
        for i, (x, y) in enumerate(stream, start):
            if x is None:
                continue  # documented: a batch whose every file is unreadable is left out
            x = self._cutout(x, generator(self.seed, epoch, self.rank, i, STREAM_BATCH))
            yield _finish(x, self.channels_last), y


class FileEvalLoader(_LoaderBase, EvalSharding):
    """Validation batches: the eval transform in workers, this rank's strided shard in order."""

    def __init__(self, images, labels: Sequence[int], *, transform: EvalTransform, batch_size: int, rank: int, world_size: int, **kw):
        super().__init__(names=images.names, **kw)
        self.dataset = _EvalSet(images, labels, transform)
        self.batch_size = batch_size
        self._shard(len(images), rank, world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = [b.tolist() for b in self._indices.split(self.batch_size)]
        for x, y in self._run(self._loader(self.dataset, batch_sampler=batches), "while validating"):
            if x is not None:
                yield _finish(x, self.channels_last), y
