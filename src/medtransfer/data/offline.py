"""Offline augmentation: the training set grown once, before training, by augmented copies of
each image (seeds 002 and 004 doubled their training sets so), instead of augmenting batches.

Only the training part ever gets copies: the caller passes the training arrays alone, so
validation and test images, and the split records and audit made from the unsplit data, are
untouched. The copies are drawn on the CPU from a generator seeded by the unit's seed, chunk by
chunk, so the same seed gives the same copies on any device; they are quantised back to the
images' own dtype (uint8 / uint16), as saving augmented images to files would.
"""

from __future__ import annotations

import numpy as np
import torch

from medtransfer.data.augment import AugmentConfig, Augmenter

__all__ = ["augmented_copies", "training_augment"]

_CHUNK = 64  # images augmented at a time (bounded float memory)
_TAG = 0x0FF1  # keeps the copies' generator apart from the training loop's draws of the same seed
_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}

Arrays = tuple[np.ndarray, np.ndarray]


def augmented_copies(images: np.ndarray, cfg: AugmentConfig, seed: int, copies: int = 1) -> np.ndarray:
    """``copies`` augmented versions of ``images`` (uint8/uint16 (N, C, H, W)), one after the
    other: (copies × N, C, H, W), same dtype, drawn from ``seed``."""
    if images.ndim != 4 or images.dtype not in _SCALE:
        raise ValueError(f"augmented_copies expects uint8/uint16 (N, C, H, W) images, got "
                         f"{images.dtype} {images.shape}")
    scale = _SCALE[images.dtype]
    aug = Augmenter(cfg)
    state = np.random.SeedSequence([int(seed), _TAG]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state))
    out = np.empty((copies * len(images), *images.shape[1:]), dtype=images.dtype)
    for k in range(copies):
        for start in range(0, len(images), _CHUNK):
            chunk = np.ascontiguousarray(images[start : start + _CHUNK])
            x = torch.from_numpy(chunk).to(torch.float32) / scale
            y = torch.round(aug(x, gen) * scale).clamp(0.0, scale)
            row = k * len(images) + start
            out[row : row + len(x)] = y.numpy().astype(images.dtype)
    return out


def training_augment(train: Arrays, cfg: AugmentConfig, seed: int) -> tuple[Arrays, Augmenter | None]:
    """What training gets from ``cfg``: the training arrays (with ``cfg.offline_copies`` augmented
    copies of every image appended, labels repeated) and the augmenter of its batches (None when
    augmentation is off or done offline)."""
    if not cfg.enabled:
        return train, None
    if not cfg.offline_copies:
        return train, Augmenter(cfg)
    images, labels = train
    extra = augmented_copies(images, cfg, seed, cfg.offline_copies)
    return (np.concatenate([images, extra]), np.tile(labels, cfg.offline_copies + 1)), None
