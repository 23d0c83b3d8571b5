"""smallnets: efficient convolutional networks exact to their papers, with a cost profiler."""

from smallnets.layers import make_divisible, round_repeats
from smallnets.profiler import CostReport, count_macs, count_params, profile
from smallnets.registry import ModelInfo, Published, create_model, list_models, model_info
from smallnets.scaling import CompoundScale, compound_scaling

__version__ = "0.1.0"

__all__ = [
    "CompoundScale",
    "CostReport",
    "ModelInfo",
    "Published",
    "compound_scaling",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "make_divisible",
    "model_info",
    "profile",
    "round_repeats",
]
