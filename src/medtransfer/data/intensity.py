"""Intensity preprocessing options of ``preprocess``: Keras's ``rescale`` factor and percentile
intensity rescaling (skimage's ``rescale_intensity`` to each image's percentiles).

``percentiles`` changes the stored pixels (applied to each decoded, resized image, so it is part
of the image cache key); ``rescale`` changes only what the model sees, by folding the factor into
the input normalisation (:func:`rescaled_norm`), which every path that feeds a model (training,
evaluation, features, prediction, export) already applies.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from medtransfer.config import InputNorm
from medtransfer.errors import ConfigError

__all__ = ["check_percentiles", "parse_rescale", "rescaled_norm", "stretch_percentiles"]

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)\s*$")
_LEVELS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def parse_rescale(value: Any) -> float | None:
    """``rescale`` as a positive factor, None for the default ([0, 1] inputs, Keras's 1/255);
    a fraction like ``"1/255"`` (how Keras code writes it) is accepted."""
    if value is None:
        return None
    factor: float | None = None
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match and float(match.group(2)) > 0:
            factor = float(match.group(1)) / float(match.group(2))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        factor = float(value)
    if factor is None or not np.isfinite(factor) or factor <= 0:
        raise ConfigError(f"'rescale': got {value!r}; expected a positive factor such as 1/255 "
                          "(inputs in [0, 1], the default) or 1 (inputs in 0..255)")
    # Keras's 1./255 is what every model here sees by default: keep it the default exactly, so
    # writing it changes no unit key.
    return None if abs(factor * 255.0 - 1.0) < 1e-9 else factor


def check_percentiles(value: Any) -> tuple[float, float] | None:
    """``percentiles`` as (low, high) with 0 <= low < high <= 100, or None."""
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, list | tuple) else ()
    if (len(pair) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
            or not 0 <= pair[0] < pair[1] <= 100):
        raise ConfigError(f"'percentiles': got {value!r}; expected [low, high] with "
                          "0 <= low < high <= 100, e.g. [2, 98]")
    return (float(pair[0]), float(pair[1]))


def stretch_percentiles(image: np.ndarray, percentiles: tuple[float, float] | None) -> np.ndarray:
    """``image`` (uint8/uint16, any shape) with its ``percentiles`` (over all its pixels and
    channels) stretched linearly to the dtype's full range, values outside clipped: exactly
    ``skimage.exposure.rescale_intensity(image, in_range=tuple(np.percentile(image, percentiles)))``
    (truncated to integers as skimage does). A flat image is returned unchanged."""
    if percentiles is None:
        return image
    top = _LEVELS[image.dtype]
    low, high = (float(v) for v in np.percentile(image, percentiles))
    if high <= low:
        return image
    scaled = (np.clip(image, low, high) - low) / (high - low) * top
    return scaled.astype(image.dtype)


def rescaled_norm(norm: InputNorm | None, rescale: float | str | None, channels: int) -> InputNorm | None:
    """The input normalisation that makes a model see ``x × 255 × rescale`` (``x``: the [0, 1]
    image), then ``norm`` if any: ``((255 r x) - mean) / std`` is ``(x - mean / 255r) / (std / 255r)``.
    ``rescale`` None (or 1/255) leaves ``norm`` as it is."""
    factor = parse_rescale(rescale)
    if factor is None:
        return norm
    k = 255.0 * factor
    if norm is None:
        return ([0.0] * channels, [1.0 / k] * channels)
    mean, std = norm
    return ([float(m) / k for m in mean], [float(s) / k for s in std])
