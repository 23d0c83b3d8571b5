"""Classification metrics over a data loader: loss, top-1 / top-5, per-class accuracy, confusion."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from smallnets.training.distributed import DistInfo, all_reduce_sum


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing)
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    count: int  # images evaluated
    confusion: torch.Tensor = field(repr=False)  # [true, predicted] counts, int64
    classes: list[str] = field(default_factory=list, repr=False)

    @property
    def per_class(self) -> dict[str, float]:
        """Accuracy (percent) of each class: the diagonal over the row sums."""
        rows = self.confusion.sum(1).clamp_min(1)
        acc = (self.confusion.diag().double() / rows.double() * 100).tolist()
        names = self.classes or [str(i) for i in range(len(acc))]
        return dict(zip(names, acc))

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "top1": self.top1,
            "top5": self.top5,
            "count": self.count,
            "per_class": self.per_class,
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    classes: Sequence[str] = (),
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
) -> EvalResult:
    """Evaluate ``model`` (eval mode) on ``batches``; under torchrun, sums over every rank's shard."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                logits = model(x)
            logits = logits.float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
            topk = logits.topk(k, dim=1).indices
            top5 += (topk == y[:, None]).any(1).sum()
            confusion.view(-1).index_add_(0, y * num_classes + topk[:, 0], torch.ones_like(y))
    finally:
        model.train(was_training)
    info = dist_info or DistInfo()
    packed = torch.cat([loss_sum.view(1), top5.double().view(1), confusion.double().view(-1)])
    packed = all_reduce_sum(packed, info)
    confusion = packed[2:].round().long().view(num_classes, num_classes).cpu()
    count = int(confusion.sum())
    if count == 0:
        raise ValueError("evaluate needs at least one image, got an empty set of batches")
    return EvalResult(
        loss=float(packed[0]) / count,
        top1=100.0 * float(confusion.diag().sum()) / count,
        top5=100.0 * float(packed[1]) / count,
        count=count,
        confusion=confusion,
        classes=list(classes),
    )
