"""Training: typed configuration, the trainer (one process or torchrun), its objectives (distillation included), step hooks, optimizers and schedules.

The names below are imported on first use, so that ``smallnets.training.config`` (which reading a
past run needs) loads without the trainer and its data pipeline.
"""

import importlib

_LAZY = {
    "ModelConfig": "smallnets.training.config",
    "RunConfig": "smallnets.training.config",
    "TrainConfig": "smallnets.training.config",
    "load_config_file": "smallnets.training.config",
    "Batch": "smallnets.training.objective",
    "CrossEntropy": "smallnets.training.objective",
    "Distillation": "smallnets.training.objective",
    "Objective": "smallnets.training.objective",
    "TrainHook": "smallnets.training.hooks",
    "Trainer": "smallnets.training.trainer",
    "TrainingDiverged": "smallnets.training.trainer",
    "TrainResult": "smallnets.training.trainer",
    "train": "smallnets.training.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'smallnets.training' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
