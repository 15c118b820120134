"""Batched, seeded image augmentation with Keras ``ImageDataGenerator`` semantics.

Geometric transforms (rotation, shift, zoom, shear) become one per-sample affine matrix, applied
with a single ``affine_grid`` + ``grid_sample`` (bilinear). Flips are done by exact index
reversal (``torch.flip``), so a flip never blurs. Then brightness and contrast, then a clamp to
[0, 1].

Keras conventions kept on purpose, so published settings mean the same here:

* ``shear`` is an angle in **degrees** (Keras' ``shear_range``), so ``shear: 0.2`` is a tiny
  0.2° shear, not the 20 % that the number suggests.
* ``zoom`` samples horizontal and vertical factors independently from [1 - z, 1 + z] and uses
  them as the *sampling* scale: a factor above 1 shows more of the image (zooms out).
* ``brightness`` is a multiplicative factor range: (0.2, 0.8) always darkens.

Randomness: all parameters are drawn from the ``torch.Generator`` passed in, on the generator's
device, then moved to the batch's device. A CPU generator therefore gives the same parameters for
CPU and CUDA batches; a fixed block of 10 numbers per sample is drawn whatever is enabled, so
switching one transform on or off does not change the others' draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError

_PADDING = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}
_DRAWS = 10  # rotation, shift x, shift y, zoom x, zoom y, shear, hflip, vflip, brightness, contrast


@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time transforms; everything is off by default."""

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    zoom: float | tuple[float, float] = 0.0
    shear: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness: tuple[float, float] | None = None
    contrast: float = 0.0
    fill: Literal["nearest", "constant", "reflect"] = "nearest"

    def __post_init__(self) -> None:
        _check_range("rotation", self.rotation, 0, 180, "degrees, 0 <= x <= 180")
        _check_range("width_shift", self.width_shift, 0, 1, "a fraction of the width, 0 <= x <= 1")
        _check_range("height_shift", self.height_shift, 0, 1, "a fraction, 0 <= x <= 1")
        _check_range("shear", self.shear, 0, 89, "degrees, 0 <= x < 90")
        _check_range("contrast", self.contrast, 0, 1, "0 <= x <= 1")
        if isinstance(self.zoom, int | float):
            if not 0 <= self.zoom < 1:
                raise ConfigError(f"'zoom': got {self.zoom}; expected 0 <= z < 1 or [low, high]")
        elif len(self.zoom) != 2 or not 0 < self.zoom[0] <= self.zoom[1]:
            raise ConfigError(
                f"'zoom': got {self.zoom!r}; expected [low, high] with 0 < low <= high"
            )
        else:
            object.__setattr__(self, "zoom", (float(self.zoom[0]), float(self.zoom[1])))
        if self.brightness is not None:
            if len(self.brightness) != 2 or not 0 <= self.brightness[0] <= self.brightness[1]:
                raise ConfigError(
                    f"'brightness': got {self.brightness!r}; expected [low, high] factors "
                    "with 0 <= low <= high (1 = unchanged)"
                )
            object.__setattr__(
                self, "brightness", (float(self.brightness[0]), float(self.brightness[1]))
            )
        check_choice("fill", self.fill, _PADDING)

    @property
    def zoom_range(self) -> tuple[float, float]:
        """(low, high) sampling-scale factors."""
        if isinstance(self.zoom, tuple):
            return self.zoom
        return (1.0 - self.zoom, 1.0 + self.zoom)

    @property
    def geometric(self) -> bool:
        """Whether any resampling transform is on."""
        return bool(
            self.rotation
            or self.width_shift
            or self.height_shift
            or self.shear
            or self.zoom_range != (1.0, 1.0)
        )

    @property
    def enabled(self) -> bool:
        """Whether the augmenter changes anything at all."""
        return (
            self.geometric
            or self.horizontal_flip
            or self.vertical_flip
            or (self.brightness is not None and self.brightness != (1.0, 1.0))
            or self.contrast > 0
        )


def _check_range(name: str, value: float, low: float, high: float, allowed: str) -> None:
    if not low <= value <= high:
        raise ConfigError(f"'{name}': got {value}; expected {allowed}")


class Augmenter:
    """Apply an :class:`AugmentConfig` to float batches (B, C, H, W) in [0, 1]."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"Augmenter({self.cfg})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copy of ``x``; ``x`` itself when nothing is enabled."""
        cfg = self.cfg
        if not cfg.enabled:
            return x
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"Augmenter expects a float (B, C, H, W) batch, got {x.dtype} {tuple(x.shape)}"
            )
        batch, _, height, width = x.shape
        u = torch.rand((batch, _DRAWS), generator=generator, device=generator.device)
        u = u.to(device=x.device, dtype=torch.float32)
        if cfg.horizontal_flip:
            x = torch.where((u[:, 6] < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        if cfg.vertical_flip:
            x = torch.where((u[:, 7] < 0.5).view(-1, 1, 1, 1), x.flip(-2), x)
        if cfg.geometric:
            theta = self._theta(u, height, width)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(
                x, grid, mode="bilinear", padding_mode=_PADDING[cfg.fill], align_corners=False
            )
        if cfg.brightness is not None:
            low, high = cfg.brightness
            factor = low + u[:, 8] * (high - low)
            x = x * factor.to(x.dtype).view(-1, 1, 1, 1)
        if cfg.contrast > 0:
            factor = 1.0 + (2.0 * u[:, 9] - 1.0) * cfg.contrast
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * factor.to(x.dtype).view(-1, 1, 1, 1)
        return x.clamp(0.0, 1.0)

    def _theta(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 2, 3) output→input sampling matrices in ``affine_grid``'s normalized coordinates."""
        cfg = self.cfg
        angle = torch.deg2rad((2.0 * u[:, 0] - 1.0) * cfg.rotation)
        shift_x = (2.0 * u[:, 1] - 1.0) * cfg.width_shift * width
        shift_y = (2.0 * u[:, 2] - 1.0) * cfg.height_shift * height
        low, high = cfg.zoom_range
        zoom_x = low + u[:, 3] * (high - low)
        zoom_y = low + u[:, 4] * (high - low)
        shear = (2.0 * u[:, 5] - 1.0) * math.radians(cfg.shear)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Pixel-space (origin at the centre) matrix: rotation @ shear @ zoom, as Keras composes.
        a = cos * zoom_x
        b = (-cos * torch.sin(shear) - sin * torch.cos(shear)) * zoom_y
        c = sin * zoom_x
        d = (-sin * torch.sin(shear) + cos * torch.cos(shear)) * zoom_y
        # Normalized coords are pixels / (size / 2): conjugate by diag(W/2, H/2) so rotations
        # stay rotations on non-square images.
        ratio = height / width
        theta = torch.stack(
            [
                torch.stack([a, b * ratio, shift_x * 2.0 / width], dim=1),
                torch.stack([c / ratio, d, shift_y * 2.0 / height], dim=1),
            ],
            dim=1,
        )
        return theta
