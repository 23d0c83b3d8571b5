"""The per-channel input normalisations published checkpoints were trained with (RGB, on 0..1 pixels)."""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's and most of timm's
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # Inception / TensorFlow ports: pixels mapped to -1..1
INCEPTION_STD = (0.5, 0.5, 0.5)
