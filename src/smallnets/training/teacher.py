"""The teacher of a distillation run (Hinton et al. 2015): loaded from a run directory or a smallnets
weights file, checked against the student's data (classes, input size) and, when it was trained with
other normalisation statistics, shown its own normalisation of the student's batch.

The teacher is frozen (eval mode, no gradients), lives on the training device in the run's memory
format, is never wrapped in DDP (every rank loads it itself) and is never saved with the student.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smallnets.checkpoint import resolve_weights
from smallnets.training.objective import CrossEntropy, Distillation

__all__ = ["Renormalised", "Teacher", "announce", "check_teacher_fits", "distillation", "load_teacher"]

_WHAT = "teacher must be a run directory (with best.safetensors or last.safetensors) or a smallnets .safetensors weights file with its .json sidecar"


@dataclass
class Teacher:
    """A loaded teacher and what its files say about it (the sidecar, or the file's metadata)."""

    given: str  # the path as the configuration names it
    file: Path  # the weights file read (a run directory's best.safetensors, else last)
    model: nn.Module
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        cfg = getattr(self.model, "smallnets_config", None) or {}
        return cfg.get("name") or self.meta.get("model") or type(self.model).__name__

    @property
    def classes(self) -> list[str] | None:
        classes = self.meta.get("classes")
        return list(classes) if classes else None

    @property
    def num_classes(self) -> int:
        cfg = getattr(self.model, "smallnets_config", None) or {}
        return int(cfg.get("num_classes") or self.meta.get("num_classes"))

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta.get("preprocessing") or {})

    @property
    def image_size(self) -> int | None:
        """The input side the teacher was trained / evaluated at (a run's image_size, a converted checkpoint's crop)."""
        prep = self.preprocessing
        size = prep.get("image_size", prep.get("crop"))
        return int(size) if size is not None else None


def load_teacher(path: str | os.PathLike, *, device: torch.device) -> Teacher:
    """The teacher in ``path`` on ``device``, frozen: eval mode, ``requires_grad_(False)``."""
    from smallnets.zoo import load_weights

    given = os.fspath(path)
    try:
        file = resolve_weights(given)
    except (OSError, ValueError) as err:
        raise ValueError(f"{_WHAT}, got {given!r} ({err})") from None
    try:
        model = load_weights(file, device=device)
    except ValueError as err:
        raise ValueError(f"{_WHAT}, got {given!r}: {err}") from None
    model.eval().requires_grad_(False)
    return Teacher(given=given, file=file, model=model, meta=dict(model.smallnets_meta))


def check_teacher_fits(teacher: Teacher, classes: Sequence[str], image_size: int | None, data: str) -> None:
    """A teacher must score the student's classes (names and order; their count when it records no
    names) at the student's input size; anything else is refused, naming what was found."""
    classes = list(classes)
    shown = lambda names: ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")  # noqa: E731
    own = teacher.classes
    if own is not None and own != classes:
        how = "the same classes in another order" if sorted(own) == sorted(classes) else f"{len(own)} classes ({shown(own)})"
        raise ValueError(f"teacher must have the data's classes in the data's order: {teacher.file} has {how}, but {data!r} has "
                         f"{len(classes)} classes ({shown(classes)})")  # fmt: skip
    if own is None and teacher.num_classes != len(classes):
        raise ValueError(f"teacher must have one output per class of the data: {teacher.file} gives {teacher.num_classes} outputs "
                         f"(its sidecar names no classes), but {data!r} has {len(classes)} classes ({shown(classes)})")  # fmt: skip
    if image_size is not None and teacher.image_size is not None and teacher.image_size != image_size:
        raise ValueError(f"teacher must take the student's input size: {teacher.file} was trained at {teacher.image_size} px "
                         f"(its sidecar's preprocessing), the student trains at {image_size} px")  # fmt: skip


class Renormalised(nn.Module):
    """A teacher shown its own normalisation of a batch normalised with the student's statistics.

    The student sees ``x = (raw - mean_s) / std_s``; the teacher was trained on ``(raw - mean_t) /
    std_t``, which is ``(x * std_s + mean_s - mean_t) / std_t``: computed in that order on the batch
    tensor (per channel, exact up to float rounding), so the teacher sees what its own pipeline gives.
    """

    def __init__(self, teacher: nn.Module, *, student_mean: Sequence[float], student_std: Sequence[float],
                 teacher_mean: Sequence[float], teacher_std: Sequence[float]):  # fmt: skip
        super().__init__()
        self.teacher = teacher
        as_channels = lambda v: torch.tensor([float(c) for c in v], dtype=torch.float32).reshape(1, -1, 1, 1)  # noqa: E731
        self.register_buffer("student_mean", as_channels(student_mean), persistent=False)
        self.register_buffer("student_std", as_channels(student_std), persistent=False)
        self.register_buffer("teacher_mean", as_channels(teacher_mean), persistent=False)
        self.register_buffer("teacher_std", as_channels(teacher_std), persistent=False)
        # describe() and the run record name the model inside
        for attr in ("smallnets_config", "smallnets_meta"):
            if hasattr(teacher, attr):
                setattr(self, attr, getattr(teacher, attr))

    def renormalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.student_std + self.student_mean - self.teacher_mean) / self.teacher_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(self.renormalise(x))


def _stats(prep: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    if prep.get("mean") is None or prep.get("std") is None:
        return None
    return [float(v) for v in prep["mean"]], [float(v) for v in prep["std"]]


def distillation(teacher: Teacher, *, temperature: float, weight: float, label_smoothing: float, student_preprocessing: dict,
                 channels_last: bool) -> tuple[Distillation, dict[str, Any]]:  # fmt: skip
    """The run's objective with this teacher, and what config.json records about the teacher.

    Called after :func:`check_teacher_fits`. The label loss is the run's cross-entropy (its label smoothing)."""
    model = teacher.model
    if channels_last:
        model.to(memory_format=torch.channels_last)
    record: dict[str, Any] = {"path": teacher.given, "file": str(teacher.file.resolve()), "model": teacher.name,
                              "sha256": teacher.meta.get("sha256"), "image_size": teacher.image_size, "renormalised": None}  # fmt: skip
    own, student = _stats(teacher.preprocessing), _stats(student_preprocessing)
    if own is not None and student is not None and own != student:
        device = next(model.parameters()).device
        model = Renormalised(model, student_mean=student[0], student_std=student[1], teacher_mean=own[0], teacher_std=own[1]).to(device)
        record["renormalised"] = {"student": {"mean": student[0], "std": student[1]}, "teacher": {"mean": own[0], "std": own[1]}}
    elif own is None:
        record["renormalised"] = "unknown: the teacher's files record no mean / std; it sees the student's normalisation"
    objective = Distillation(model, temperature=temperature, alpha=weight, base=CrossEntropy(label_smoothing))
    return objective, record


def announce(record: dict[str, Any], objective: Distillation) -> str:
    """The line a run prints at its start about its teacher."""
    line = f"distilling from {record['path']} ({record['model']}), T {objective.temperature:g}, KL weight {objective.alpha:g}"
    renorm = record.get("renormalised")
    if isinstance(renorm, dict):
        t = renorm["teacher"]
        line += f"; the teacher sees its own normalisation (mean {_short(t['mean'])}, std {_short(t['std'])})"
    elif renorm:
        line += f"; normalisation {renorm}"
    return line


def _short(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
