"""Training: typed configuration, the trainer (one process or torchrun), optimizers and schedules."""

from smallnets.training.config import ModelConfig, RunConfig, TrainConfig, load_config_file
from smallnets.training.trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = ["ModelConfig", "RunConfig", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged", "load_config_file", "train"]
