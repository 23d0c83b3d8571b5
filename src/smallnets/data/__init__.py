"""Training data: class-folder trees, their archives and CIFAR, through a cached-tensor or a DataLoader path.

Names are imported on first use (PEP 562): ``smallnets.data.sources``, ``.skips`` and ``.listing``
need no torch, and importing them must not pull in the PyTorch pipelines (a runtime-only install
lists and reads images with them).
"""

_LAZY = {
    "IMAGENET_MEAN": "smallnets._norm",
    "IMAGENET_STD": "smallnets._norm",
    "DataBundle": "smallnets.data.build",
    "build_data": "smallnets.data.build",
    "DataConfig": "smallnets.data.config",
    "UnreadableImageError": "smallnets.imaging",
    "load_image": "smallnets.imaging",
    "make_eval_transform": "smallnets.data.images",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'smallnets.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
