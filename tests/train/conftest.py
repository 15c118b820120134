"""Tiny synthetic image problems and models for the training tests (fast on 2 CPU cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


def brightness_data(
    n: int,
    *,
    seed: int = 0,
    num_classes: int = 2,
    size: int = 8,
    channels: int = 1,
    dtype: type = np.uint8,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class k images have mean brightness rising with k, plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % num_classes) if labels is None else np.asarray(labels)
    top = np.iinfo(dtype).max
    level = (y + 0.5) / num_classes * top
    noise = rng.normal(0, 0.08 * top, (n, channels, size, size))
    x = np.clip(level[:, None, None, None] + noise, 0, top).astype(dtype)
    return x, y.astype(np.int64)


class TinyCNN(nn.Module):
    def __init__(self, outputs: int = 2, channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(4, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def tiny_cnn(
    outputs: int = 2, *, channels: int = 1, dropout: float = 0.0, seed: int = 0
) -> TinyCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCNN(outputs, channels, dropout)


@pytest.fixture
def toy() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return brightness_data(64, seed=1), brightness_data(32, seed=2)


@pytest.fixture
def make_data():
    """Factory for :func:`brightness_data`."""
    return brightness_data


@pytest.fixture
def make_model():
    """Factory for :func:`tiny_cnn` (seeded, without touching the global RNG)."""
    return tiny_cnn
