"""Synthetic 'phantom' images with texture at several scales, written into class folders.

Unrelated phantoms differ in perceptual hash (median ~32 of 64 bits) and fine detail, so any
duplicate the audit reports in these tests was planted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def phantom(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A (size, size) uint8 grey image: smooth random fields at 4, 8 and 16 px, in 30..220."""
    out = np.zeros((size, size))
    for scale, weight in ((4, 1.0), (8, 0.6), (16, 0.4)):
        field = rng.normal(size=(size // scale + 1, size // scale + 1)).astype(np.float32)
        img = Image.fromarray(field, mode="F").resize((size, size), Image.Resampling.BICUBIC)
        out += weight * np.asarray(img)
    out = (out - out.min()) / np.ptp(out) * 190 + 30
    return out.astype(np.uint8)


def tint(grey: np.ndarray, rgb: tuple[float, float, float] = (1.0, 0.85, 0.6)) -> np.ndarray:
    """A sepia-like tinted (H, W, 3) copy of a grey image."""
    return np.clip(grey[:, :, None] * np.array(rgb)[None, None, :], 0, 255).astype(np.uint8)


def noisy(grey: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    return np.clip(grey + rng.normal(0, sigma, grey.shape), 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


@pytest.fixture
def make_phantoms(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_phantoms({"a": dict(n=10), "b": dict(n=10, ext=".jpg", tinted=True)})``.

    Per class: ``n`` images, ``ext`` (format from the suffix), ``tinted`` (sepia RGB), ``size``
    (int or a list of sizes to cycle through), ``prefix`` (file-name prefix)."""

    def make(spec: dict[str, dict], *, root: Path | None = None, seed: int = 0) -> Path:
        root = root if root is not None else tmp_path / "data"
        rng = np.random.default_rng(seed)
        for name, opts in spec.items():
            sizes = opts.get("size", 64)
            sizes = sizes if isinstance(sizes, list) else [sizes]
            for i in range(opts.get("n", 10)):
                grey = phantom(rng, sizes[i % len(sizes)])
                pixels = tint(grey) if opts.get("tinted") else grey
                save(pixels, root / name / f"{opts.get('prefix', 'img')}{i:03d}{opts.get('ext', '.png')}")
        return root

    return make


@pytest.fixture
def ph() -> SimpleNamespace:
    """The image helpers of this module, for tests: ``ph.phantom``, ``ph.noisy``, ``ph.save``."""
    return SimpleNamespace(phantom=phantom, tint=tint, noisy=noisy, save=save)
