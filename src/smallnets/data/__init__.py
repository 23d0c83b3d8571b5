"""Training data: class-folder trees, their archives and CIFAR, through a cached-tensor or a DataLoader path."""

from smallnets.data.build import DataBundle, build_data
from smallnets.data.config import DataConfig
from smallnets._norm import IMAGENET_MEAN, IMAGENET_STD
from smallnets.data.images import UnreadableImageError, load_image, make_eval_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataBundle",
    "DataConfig",
    "UnreadableImageError",
    "build_data",
    "load_image",
    "make_eval_transform",
]
