"""Batched, seeded image augmentation with Keras ``ImageDataGenerator`` semantics.

Geometric transforms (rotation, shift, zoom, shear) become one per-sample affine matrix (Keras's
``rotation @ shift @ shear @ zoom``), applied with a single ``affine_grid`` + ``grid_sample``
(bilinear). Then Keras's channel shift, flips, by exact index reversal (``torch.flip``) so a flip
never blurs, then brightness, in Keras's order; then contrast; then the colour transforms of
:mod:`medtransfer.data.color` (RGB shift, HSV shift, grey, histogram equalisation, in that
order), then a clamp to [0, 1]. :class:`AugmentParams` says what each parameter means and where
the shifts' naming differs from Keras's code. ``offline_copies`` augments the training set once
instead (:mod:`medtransfer.data.offline`).

Keras conventions kept on purpose, so published settings mean the same here:

* ``shear`` is an angle in **degrees** (Keras' ``shear_range``), so ``shear: 0.2`` is a tiny
  0.2° shear, not the 20 % that the number suggests.
* ``zoom`` samples horizontal and vertical factors independently from [1 - z, 1 + z] and uses
  them as the *sampling* scale: a factor above 1 shows more of the image (zooms out).
* ``brightness`` is a multiplicative factor range: (0.2, 0.8) always darkens.
* ``channel_shift`` is Keras's ``channel_shift_range`` in 8-bit units (0–255), as Keras applies it
  before ``rescale``: one shift for all channels, clipped to the image's own min and max.

Randomness: all parameters are drawn from the ``torch.Generator`` passed in, on the generator's
device, then moved to the batch's device. A CPU generator therefore gives the same parameters for
CPU and CUDA batches; a fixed block of 10 numbers per sample is drawn whatever is enabled, so
switching one transform on or off does not change the others' draws. The intensity and colour
transforms (channel shift and after) draw a second fixed block of 9 numbers per sample after it,
only when one of them is on, so a config without them draws exactly what it always drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from medtransfer.config import check_choice
from medtransfer.data import color
from medtransfer.errors import ConfigError

_PADDING = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}
_DRAWS = 10  # rotation, shift x, shift y, zoom x, zoom y, shear, hflip, vflip, brightness, contrast
_COLOR_DRAWS = 9  # channel shift, rgb shift ×3, hsv shift ×3, grayscale, equalize


@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time transforms; everything is off by default."""

    rotation: float = 0.0  # random rotation within ± this many degrees
    width_shift: float = 0.0  # random horizontal shift within ± this fraction of the width
    height_shift: float = 0.0  # random vertical shift within ± this fraction of the height
    zoom: float | tuple[float, float] = 0.0  # scale drawn from [1 - z, 1 + z], or [low, high]
    shear: float = 0.0  # random shear within ± this many degrees (Keras's shear_range)
    horizontal_flip: bool = False  # mirror left-right with probability 0.5
    vertical_flip: bool = False  # mirror top-bottom with probability 0.5
    brightness: tuple[float, float] | None = None  # brightness factor drawn from [low, high]
    contrast: float = 0.0  # contrast factor drawn from [1 - c, 1 + c] around the image mean
    fill: Literal["nearest", "constant", "reflect"] = "nearest"  # pixels moved in from outside
    # Keras's channel_shift_range: one shift within ± this (8-bit units, 0–255) added to every
    # channel, clipped to the image's own min and max
    channel_shift: float = 0.0
    # each channel shifted on its own within ± this (8-bit units), or [r, g, b] limits (RGB images)
    rgb_shift: float | tuple[float, float, float] = 0.0
    # [hue in degrees, saturation, value (both in 8-bit units, 0–255)]: shifts within ± each, in HSV
    # space (RGB images)
    hsv_shift: tuple[float, float, float] | None = None
    grayscale: float = 0.0  # probability of turning an RGB image grey (three equal channels)
    equalize: float = 0.0  # probability of histogram equalisation, each channel (PIL's equalize)
    # 0: augment every training batch; N: add N augmented copies of each training image once,
    # before training (drawn from the seed), and train on them without augmenting batches
    offline_copies: int = 0

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
        _check_range("channel_shift", self.channel_shift, 0, 255, "8-bit units, 0 <= x <= 255")
        _check_range("grayscale", self.grayscale, 0, 1, "a probability, 0 <= p <= 1")
        _check_range("equalize", self.equalize, 0, 1, "a probability, 0 <= p <= 1")
        if isinstance(self.rgb_shift, int | float):
            _check_range("rgb_shift", self.rgb_shift, 0, 255, "8-bit units, 0 <= x <= 255, or [r, g, b]")
        elif len(self.rgb_shift) != 3 or not all(0 <= v <= 255 for v in self.rgb_shift):
            raise ConfigError(f"'rgb_shift': got {self.rgb_shift!r}; expected 0 <= x <= 255 or [r, g, b] "
                              "limits, each 0..255 (8-bit units)")
        else:
            object.__setattr__(self, "rgb_shift", tuple(float(v) for v in self.rgb_shift))
        if self.hsv_shift is not None:
            hsv = tuple(self.hsv_shift)
            if len(hsv) != 3 or not (0 <= hsv[0] <= 180 and 0 <= hsv[1] <= 255 and 0 <= hsv[2] <= 255):
                raise ConfigError(f"'hsv_shift': got {self.hsv_shift!r}; expected [hue, saturation, value] "
                                  "limits: hue 0..180 degrees, saturation and value 0..255 (8-bit units)")
            object.__setattr__(self, "hsv_shift", tuple(float(v) for v in hsv))
        if isinstance(self.offline_copies, bool) or not isinstance(self.offline_copies, int) \
                or not 0 <= self.offline_copies <= 16:
            raise ConfigError(f"'offline_copies': got {self.offline_copies!r}; expected an integer "
                              "0..16 (0: augment every batch; N: N augmented copies of the training set)")
        if self.offline_copies and not self.enabled:
            raise ConfigError(f"'offline_copies': got {self.offline_copies}, but no transform is on; "
                              "copies would repeat the images unchanged (set e.g. rotation or flips)")

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
            or self.colored
        )

    @property
    def rgb_limits(self) -> tuple[float, float, float]:
        """(r, g, b) shift limits, in 8-bit units."""
        if isinstance(self.rgb_shift, tuple):
            return self.rgb_shift
        return (float(self.rgb_shift),) * 3

    @property
    def colored(self) -> bool:
        """Whether any transform of the second block (channel shift and after) is on."""
        return bool(
            self.channel_shift
            or any(self.rgb_limits)
            or (self.hsv_shift is not None and any(self.hsv_shift))
            or self.grayscale
            or self.equalize
        )

    @property
    def needs_rgb(self) -> list[str]:
        """The keys that are on and work on RGB images only."""
        on = {"rgb_shift": any(self.rgb_limits), "grayscale": self.grayscale > 0,
              "hsv_shift": self.hsv_shift is not None and any(self.hsv_shift)}
        return [k for k, v in on.items() if v]

    @property
    def online(self) -> bool:
        """Whether training batches are augmented (on, and not replaced by offline copies)."""
        return self.enabled and not self.offline_copies


def _check_range(name: str, value: float, low: float, high: float, allowed: str) -> None:
    if not low <= value <= high:
        raise ConfigError(f"'{name}': got {value}; expected {allowed}")


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample transform parameters, each a tensor of shape (B,) or None (transform off).

    Units are those of Keras ``ImageDataGenerator.apply_transform``'s parameter dict, and a batch
    of :class:`AugmentParams` gives what ``apply_transform`` gives for the same values (checked
    against Keras itself in ``tests/data/test_augment_keras.py``): ``rotation`` (Keras ``theta``)
    in degrees; ``shift_x`` / ``shift_y`` in pixels along the columns / rows, the sampling point
    moving by ``+shift`` (so the content moves by ``-shift``); ``zoom_x`` / ``zoom_y`` sampling
    scales along the columns / rows; ``shear`` in degrees; ``flip_h`` / ``flip_v`` booleans;
    ``brightness`` and ``contrast`` factors; ``channel_shift`` (B,) and ``rgb_shift`` (B, C)
    amounts and ``hsv_shift`` (B, 3) shifts (hue as a fraction of the circle) on the [0, 1] scale;
    ``grayscale`` and ``equalize`` booleans.

    One naming difference from Keras, on purpose: Keras draws the shift it applies along the
    columns (its ``tx``) from ``height_shift_range`` × height and the one along the rows
    (``ty``) from ``width_shift_range`` × width, so its ``height_shift_range`` moves images
    sideways (keras-team/keras#17398, keras-preprocessing#348). Here ``width_shift`` moves
    images sideways by up to that fraction of the width and ``height_shift`` up and down, as
    Keras documents.
    """

    rotation: torch.Tensor | None = None
    shift_x: torch.Tensor | None = None
    shift_y: torch.Tensor | None = None
    zoom_x: torch.Tensor | None = None
    zoom_y: torch.Tensor | None = None
    shear: torch.Tensor | None = None
    flip_h: torch.Tensor | None = None
    flip_v: torch.Tensor | None = None
    brightness: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    channel_shift: torch.Tensor | None = None
    rgb_shift: torch.Tensor | None = None
    hsv_shift: torch.Tensor | None = None
    grayscale: torch.Tensor | None = None
    equalize: torch.Tensor | None = None

    @property
    def geometric(self) -> bool:
        """Whether any resampling parameter is set."""
        return any(
            v is not None
            for v in (self.rotation, self.shift_x, self.shift_y, self.zoom_x, self.zoom_y, self.shear)
        )


class Augmenter:
    """Apply an :class:`AugmentConfig` to float batches (B, C, H, W) in [0, 1]."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"Augmenter({self.cfg})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copy of ``x``; ``x`` itself when nothing is enabled."""
        if not self.cfg.enabled:
            return x
        _check_batch(x)
        batch, _, height, width = x.shape
        return self.apply(x, self.draw(batch, height, width, generator))

    def draw(
        self, batch: int, height: int, width: int, generator: torch.Generator
    ) -> AugmentParams:
        """Random parameters for ``batch`` images of ``height`` × ``width`` pixels.

        Keras's distributions: rotation, shifts and shear uniform in ± their range, the two zoom
        factors independent and uniform in the zoom range, each flip with probability 1/2,
        brightness uniform in its range. A fixed block of draws per sample, on the generator's
        device, whatever is enabled; then, if any intensity or colour transform is on, a second
        one for them (shifts uniform in ± their limits, grey and equalisation with their
        probabilities).
        """
        cfg = self.cfg
        u = torch.rand((batch, _DRAWS), generator=generator, device=generator.device)
        u = u.to(torch.float32)

        def sym(col: int, half: float) -> torch.Tensor:
            return (2.0 * u[:, col] - 1.0) * half

        low, high = cfg.zoom_range
        zoom = cfg.zoom_range != (1.0, 1.0)
        bright = cfg.brightness is not None and cfg.brightness != (1.0, 1.0)
        colors = self._draw_colors(batch, generator) if cfg.colored else {}
        return AugmentParams(
            rotation=sym(0, cfg.rotation) if cfg.rotation else None,
            shift_x=sym(1, cfg.width_shift * width) if cfg.width_shift else None,
            shift_y=sym(2, cfg.height_shift * height) if cfg.height_shift else None,
            zoom_x=low + u[:, 3] * (high - low) if zoom else None,
            zoom_y=low + u[:, 4] * (high - low) if zoom else None,
            shear=sym(5, cfg.shear) if cfg.shear else None,
            flip_h=u[:, 6] < 0.5 if cfg.horizontal_flip else None,
            flip_v=u[:, 7] < 0.5 if cfg.vertical_flip else None,
            brightness=(
                cfg.brightness[0] + u[:, 8] * (cfg.brightness[1] - cfg.brightness[0])
                if bright and cfg.brightness is not None
                else None
            ),
            contrast=1.0 + sym(9, cfg.contrast) if cfg.contrast > 0 else None,
            **colors,
        )

    def _draw_colors(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor | None]:
        cfg = self.cfg
        u = torch.rand((batch, _COLOR_DRAWS), generator=generator, device=generator.device)
        u = u.to(torch.float32)

        def sym(cols: slice, half: torch.Tensor) -> torch.Tensor:
            return (2.0 * u[:, cols] - 1.0) * half

        rgb = torch.tensor(cfg.rgb_limits, device=u.device) / 255.0
        hsv = torch.tensor(cfg.hsv_shift or (0.0, 0.0, 0.0), device=u.device) / torch.tensor(
            [360.0, 255.0, 255.0], device=u.device)
        return {
            "channel_shift": sym(slice(0, 1), torch.tensor(cfg.channel_shift / 255.0))[:, 0]
            if cfg.channel_shift else None,
            "rgb_shift": sym(slice(1, 4), rgb) if bool(rgb.any()) else None,
            "hsv_shift": sym(slice(4, 7), hsv) if bool(hsv.any()) else None,
            "grayscale": u[:, 7] < cfg.grayscale if cfg.grayscale else None,
            "equalize": u[:, 8] < cfg.equalize if cfg.equalize else None,
        }

    def apply(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """``x`` transformed by ``p``, in Keras's order: the affine resampling, the channel
        shift, the flips (exact index reversal), then brightness; then contrast, the colour
        transforms (RGB shift, HSV shift, grey, equalisation) and a clamp to [0, 1]."""
        _check_batch(x)
        _, _, height, width = x.shape

        def col(v: torch.Tensor) -> torch.Tensor:
            return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

        if p.geometric:
            theta = _theta(p, len(x), height, width).to(device=x.device, dtype=x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(
                x, grid, mode="bilinear", padding_mode=_PADDING[self.cfg.fill], align_corners=False
            )
        if p.channel_shift is not None:
            x = color.channel_shift(x, p.channel_shift)
        if p.flip_h is not None:
            x = torch.where(col(p.flip_h).bool(), x.flip(-1), x)
        if p.flip_v is not None:
            x = torch.where(col(p.flip_v).bool(), x.flip(-2), x)
        if p.brightness is not None:
            x = x * col(p.brightness)
        if p.contrast is not None:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * col(p.contrast)
        if p.rgb_shift is not None:
            x = color.rgb_shift(x, p.rgb_shift)
        if p.hsv_shift is not None:
            x = color.hsv_shift(x, p.hsv_shift)
        if p.grayscale is not None:
            x = color.grayscale(x, p.grayscale)
        if p.equalize is not None:
            x = color.equalize(x, p.equalize)
        return x.clamp(0.0, 1.0)


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(
            f"Augmenter expects a float (B, C, H, W) batch, got {x.dtype} {tuple(x.shape)}"
        )


def _theta(p: AugmentParams, batch: int, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) output→input sampling matrices in ``affine_grid``'s normalized coordinates.

    Keras's matrix, in pixels with the origin at the image centre and (x, y) = (column, row):
    ``rotation @ shift @ shear @ zoom``, so the shift is applied in the rotated frame.
    """

    def get(v: torch.Tensor | None, default: float) -> torch.Tensor:
        if v is None:
            return torch.full((batch,), default, dtype=torch.float64)
        return v.detach().to(device="cpu", dtype=torch.float64)

    angle = torch.deg2rad(get(p.rotation, 0.0))
    shear = torch.deg2rad(get(p.shear, 0.0))
    zoom_x, zoom_y = get(p.zoom_x, 1.0), get(p.zoom_y, 1.0)
    shift_x, shift_y = get(p.shift_x, 0.0), get(p.shift_y, 0.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = cos * zoom_x
    b = (-cos * torch.sin(shear) - sin * torch.cos(shear)) * zoom_y
    c = sin * zoom_x
    d = (-sin * torch.sin(shear) + cos * torch.cos(shear)) * zoom_y
    t_x = cos * shift_x - sin * shift_y
    t_y = sin * shift_x + cos * shift_y
    # Normalized coords are pixels / (size / 2): conjugate by diag(W/2, H/2) so rotations
    # stay rotations on non-square images.
    ratio = height / width
    return torch.stack(
        [
            torch.stack([a, b * ratio, t_x * 2.0 / width], dim=1),
            torch.stack([c / ratio, d, t_y * 2.0 / height], dim=1),
        ],
        dim=1,
    ).to(torch.float32)
