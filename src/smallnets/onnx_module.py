"""An exported ONNX file behind a ``torch.nn.Module`` interface (ONNX Runtime does the work)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["OnnxModule"]


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime behind a ``torch.nn.Module`` interface (inference only):
    ``forward`` takes a float NCHW tensor and returns logits. ``smallnets_meta`` holds the classes
    and preprocessing from the file's metadata, so ``evaluate_weights``, ``predict`` and the
    command line treat it like loaded weights."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        super().__init__()
        from smallnets.runtime import OnnxClassifier

        self.runner = OnnxClassifier(path, threads=threads)
        md = self.runner.metadata
        cfg = md.get("config") or {"name": md.get("model") or None, "num_classes": None, "in_chans": 3, "knobs": {}}
        self.smallnets_config = cfg
        self.smallnets_meta = {"model": cfg.get("name") or Path(path).stem, "classes": self.runner.classes or None,
                               "preprocessing": self.runner.preprocessing, "path": os.fspath(path), "format": "onnx",
                               "precision": self.runner.precision, "onnx_metadata": md}  # fmt: skip
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"an ONNX model runs on the CPU; got an input on {x.device}")
        return torch.from_numpy(self.runner(x.detach().float().contiguous().numpy()))

    def __deepcopy__(self, memo) -> OnnxModule:
        """A new session on the same file (an ONNX Runtime session cannot be copied)."""
        return OnnxModule(self.runner.path, threads=self.runner.threads)

    def __repr__(self) -> str:
        return f"OnnxModule({self.runner!r})"
