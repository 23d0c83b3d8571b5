"""Training data: class-folder trees, their archives and CIFAR, through a cached-tensor or a DataLoader path.

Names are imported on first use (PEP 562): ``smallnets.data.sources``, ``.skips`` and ``.listing``
need no torch, and importing them must not pull in the PyTorch pipelines (a runtime-only install
lists and reads images with them).
"""

from smallnets._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes("smallnets.data", _LAZY, globals())

__all__ = sorted(_LAZY)
