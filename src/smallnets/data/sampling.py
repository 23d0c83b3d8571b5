"""Counter-based seeds, epoch permutations and distributed shards.

Every random draw of the pipelines is a pure function of (seed, epoch, index): nothing reads or
advances global RNG state, so batches do not depend on worker count, resumption or call order.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK = (1 << 64) - 1
# Stream tags keep the draws of different purposes independent for the same (seed, epoch, index).
STREAM_PERMUTATION = 1
STREAM_BATCH = 2
STREAM_SAMPLE = 3


def _splitmix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix(*values: int) -> int:
    """A 64-bit seed from a tuple of integers (splitmix64 chained over the values)."""
    h = 0
    for v in values:
        h = _splitmix(h ^ (int(v) & _MASK))
    return h


def mix_array(base: int, index: np.ndarray) -> np.ndarray:
    """``mix(base, i)`` for every ``i`` of an integer array, vectorised (uint64 arithmetic wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        z = np.uint64(base) ^ index.astype(np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def generator(*values: int) -> torch.Generator:
    """A CPU generator seeded from ``mix(*values)``; draws are moved to the target device afterwards."""
    return torch.Generator().manual_seed(mix(*values))


def epoch_shard(n: int, *, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """Dataset indices rank ``rank`` sees in ``epoch``, in order.

    One permutation of ``range(n)`` per (seed, epoch), the same on every rank. Its last
    ``n % world_size`` entries are dropped (a different few each epoch) and the rest is dealt out
    rank-strided, so the shards are disjoint and every rank gets ``n // world_size`` samples:
    DDP needs the same number of steps on every rank.
    """
    perm = torch.randperm(n, generator=generator(seed, epoch, STREAM_PERMUTATION))
    per_rank = n // world_size
    return perm[: per_rank * world_size][rank::world_size]


def eval_shard(n: int, *, rank: int, world_size: int) -> torch.Tensor:
    """Validation indices of one rank: strided, no padding, so ranks are disjoint and cover ``range(n)`` once."""
    return torch.arange(rank, n, world_size)


def num_batches(samples: int, batch_size: int, drop_last: bool) -> int:
    return samples // batch_size if drop_last else -(-samples // batch_size)


class EvalSharding:
    """This rank's strided shard of the validation set, shared by the eval loaders of both input paths.

    A subclass sets ``batch_size`` and calls ``_shard(n, rank, world_size)``.
    """

    batch_size: int

    def _shard(self, n: int, rank: int, world_size: int) -> None:
        self._indices = eval_shard(n, rank=rank, world_size=world_size)
        self.num_samples = len(self._indices)

    def indices(self) -> torch.Tensor:
        """Indices into the validation set that this rank evaluates."""
        return self._indices.clone()

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, False)


class EpochSharding:
    """Epoch bookkeeping shared by the training loaders of both input paths.

    A subclass sets ``num_items`` (training images, all ranks), ``seed``, ``rank``, ``world_size``,
    ``batch_size``, ``drop_last`` and ``epoch``, and implements ``epoch_batches(epoch, start)``.
    """

    num_items: int
    seed: int
    rank: int
    world_size: int
    batch_size: int
    drop_last: bool
    epoch: int

    @property
    def num_samples(self) -> int:
        return self.num_items // self.world_size  # per rank and epoch

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return self.epoch_batches(self.epoch)

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """Indices into the training set that this rank sees in ``epoch``, in batch order."""
        order = epoch_shard(self.num_items, seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size)
        return order[: len(self) * self.batch_size] if self.drop_last else order

    def check_start(self, start: object) -> None:
        if not isinstance(start, int) or not 0 <= start <= len(self):
            raise ValueError(f"start must be an integer in [0, {len(self)}], got {start!r}")
