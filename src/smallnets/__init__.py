"""smallnets: efficient convolutional networks exact to their papers, with a cost profiler."""

from smallnets._lazy import lazy_attributes

__version__ = "0.1.0"

# Every public name is imported on first use (PEP 562): `import smallnets` itself needs neither
# torch nor the data pipeline, so that a runtime-only install (`smallnets[runtime]`: ONNX Runtime,
# numpy, pillow) can run `smallnets.runtime`, and profiling or building a model stays quick.
_LAZY = {
    "read_sidecar": "smallnets.checkpoint",
    "save_weights": "smallnets.checkpoint",
    "make_divisible": "smallnets.arch.spec",
    "round_repeats": "smallnets.arch.spec",
    "CostReport": "smallnets.profiler",
    "count_macs": "smallnets.profiler",
    "count_params": "smallnets.profiler",
    "profile": "smallnets.profiler",
    "build_model": "smallnets.models",
    "ModelInfo": "smallnets.registry",
    "Published": "smallnets.registry",
    "list_models": "smallnets.registry",
    "model_info": "smallnets.registry",
    "model_spec": "smallnets.registry",
    "CompoundScale": "smallnets.scaling",
    "compound_scaling": "smallnets.scaling",
    "create_model": "smallnets.zoo",
    "load_weights": "smallnets.zoo",
    "model_from_spec": "smallnets.zoo",
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


def _needs_torch(name: str, err: ModuleNotFoundError) -> Exception | None:
    if err.name != "torch":
        return None
    return ModuleNotFoundError(
        f"smallnets.{name} needs PyTorch, which is not installed: pip install torch==2.13.0 (CPU), then "
        "pip install 'smallnets[torch]'; a runtime-only install runs exported ONNX files with smallnets.runtime",
        name="torch",
    )


__getattr__, __dir__ = lazy_attributes("smallnets", _LAZY, globals(), _needs_torch)

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
