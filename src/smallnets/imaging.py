"""Image decoding to RGB and the evaluation preprocessing, with PIL and numpy only (no torch).

The one definition of how an image becomes a model input at evaluation time: the PyTorch
pipelines (``smallnets.data.images``) and the ONNX runtime path (``smallnets.runtime``, which
must run where torch is not installed) both use these functions, so an exported model sees
exactly the pixels its PyTorch original saw.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

# Files with these suffixes (lower-cased) are treated as images; anything else is skipped and counted.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"}
)
EVAL_CROP_FRACTION = 0.875  # eval resizes the shorter side to round(size / 0.875), then center-crops size
INTERPOLATION = "bilinear"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class UnreadableImageError(ValueError):
    """A file that is not a decodable image (truncated, corrupt, empty or not an image at all)."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"{name}: {detail}")
        self.name, self.detail = name, detail


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit greyscale is scaled to 8 bits (PIL's own ``convert`` would clip it at 255); alpha is
    dropped as ``convert("RGB")`` does (as torchvision and timm do); CMYK, palette, L, LA and 1-bit
    go through PIL's conversions.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        a = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        a8 = ((a * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        return Image.fromarray(a8, mode="L").convert("RGB")
    return img.convert("RGB")


def decode_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Fully decode a file path or encoded bytes to an RGB image; raise ``UnreadableImageError`` if it cannot be."""
    label = name if name is not None else (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes) and not source:
        raise UnreadableImageError(label, "empty file")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()  # decode now: a truncated file fails here, not later halfway through an epoch
            rgb = to_rgb(img)
            if rgb is img:
                rgb = img.copy()
        return rgb
    except FileNotFoundError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ... for bad files
        raise UnreadableImageError(label, f"not a readable image ({type(e).__name__}: {e})") from e


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB with the conversion rules the data pipelines use."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"load_image: no such file: {os.fspath(path)!r}")
    return decode_image(path)


def image_size(source: str | os.PathLike | bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone, or None when the file cannot be identified."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return img.size
    except Exception:
        return None


INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def resize_shorter(img: Image.Image, size: int, interpolation: str = INTERPOLATION) -> Image.Image:
    """Resize so the shorter side is ``size`` (longer side truncated, as torchvision's Resize(int))."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_long = int(size * long / short)
    return img.resize((size, new_long) if w <= h else (new_long, size), INTERPOLATIONS[interpolation])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if w < size or h < size:
        raise ValueError(f"center_crop: image {w}x{h} is smaller than the crop {size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def check_preprocessing(preprocessing: Mapping) -> dict:
    """Validate a bundle's JSON ``preprocessing`` dict (resize, crop, mean, std[, interpolation]); return it normalised."""
    if not isinstance(preprocessing, Mapping):
        raise TypeError(f"preprocessing must be a dict, got {type(preprocessing).__name__}")
    missing = [k for k in ("resize", "crop", "mean", "std") if k not in preprocessing]
    if missing:
        raise ValueError(f"preprocessing is missing {', '.join(map(repr, missing))}; got keys {sorted(preprocessing)}")
    interp = preprocessing.get("interpolation", INTERPOLATION)
    if interp not in INTERPOLATIONS:
        raise ValueError(f"preprocessing['interpolation'] must be one of {sorted(INTERPOLATIONS)}, got {interp!r}")
    resize, crop = preprocessing["resize"], preprocessing["crop"]
    for key, value in (("resize", resize), ("crop", crop)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"preprocessing[{key!r}] must be an integer >= 1, got {value!r}")
    if resize < crop:
        raise ValueError(f"preprocessing['resize'] must be >= preprocessing['crop'] ({crop}), got {resize}")
    for key in ("mean", "std"):
        value = preprocessing[key]
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError(f"preprocessing[{key!r}] must be 3 numbers (R, G, B), got {value!r}")
    if any(float(v) <= 0 for v in preprocessing["std"]):
        raise ValueError(f"preprocessing['std'] must be > 0, got {preprocessing['std']!r}")
    return {"resize": resize, "crop": crop, "mean": [float(v) for v in preprocessing["mean"]],
            "std": [float(v) for v in preprocessing["std"]], "interpolation": interp}  # fmt: skip


def norm_constants_np(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """(255 * mean, 1 / (255 * std)) as float32 [1, 3, 1, 1], computed as the torch pipeline computes them."""
    m = np.array([255.0 * float(v) for v in mean], dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.array([1.0 / (255.0 * float(v)) for v in std], dtype=np.float32).reshape(1, 3, 1, 1)
    return m, s


def eval_pixels(img: Image.Image, preprocessing: Mapping) -> np.ndarray:
    """RGB PIL image -> uint8 HWC array after the evaluation resize and center crop."""
    img = center_crop(resize_shorter(to_rgb(img), preprocessing["resize"], preprocessing.get("interpolation", INTERPOLATION)), preprocessing["crop"])
    return np.array(img, dtype=np.uint8, copy=True)


def normalize_np(pixels: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW ``(x - 255 mean) * 1 / (255 std)``: bit-identical to ``smallnets.data.images.normalize``."""
    x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32)
    x -= shift
    x *= scale
    return x
