"""Per-epoch index orders that rebalance classes: plain shuffling, oversampling, undersampling.

* ``none`` — a permutation of all N training indices (``torch.randperm``), as before.
* ``oversample`` — N indices drawn with replacement, each with probability ∝ 1 / its class count,
  so every class is drawn equally often in expectation (``torch.utils.data.WeightedRandomSampler``).
* ``undersample`` — every class cut to the size of the smallest, a fresh random subset each
  epoch, shuffled: exactly balanced epochs of ``K × min count`` images.

All draws come from the ``torch.Generator`` passed in, so a seed fixes every epoch.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from medtransfer.errors import ConfigError, DataError

__all__ = ["Sampling", "epoch_order", "epoch_size", "sample_weights"]


class Sampling(StrEnum):
    """How each training epoch draws its images."""

    none = "none"
    oversample = "oversample"
    undersample = "undersample"


def _labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"sampling needs a non-empty 1-D integer label array, got {labels.dtype} "
                        f"{labels.shape}")
    if labels.min() < 0:
        raise DataError(f"sampling: labels must be >= 0, got {labels.min()}")
    return labels.astype(np.int64, copy=False)


def _sampling(value: Sampling | str) -> Sampling:
    try:
        return Sampling(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Sampling)
        raise ConfigError(f"'sampling': got {value!r}; allowed: {allowed}") from None


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample probabilities ∝ 1 / class count (they sum to 1; each class gets 1/K)."""
    labels = _labels(labels)
    counts = np.bincount(labels)
    present = int((counts > 0).sum())
    return 1.0 / (counts[labels] * present)


def epoch_size(labels: np.ndarray, sampling: Sampling | str) -> int:
    """Indices per epoch: N, except ``undersample``: classes present × smallest class count."""
    labels = _labels(labels)
    if _sampling(sampling) is Sampling.undersample:
        counts = np.bincount(labels)
        return int((counts > 0).sum() * counts[counts > 0].min())
    return len(labels)


def epoch_order(
    labels: np.ndarray, sampling: Sampling | str, generator: torch.Generator
) -> np.ndarray:
    """One epoch's training indices, in the order to visit them."""
    labels = _labels(labels)
    kind = _sampling(sampling)
    n = len(labels)
    if kind is Sampling.none:
        return torch.randperm(n, generator=generator).numpy()
    if kind is Sampling.oversample:
        weights = sample_weights(labels).tolist()
        sampler = WeightedRandomSampler(weights, n, replacement=True, generator=generator)
        return np.fromiter(iter(sampler), dtype=np.int64, count=n)
    counts = np.bincount(labels)
    keep = counts[counts > 0].min()
    chosen = []
    for c in np.flatnonzero(counts):
        members = np.flatnonzero(labels == c)
        pick = torch.randperm(len(members), generator=generator)[:keep].numpy()
        chosen.append(members[pick])
    subset = np.concatenate(chosen)
    return subset[torch.randperm(len(subset), generator=generator).numpy()]
