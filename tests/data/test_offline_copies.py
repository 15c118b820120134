"""augment.offline_copies: the training set grown once by augmented copies, from the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.data import AugmentConfig, Augmenter
from medtransfer.data.offline import augmented_copies, training_augment

FLIPS = AugmentConfig(horizontal_flip=True, vertical_flip=True, offline_copies=2)


def _train(n: int = 70, dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    top = 256 if dtype is np.uint8 else 65536
    return rng.integers(0, top, (n, 1, 6, 7)).astype(dtype), rng.integers(0, 2, n)


def test_no_augmentation_and_online_augmentation_leave_the_training_set_alone():
    train = _train()
    assert training_augment(train, AugmentConfig(), 1) == (train, None)
    online = AugmentConfig(rotation=10)
    got, aug = training_augment(train, online, 1)
    assert got is train and isinstance(aug, Augmenter) and aug.cfg == online


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_offline_copies_follow_the_originals_with_their_labels(dtype):
    images, labels = _train(dtype=dtype)
    (big, big_labels), aug = training_augment((images, labels), FLIPS, 5)
    assert aug is None  # batches are not augmented again
    assert big.dtype == images.dtype and big.shape == (3 * len(images), *images.shape[1:])
    assert np.array_equal(big[: len(images)], images)
    assert np.array_equal(big_labels, np.tile(labels, 3))
    for k in (1, 2):  # every copy is its original flipped (exact, no blur), about 3 in 4 changed
        copy = big[k * len(images) : (k + 1) * len(images)]
        for c, o in zip(copy, images, strict=True):
            assert any(np.array_equal(c[0], f) for f in (o[0], o[0, :, ::-1], o[0, ::-1], o[0, ::-1, ::-1]))
        changed = sum(not np.array_equal(c, o) for c, o in zip(copy, images, strict=True))
        assert 0.5 * len(images) < changed < len(images)
    assert not np.array_equal(big[len(images) : 2 * len(images)], big[2 * len(images) :])


def test_copies_are_drawn_from_the_seed():
    images, _ = _train()
    cfg = AugmentConfig(rotation=30, zoom=0.2, brightness=(0.7, 1.3))
    a, b, c = (augmented_copies(images, cfg, s) for s in (4, 4, 5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # The augmenter's output on the [0, 1] floats, drawn from the copies' own generator and
    # quantised back to the images' dtype.
    one = augmented_copies(images[:3], cfg, 4)
    assert one.shape == (3, *images.shape[1:]) and one.dtype == np.uint8
    state = np.random.SeedSequence([4, 0x0FF1]).generate_state(1, np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state))
    ref = Augmenter(cfg)(torch.from_numpy(images[:3]).float() / 255, gen)
    assert np.array_equal(one, torch.round(ref * 255).numpy().astype(np.uint8))


def test_copies_refuse_float_images():
    with pytest.raises(ValueError, match=r"uint8/uint16"):
        augmented_copies(np.zeros((2, 1, 4, 4), np.float32), FLIPS, 0)
