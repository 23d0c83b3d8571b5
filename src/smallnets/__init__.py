"""smallnets: efficient convolutional networks exact to their papers, with a cost profiler."""

from smallnets.checkpoint import read_sidecar, save_weights
from smallnets.arch.spec import make_divisible, round_repeats
from smallnets.profiler import CostReport, count_macs, count_params, profile
from smallnets.models import build_model
from smallnets.registry import ModelInfo, Published, list_models, model_info, model_spec
from smallnets.scaling import CompoundScale, compound_scaling
from smallnets.zoo import create_model, load_weights, model_from_spec

__version__ = "0.1.0"

# Training and evaluation pull in the data pipeline (PIL, workers): imported on first use, so
# `import smallnets` stays quick for profiling and model building.
_LAZY = {
    "EvalResult": "smallnets.metrics",
    "evaluate": "smallnets.metrics",
    "evaluate_weights": "smallnets.evaluation",
    "Prediction": "smallnets.prediction",
    "predict": "smallnets.prediction",
    "RunConfig": "smallnets.training",
    "TrainConfig": "smallnets.training",
    "Trainer": "smallnets.training",
    "train": "smallnets.training",
    "load_pretrained": "smallnets.pretrained",
    "list_formats": "smallnets.pretrained",
    "PretrainedMismatch": "smallnets.pretrained",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'smallnets' has no attribute {name!r}")

__all__ = [
    "build_model",
    "model_from_spec",
    "model_spec",
    "CompoundScale",
    "CostReport",
    "EvalResult",
    "Prediction",
    "RunConfig",
    "TrainConfig",
    "Trainer",
    "ModelInfo",
    "Published",
    "compound_scaling",
    "count_macs",
    "count_params",
    "create_model",
    "evaluate",
    "evaluate_weights",
    "list_formats",
    "load_pretrained",
    "PretrainedMismatch",
    "load_weights",
    "read_sidecar",
    "save_weights",
    "train",
    "list_models",
    "make_divisible",
    "model_info",
    "predict",
    "profile",
    "round_repeats",
]
