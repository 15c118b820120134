"""Per-epoch index orders: shuffling, weighted oversampling, random undersampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.data.sampling import Sampling, epoch_order, epoch_size, sample_weights
from medtransfer.errors import ConfigError, DataError

LABELS = np.repeat([0, 1, 2], [90, 25, 10])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_none_is_the_plain_permutation():
    order = epoch_order(LABELS, Sampling.none, _gen(3))
    np.testing.assert_array_equal(order, torch.randperm(len(LABELS), generator=_gen(3)).numpy())
    assert epoch_size(LABELS, "none") == len(LABELS)


def test_sample_weights_give_each_class_an_equal_share():
    w = sample_weights(LABELS)
    assert w.sum() == pytest.approx(1.0)
    assert np.bincount(LABELS, weights=w).tolist() == pytest.approx([1 / 3] * 3)
    # A class missing from the labels (here 1) gets no share and does not dilute the others.
    w2 = sample_weights(np.array([0, 0, 2]))
    assert w2.tolist() == pytest.approx([0.25, 0.25, 0.5])


def test_oversampling_balances_in_expectation():
    gen = _gen(0)
    epochs = [epoch_order(LABELS, "oversample", gen) for _ in range(40)]
    assert all(len(e) == len(LABELS) for e in epochs)
    share = np.bincount(LABELS[np.concatenate(epochs)], minlength=3) / (40 * len(LABELS))
    # Binomial sd of a share over 5000 draws is about 0.007; allow 4 sd.
    assert share == pytest.approx([1 / 3] * 3, abs=0.03)
    assert any(len(set(e.tolist())) < len(e) for e in epochs)  # with replacement: repeats


def test_undersampling_is_exactly_balanced_without_repeats():
    gen = _gen(1)
    seen = set()
    for _ in range(5):
        order = epoch_order(LABELS, Sampling.undersample, gen)
        assert len(order) == epoch_size(LABELS, "undersample") == 30
        assert np.bincount(LABELS[order]).tolist() == [10, 10, 10]
        assert len(set(order.tolist())) == 30
        seen |= set(order[LABELS[order] == 0].tolist())
    assert len(seen) > 10  # a fresh subset of the big class every epoch


@pytest.mark.parametrize("kind", list(Sampling))
def test_deterministic_per_seed(kind):
    a = [epoch_order(LABELS, kind, g) for g in [_gen(7)] for _ in range(3)]
    g = _gen(7)
    b = [epoch_order(LABELS, kind, g) for _ in range(3)]
    c = epoch_order(LABELS, kind, _gen(8))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="'sampling': got 'smote'; allowed: none, oversample, undersample"):
        epoch_order(LABELS, "smote", _gen(0))
    with pytest.raises(DataError, match="non-empty 1-D integer label array"):
        epoch_size(np.array([0.5, 1.0]), "none")
