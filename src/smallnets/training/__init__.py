"""Training: typed configuration, the trainer (one process or torchrun), its objectives (distillation included), step hooks, optimizers and schedules.

The names below are imported on first use, so that ``smallnets.training.config`` (which reading a
past run needs) loads without the trainer and its data pipeline.
"""

from smallnets._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes("smallnets.training", _LAZY, globals())


__all__ = sorted(_LAZY)
