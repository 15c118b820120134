"""Batched, per-sample intensity and colour augmentations on float (B, C, H, W) batches in [0, 1].

Each function takes its per-sample amounts as tensors drawn by :class:`~medtransfer.data.augment.
Augmenter` (no randomness here). Amounts of intensity are on the batch's [0, 1] scale; the config
states them on the 8-bit scale (0–255), as Keras and albumentations write them for 8-bit images.

* :func:`channel_shift` is Keras's ``channel_shift_range``: one shift for all channels, clipped
  to the image's own minimum and maximum (``apply_channel_shift``).
* :func:`rgb_shift` shifts each channel independently (albumentations' ``RGBShift``).
* :func:`hsv_shift` shifts hue (a fraction of the colour circle), saturation and value in HSV
  space (albumentations' ``HueSaturationValue``), through :func:`rgb_to_hsv` / :func:`hsv_to_rgb`:
  torchvision's colour ops take one amount per call, not one per image.
* :func:`grayscale` and :func:`equalize` use torchvision's batched ops (``rgb_to_grayscale``,
  ITU-R 601-2 luma as PIL; ``equalize``, PIL's ``ImageOps.equalize`` on 256 levels) on the images
  a boolean mask selects.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = ["channel_shift", "equalize", "grayscale", "hsv_shift", "hsv_to_rgb", "rgb_shift", "rgb_to_hsv"]


def _col(v: Tensor, x: Tensor) -> Tensor:
    """Per-sample values (B,) or (B, C) shaped to broadcast over ``x`` (B, C, H, W)."""
    v = v.to(device=x.device, dtype=x.dtype)
    return v.view(len(v), -1, 1, 1)


def _check_rgb(x: Tensor, what: str) -> None:
    if x.shape[1] != 3:
        raise ValueError(f"{what} needs RGB batches (B, 3, H, W), got {x.shape[1]} channel(s)")


def channel_shift(x: Tensor, shift: Tensor) -> Tensor:
    """Keras's channel shift: ``shift`` (B,) added to every channel, each image then clipped to
    its own [min, max] over all channels (as ``apply_channel_shift``)."""
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.minimum(torch.maximum(x + _col(shift, x), low), high)


def rgb_shift(x: Tensor, shift: Tensor) -> Tensor:
    """``shift`` (B, 3): one amount per RGB image and channel, added, clipped to [0, 1]."""
    _check_rgb(x, "rgb_shift")
    return (x + _col(shift, x)).clamp(0.0, 1.0)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB (B, 3, H, W) in [0, 1] → HSV, each in [0, 1] (hue as a fraction of the circle)."""
    _check_rgb(x, "rgb_to_hsv")
    r, g, b = x.unbind(1)
    value, top = x.max(dim=1)
    delta = value - x.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    sat = torch.where(value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)), 0.0)
    hue = torch.where(top == 0, ((g - b) / safe) % 6.0,
                      torch.where(top == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return torch.stack([hue, sat, value], dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV (B, 3, H, W), each in [0, 1] → RGB in [0, 1]."""
    hue, sat, value = hsv.unbind(1)
    channels = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = (n + hue * 6.0) % 6.0
        ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
        channels.append(value - value * sat * ramp)
    return torch.stack(channels, dim=1)


def hsv_shift(x: Tensor, shift: Tensor) -> Tensor:
    """``shift`` (B, 3): hue (a fraction of the circle, wraps around), saturation and value
    (added, clipped to [0, 1]) of each RGB image."""
    _check_rgb(x, "hsv_shift")
    hsv = rgb_to_hsv(x.clamp(0.0, 1.0))
    s = shift.to(device=x.device, dtype=x.dtype).view(len(x), 3, 1, 1)
    hue = (hsv[:, 0] + s[:, 0]) % 1.0
    sat = (hsv[:, 1] + s[:, 1]).clamp(0.0, 1.0)
    value = (hsv[:, 2] + s[:, 2]).clamp(0.0, 1.0)
    return hsv_to_rgb(torch.stack([hue, sat, value], dim=1)).clamp(0.0, 1.0)


def grayscale(x: Tensor, mask: Tensor) -> Tensor:
    """The RGB images where ``mask`` (B,) is true made grey (luma in all three channels)."""
    _check_rgb(x, "grayscale")
    grey = TF.rgb_to_grayscale(x.clamp(0.0, 1.0), num_output_channels=3)
    return torch.where(_col(mask, x).bool(), grey, x)


def equalize(x: Tensor, mask: Tensor) -> Tensor:
    """The images where ``mask`` (B,) is true histogram-equalised, each channel on its own
    (PIL's ``ImageOps.equalize``; the result has 256 levels)."""
    eq = TF.equalize(x.clamp(0.0, 1.0))
    return torch.where(_col(mask, x).bool(), eq, x)
