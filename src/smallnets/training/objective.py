"""What the trainer minimises: an objective maps the model's output on a batch to a scalar loss.

The trainer calls ``objective(output, targets, batch)`` once per step, inside the run's autocast
context, with ``output`` the model's logits in fp32 and ``targets`` the batch's labels (int64,
``[N]``), or its soft targets (``[N, classes]``, rows summing to 1) when mixup / cutmix mixed it.
``batch`` carries the rest (the images the model saw, the labels before mixing, the position) for
objectives that need more than logits and targets. Any callable with that signature plugs in:
``Trainer(config, objective=MyObjective())``; the trainer itself never changes.

* :class:`CrossEntropy`: the default, with the run's ``label_smoothing``.
* :class:`Distillation` (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"): a
  teacher's logits on the same images soften the targets; the KL term is scaled by T^2 so that its
  gradients keep their size as the temperature changes.

An objective with state that a resume must restore is out of scope: objectives are pure functions
of their settings and the batch (a teacher's weights are its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Batch", "CrossEntropy", "Distillation", "Objective", "describe"]


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # the images the model saw (after mixing; channels-last when the run is)
    labels: torch.Tensor  # int64 class indices, before mixing
    soft_targets: torch.Tensor | None  # mixup / cutmix targets; None for an unmixed batch
    epoch: int  # 0-based epoch of this batch
    step: int  # global optimizer step of this batch (0-based)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels if self.soft_targets is None else self.soft_targets


@runtime_checkable
class Objective(Protocol):
    def __call__(self, output: torch.Tensor, targets: torch.Tensor, batch: Batch) -> torch.Tensor: ...


class CrossEntropy:
    """Cross-entropy with label smoothing, on hard labels or on mixup / cutmix soft targets (smoothed too)."""

    def __init__(self, label_smoothing: float = 0.0):
        if not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, output: torch.Tensor, targets: torch.Tensor, batch: Batch | None = None) -> torch.Tensor:
        ls = self.label_smoothing
        if targets.dim() == 1:
            return F.cross_entropy(output, targets, label_smoothing=ls)
        soft = targets * (1.0 - ls) + ls / output.shape[1]
        return torch.sum(-soft * F.log_softmax(output, dim=1), dim=1).mean()

    def describe(self) -> dict[str, Any]:
        return {"name": "CrossEntropy", "label_smoothing": self.label_smoothing}


class Distillation:
    """``alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * base``.

    ``teacher``: a module giving logits over the same classes, on the training device; it is put in
    eval mode and run without gradients on ``batch.inputs`` (the mixed images, when mixing is on).
    ``base`` (default: plain cross-entropy) scores the student against the labels.
    """

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5, base: Objective | None = None):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module giving logits, got {type(teacher).__qualname__}")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.base = base if base is not None else CrossEntropy()

    def kl(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
        t = self.temperature
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher logits must have the student's shape {tuple(student_logits.shape)}, got {tuple(teacher_logits.shape)}")
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
        return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)

    def __call__(self, output: torch.Tensor, targets: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits = self.teacher(batch.inputs).float()
        loss = self.alpha * self.kl(output, teacher_logits)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * self.base(output, targets, batch)
        return loss

    def describe(self) -> dict[str, Any]:
        teacher = getattr(self.teacher, "smallnets_config", None) or {}
        return {"name": "Distillation", "temperature": self.temperature, "alpha": self.alpha,
                "teacher": teacher.get("name") or type(self.teacher).__name__, "base": describe(self.base)}  # fmt: skip


def describe(objective: Any) -> dict[str, Any]:
    """What the run records about its objective: its own ``describe()``, else its class name."""
    own = getattr(objective, "describe", None)
    return dict(own()) if callable(own) else {"name": type(objective).__qualname__}
