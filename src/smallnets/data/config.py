"""DataConfig: what to train on and how batches are made, validated when constructed."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from smallnets._checks import check_bool, check_choice, check_int, check_range, suggest

PIPELINES = ("auto", "tensor", "loader")
CIFAR_VAL = ("test", "holdout")
TENSOR_MAX_SIDE = 64  # pipeline="auto": images at most this many px on the longer side take the tensor path


@dataclass
class DataConfig:
    path: str  # folder, .tar/.tar.gz/.tgz archive, "cifar10" or "cifar100"
    root: str | None = None  # where cifar10/100 live / are downloaded to; None: <cache_dir>/datasets
    download: bool = True  # cifar10/100: fetch the official archive when it is not under root
    val_fraction: float = 0.1  # share of each class held out when the source has no val split
    split_seed: int = 0  # seed of the automatic split (independent of the training seed)
    pipeline: str = "auto"  # auto | tensor | loader
    image_size: int | None = None  # px; None: native size (tensor) / 224 (loader)
    batch_size: int = 128  # images per rank per training step
    eval_batch_size: int | None = None  # images per validation batch; None: batch_size
    workers: int | None = None  # decoding processes (loader path, cache build); None: min(4, cpus)
    crop_padding: int = 4  # px of zero padding around a random crop (tensor path); 0: no crop
    flip: bool = True  # random horizontal flip
    cutout: int = 0  # px side of a random square zeroed after normalisation; 0: off
    cache_dir: str | None = None  # None: $SMALLNETS_CACHE, else $XDG_CACHE_HOME/smallnets, else ~/.cache/smallnets
    channels_last: bool = False  # training and validation batches in channels-last memory format
    limit_per_class: int | None = None  # use only the first N files (sorted) of each class and part
    cifar_val: str = "test"  # cifar10/100: "test" = official test batch, "holdout" = val_fraction of train
    drop_last: bool = False  # drop each epoch's final partial training batch
    follow_links: bool = False  # a folder: follow symlinks that lead outside it (loops and links within it never are)
    # normalisation (x - mean) / std in [0, 1] units; None: the data set's own statistics (tensor path),
    # ImageNet's (loader path); a fine-tune from a checkpoint takes the checkpoint's (smallnets train --pretrained)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise ValueError(f"path must be a non-empty folder, archive, 'cifar10' or 'cifar100', got {self.path!r}")
        for name in ("root", "cache_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value)):
                raise ValueError(f"{name} must be a folder path or None, got {value!r}")
        for name in ("download", "flip", "channels_last", "drop_last", "follow_links"):
            check_bool(name, getattr(self, name))
        check_range("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_int("split_seed", self.split_seed, minimum=0)
        check_choice("pipeline", self.pipeline, PIPELINES)
        check_choice("cifar_val", self.cifar_val, CIFAR_VAL)
        check_int("batch_size", self.batch_size)
        for name in ("image_size", "eval_batch_size", "limit_per_class"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.workers is not None:
            check_int("workers", self.workers, minimum=0)
        check_int("crop_padding", self.crop_padding, minimum=0)
        check_int("cutout", self.cutout, minimum=0)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if not ok or (name == "std" and min(value) <= 0):
                rule = "three numbers" + (" > 0" if name == "std" else "") + " (per RGB channel, in [0, 1] pixel units)"
                raise ValueError(f"{name} must be {rule}, got {value!r}")
            if not all(math.isfinite(v) for v in value):
                raise ValueError(f"{name} must be finite numbers (no nan or inf), got {value!r}")
            setattr(self, name, tuple(float(v) for v in value))
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"mean and std must be given together, got mean={self.mean!r}, std={self.std!r}")

    @classmethod
    def from_dict(cls, values: Mapping) -> DataConfig:
        """Build from a JSON/CLI mapping; unknown keys are an error (wrong types fail validation)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ValueError(f"unknown DataConfig key {unknown[0]!r}{suggest(unknown[0], names)}; known keys: {', '.join(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in dataclasses.asdict(self).items()}
