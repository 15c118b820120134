"""Resizing decoded images to the study's size (``PreprocessConfig.resize``): PIL's antialiased
bilinear filter (the default), PIL's nearest neighbour (Keras's ``load_img`` /
``flow_from_directory`` default) or bilinear interpolation without antialiasing (half-pixel
centres, as ``tf.image.resize`` and OpenCV's ``INTER_LINEAR``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["RESIZE_METHODS", "resize8", "resize16"]

RESIZE_METHODS = ("antialias", "nearest", "bilinear")  # PreprocessConfig.resize
_PIL_FILTER = {"antialias": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def _bilinear(array: np.ndarray, height: int, width: int, top: int) -> np.ndarray:
    """Bilinear resize without antialiasing (half-pixel centres, as ``tf.image.resize`` and
    OpenCV's ``INTER_LINEAR``) of an (H, W) or (H, W, C) array, rounded to 0..``top``."""
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)[0]
    y = y[0] if array.ndim == 2 else y.permute(1, 2, 0)
    return np.clip(np.rint(y.numpy()), 0, top)


def resize8(img: Image.Image, height: int, width: int, method: str) -> np.ndarray:
    """An 8-bit PIL image at ``height`` × ``width`` by ``method`` (see ``PreprocessConfig.resize``)."""
    if img.size == (width, height):
        return np.asarray(img)
    if method == "bilinear":
        return _bilinear(np.asarray(img), height, width, 255).astype(np.uint8)
    return np.asarray(img.resize((width, height), _PIL_FILTER[method]))


def resize16(array: np.ndarray, height: int, width: int, method: str = "antialias") -> np.ndarray:
    """A uint16 (H, W) or (H, W, C) array at ``height`` × ``width`` by ``method``."""
    if array.shape[:2] == (height, width):
        return array
    if method == "bilinear":
        return _bilinear(array, height, width, 65535).astype(np.uint16)
    # Pillow's float mode resizes with the same filters as 8-bit images, losslessly.
    planes = [array] if array.ndim == 2 else [array[:, :, c] for c in range(array.shape[2])]
    out = []
    for plane in planes:
        img = Image.fromarray(plane.astype(np.float32), mode="F")
        resized = np.asarray(img.resize((width, height), _PIL_FILTER[method]))
        out.append(np.clip(np.rint(resized), 0, 65535).astype(np.uint16))
    return out[0] if array.ndim == 2 else np.stack(out, axis=2)
