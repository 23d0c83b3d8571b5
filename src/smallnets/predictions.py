"""The result types of prediction, without torch: shared by ``smallnets.prediction`` (PyTorch) and
``smallnets.runtime`` (ONNX Runtime), so both give the same objects and the same JSON."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClassScore", "Prediction"]


@dataclass(frozen=True)
class ClassScore:
    label: str  # class name from the sidecar (the index as text when the model names none)
    index: int  # output index of the model
    probability: float  # softmax probability, 0-1


@dataclass(frozen=True)
class Prediction:
    path: str  # as given, or found by walking a directory that was given
    predictions: tuple[ClassScore, ...]  # best first; empty when the file could not be read
    error: str | None = None  # why the file could not be read

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        scores = [{"label": s.label, "index": s.index, "probability": s.probability} for s in self.predictions]
        out = {"path": self.path, "predictions": scores}
        if self.error is not None:
            out["error"] = self.error
        return out
