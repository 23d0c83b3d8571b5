"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) with seeded randomness: a batch's mixing
is a pure function of the run's seed and its position, so a resumed run mixes as the original did."""

from __future__ import annotations

import math

import numpy as np
import torch

from smallnets.training.config import TrainConfig


def mix_generator(seed: int, rank: int, epoch: int, batch: int) -> torch.Generator:
    """The generator for one batch of one process: seeded from (seed, rank, epoch, batch) alone."""
    g = torch.Generator()
    for part in (rank, epoch, batch):
        seed = (seed * 1_000_003 + part) % 2**63
    g.manual_seed(seed)
    return g


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mix a batch with mixup or cutmix (one of them per batch when both are on).

    Returns the (possibly mixed) images and soft targets, or ``None`` targets when this batch is
    left unmixed. Label smoothing is applied to the soft targets by the objective.
    """
    use_mixup, use_cutmix = cfg.mixup > 0, cfg.cutmix > 0
    if not (use_mixup or use_cutmix):
        return x, None
    draws = torch.rand(2, generator=generator).tolist()
    if draws[0] >= cfg.mix_prob:
        return x, None
    cut = use_cutmix and (not use_mixup or draws[1] < 0.5)
    alpha = cfg.cutmix if cut else cfg.mixup
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    if cut:
        h, w = x.shape[-2:]
        ratio = math.sqrt(1.0 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = (torch.randint(0, h, (1,), generator=generator).item(), torch.randint(0, w, (1,), generator=generator).item())
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = x * lam + x[perm] * (1.0 - lam)
    one_hot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype if x.is_floating_point() else torch.float32)
    targets = one_hot * lam + one_hot[perm] * (1.0 - lam)
    return x, targets


def _beta(alpha: float, generator: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from the seeded generator (torch's Beta sampler takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))
