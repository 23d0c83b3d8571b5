"""The tensor path: a uint8 image tensor on the training device, augmented a whole batch at a time.

Random crop with zero padding and horizontal flip are one gather (the flip folds into the column
index), cutout is one mask; all draws come from a generator seeded by (seed, epoch, rank, batch),
so any batch can be produced without producing the ones before it. No per-sample Python.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from smallnets.data.images import norm_constants, normalize
from smallnets.data.sampling import STREAM_BATCH, EpochSharding, EvalSharding, generator


_TABLE_MAX = 1 << 21  # int64 entries (16 MiB); larger crop-index tables are computed per batch instead


def crop_index(h: int, w: int, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """Flat source index [B, H*W] into the padded (H+2p) x (W+2p) image for each crop offset and flip."""
    if table is not None:
        return table.index_select(0, (dy * (2 * pad + 1) + dx) * 2 + flip.long())
    ar_w = torch.arange(w, device=dy.device)
    cols = torch.where(flip[:, None], (w - 1) - ar_w, ar_w) + dx[:, None]  # the flip folds into the column index
    rows = dy[:, None] + torch.arange(h, device=dy.device)
    return (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(len(dy), h * w)


def crop_table(h: int, w: int, pad: int, device) -> torch.Tensor | None:
    """``crop_index`` for every (dy, dx, flip), row (dy * (2p + 1) + dx) * 2 + flip; None when too large."""
    n = (2 * pad + 1) ** 2 * 2
    if n * h * w > _TABLE_MAX:
        return None
    combos = torch.arange(n, device=device)
    return crop_index(h, w, pad, combos // 2 // (2 * pad + 1), combos // 2 % (2 * pad + 1), combos % 2 == 1)


def crop_flip(padded: torch.Tensor, index: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """uint8 NCHW crops of an already zero-padded batch, picked by ``index`` [B, H*W] (one gather)."""
    b, c = padded.shape[:2]
    return padded.reshape(b, c, -1).gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def cutout_(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square centred at (cy, cx), clipped at the border (DeVries & Taylor, 2017)."""
    h, w = x.shape[-2:]
    y0, x0 = (cy - size // 2)[:, None], (cx - size // 2)[:, None]
    ys, xs = torch.arange(h, device=x.device)[None], torch.arange(w, device=x.device)[None]
    row_in = ((ys >= y0) & (ys < y0 + size)).to(x.dtype)
    col_in = ((xs >= x0) & (xs < x0 + size)).to(x.dtype)
    keep = 1.0 - row_in[:, :, None] * col_in[:, None, :]  # [B, H, W]
    return x.mul_(keep[:, None])


def _finish(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class BatchCutout:
    """Cutout for a whole batch; the draw is seeded by (seed, epoch, rank, batch)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if not self.size:
            return x
        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b,), generator=g).to(x.device, non_blocking=True)
        cx = torch.randint(0, w, (b,), generator=g).to(x.device, non_blocking=True)
        return cutout_(x, cy, cx, self.size)


class TensorTrainLoader(EpochSharding):
    """Training batches from an on-device uint8 tensor; ``len()`` is the number of batches per epoch on this rank."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean, std, batch_size: int, seed: int, rank: int,
                 world_size: int, crop_padding: int, flip: bool, cutout: int, channels_last: bool, drop_last: bool, device):
        self.height, self.width = images.shape[-2:]
        # Stored zero-padded once (x1.56 memory at 32px, pad 4) so that a batch is one gather, no per-batch pad.
        self.images = F.pad(images, (crop_padding,) * 4) if crop_padding else images.contiguous()
        self.labels = labels
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.crop_padding, self.flip, self.channels_last, self.drop_last = crop_padding, flip, channels_last, drop_last
        self.device = torch.device(device)
        self._cutout = BatchCutout(cutout)
        self._shift, self._scale = norm_constants(mean, std, self.device)
        self.num_items = len(images)
        self._table = crop_table(self.height, self.width, crop_padding, self.device) if (crop_padding or flip) else None
        self.epoch = 0

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from batch index ``start`` on; skipped batches cost nothing."""
        self.check_start(start)
        order = self.epoch_indices(epoch).to(self.device)
        return self._batches(order, epoch, start)

    def batch(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Augmented, normalised images for dataset indices ``idx`` (on device) with draws from ``g``."""
        x = self.images.index_select(0, idx)
        b, pad = len(idx), self.crop_padding
        if pad or self.flip:
            d = torch.randint(0, 2 * pad + 1, (2, b), generator=g)
            flip = torch.rand(b, generator=g) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
            dy, dx, flip = (t.to(self.device, non_blocking=True) for t in (d[0], d[1], flip))
            x = crop_flip(x, crop_index(self.height, self.width, pad, dy, dx, flip, self._table), self.height, self.width)
        # NCHW throughout, one float copy to channels-last at the end: on CPU, broadcasting
        # elementwise ops over channels-last tensors (innermost dim 3) is 2-3x slower.
        return _finish(self._cutout(normalize(x, self._shift, self._scale), g), self.channels_last)

    def _batches(self, order: torch.Tensor, epoch: int, start: int):
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            g = generator(self.seed, epoch, self.rank, i, STREAM_BATCH)
            yield self.batch(idx, g), self.labels.index_select(0, idx)


class TensorEvalLoader(EvalSharding):
    """Validation batches, no augmentation, this rank's strided shard of the val set in order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean, std, batch_size: int, rank: int, world_size: int,
                 channels_last: bool, device):
        self.images, self.labels = images.contiguous(), labels
        self.batch_size, self.channels_last = batch_size, channels_last
        self.device = torch.device(device)
        self._shift, self._scale = norm_constants(mean, std, self.device)
        self._shard(len(images), rank, world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._indices.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = normalize(self.images.index_select(0, idx), self._shift, self._scale)
            yield _finish(x, self.channels_last), self.labels.index_select(0, idx)
