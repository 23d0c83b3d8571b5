"""Classification metrics over a data loader: loss, top-1 / top-5, per-class accuracy and the confusion
matrix (``evaluate`` / ``EvalResult``), and matching a data set's class names to a model's.

This is the part of evaluation the trainer uses every epoch; ``smallnets.evaluation`` builds on it to
score saved weights on their run's validation split or on a test set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from smallnets.distributed import DistInfo, all_reduce_sum


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing)
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    count: int  # images evaluated
    confusion: torch.Tensor = field(repr=False)  # [true, predicted] counts, int64
    classes: list[str] = field(default_factory=list, repr=False)
    details: dict[str, Any] = field(default_factory=dict, repr=False)  # provenance from evaluate_weights: weights, data, split, notes

    @property
    def support(self) -> dict[str, int]:
        """Images of each true class: the confusion matrix's row sums."""
        names = self.classes or [str(i) for i in range(len(self.confusion))]
        return dict(zip(names, self.confusion.sum(1).tolist()))

    @property
    def per_class(self) -> dict[str, float | None]:
        """Accuracy (percent) of each class: the diagonal over the row sums; None for a class without images."""
        rows = self.confusion.sum(1)
        acc = (self.confusion.diag().double() / rows.clamp_min(1).double() * 100).tolist()
        names = self.classes or [str(i) for i in range(len(acc))]
        return {c: (a if n else None) for c, a, n in zip(names, acc, rows.tolist())}

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "top1": self.top1,
            "top5": self.top5,
            "count": self.count,
            "per_class": self.per_class,
            "support": self.support,
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            **self.details,
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


def class_mapping(data_classes: Sequence[str], model_classes: Sequence[str], where: str) -> torch.Tensor | None:
    """Model index of each data class, or None when the names are the same in the same order.

    The data may hold a subset of the model's classes (in any order); a class the model does not
    know is an error that lists the differences.
    """
    data_classes, model_classes = list(data_classes), list(model_classes)
    if data_classes == model_classes:
        return None
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        show = lambda names: ", ".join(map(repr, names[:10])) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")  # noqa: E731
        raise ValueError(
            f"data classes must be the model's classes or a subset of them (matched by name); {where!r} has "
            f"{len(unknown)} class(es) the model does not know: {show(unknown)}. "
            f"Model classes ({len(model_classes)}): {show(model_classes)}; data classes ({len(data_classes)}): {show(data_classes)}"
        )
    index = {c: i for i, c in enumerate(model_classes)}
    return torch.tensor([index[c] for c in data_classes], dtype=torch.int64)
