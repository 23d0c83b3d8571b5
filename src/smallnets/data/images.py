"""Image decoding to RGB, the resize / crop transforms (torchvision's definitions, re-implemented with PIL) and normalisation."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from smallnets.imaging import (  # noqa: F401  (re-exported: the data pipelines import them from here)
    EVAL_CROP_FRACTION,
    IMAGE_EXTENSIONS,
    INTERPOLATION,
    INTERPOLATIONS,
    UnreadableImageError,
    center_crop,
    check_preprocessing,
    decode_image,
    image_size,
    is_image_name,
    load_image,
    resize_shorter,
    to_rgb,
)


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) by torchvision's RandomResizedCrop rule: 10 tries, then a center crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    left, top, w, h = random_resized_crop_box(*img.size, rng)
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


def to_uint8_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def norm_constants(mean, std, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(255 * mean, 1 / (255 * std)) as float32 [1, 3, 1, 1]: what ``normalize`` applies to uint8 pixels."""
    m = torch.tensor([255.0 * float(v) for v in mean], dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor([1.0 / (255.0 * float(v)) for v in std], dtype=torch.float32).view(1, 3, 1, 1)
    return m.to(device), s.to(device)


def normalize(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 ``(x / 255 - mean) / std``, as ``(x - 255 mean) * 1 / (255 std)``.

    The one normalisation of every pipeline and of ``make_eval_transform``: elementwise, so a batch
    and a single image give bit-identical values.
    """
    return x.to(torch.float32).sub_(shift).mul_(scale)


class EvalTransform:
    """PIL image -> normalised float CHW: resize shorter side, center crop, normalise (picklable for workers)."""

    def __init__(self, *, resize: int, crop: int, mean, std, interpolation: str = INTERPOLATION):
        self.resize, self.crop = int(resize), int(crop)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.interpolation = interpolation
        self._shift, self._scale = norm_constants(self.mean, self.std)

    def uint8(self, img: Image.Image) -> torch.Tensor:
        return to_uint8_chw(center_crop(resize_shorter(to_rgb(img), self.resize, self.interpolation), self.crop))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return normalize(self.uint8(img).unsqueeze(0), self._shift, self._scale)[0]

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.resize}, crop={self.crop}, mean={self.mean}, std={self.std}, interpolation={self.interpolation!r})"


def make_eval_transform(preprocessing: Mapping) -> EvalTransform:
    """The evaluation transform described by a bundle's JSON ``preprocessing`` dict (what ``predict`` uses)."""
    prep = check_preprocessing(preprocessing)
    resize, crop, interp = prep["resize"], prep["crop"], prep["interpolation"]
    return EvalTransform(resize=resize, crop=crop, mean=preprocessing["mean"], std=preprocessing["std"], interpolation=interp)
