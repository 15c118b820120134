"""From uint8/uint16 image arrays to float batches, and from logits to losses and probabilities:
shared by training, evaluation, prediction and the cached-activation path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medtransfer.config import InputNorm
from medtransfer.errors import ConfigError, DataError
from medtransfer.sigmoid_pair import sigmoid_pair_loss
from medtransfer.train.precision import resolve_precision

__all__ = [
    "batches",
    "check_images",
    "check_labels",
    "check_split",
    "input_norm_tensors",
    "logits_to_proba",
    "loss_and_proba",
    "predict_proba",
    "unit_float",
]

SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_images(name: str, images: Any) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype not in SCALE:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images)
        raise DataError(f"{name}: expected a uint8 or uint16 array (N, C, H, W), got {got}")
    if len(images) == 0:
        raise DataError(f"{name}: got no images")
    return images


def check_split(name: str, split: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, int64 labels) of a pair, checked."""
    if not (isinstance(split, tuple | list) and len(split) == 2):
        raise DataError(f"{name}: expected a pair (images, labels)")
    images = check_images(f"{name} images", split[0])
    return images, check_labels(name, split[1], num_classes, len(images))


def check_labels(name: str, labels: Any, num_classes: int, n: int | None = None) -> np.ndarray:
    """1-D int64 labels in [0, num_classes), ``n`` of them when given."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name} labels: expected 1-D integers, got {labels.dtype} {labels.shape}")
    if n is not None and len(labels) != n:
        raise DataError(f"{name}: {n} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{name}: got no samples")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"{name} labels: must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64, copy=False)


def input_norm_tensors(
    input_norm: InputNorm | None, channels: int, dev: torch.device
) -> tuple[Tensor, Tensor]:
    """(mean, std) shaped to broadcast over (N, C, H, W); checked against ``channels``."""
    if input_norm is None:
        return torch.zeros(1, device=dev), torch.ones(1, device=dev)
    mean, std = (torch.tensor(list(v), dtype=torch.float32, device=dev) for v in input_norm)
    if mean.shape != (channels,) or std.shape != (channels,) or not bool((std > 0).all()):
        raise ConfigError(
            f"input_norm: got mean {mean.tolist()} and std {std.tolist()}; allowed: {channels} "
            "values each (one per channel), std > 0"
        )
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def batches(
    images: np.ndarray, order: np.ndarray, batch_size: int, dev: torch.device
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """(indices, float batch in [0, 1] on ``dev``) in ``order``; converts after the transfer."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, unit_float(images[idx], dev)


def unit_float(images: np.ndarray, dev: torch.device) -> Tensor:
    """[0, 1] float32 images on ``dev`` (on CUDA: copied from pinned memory, non-blocking)."""
    raw = torch.from_numpy(np.ascontiguousarray(images))
    raw = raw.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else raw.to(dev)
    return raw.to(torch.float32).div_(SCALE[images.dtype])


def logits_to_proba(logits: Tensor) -> Tensor:
    """(B, K) probabilities: softmax, or ``[1 - p, p]`` with p = sigmoid for a single logit."""
    if logits.ndim != 2:
        raise ConfigError(f"model output has shape {tuple(logits.shape)}; expected (batch, K)")
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def loss_and_proba(logits: Tensor, y: Tensor, num_classes: int, *,
                   sigmoid_pair: bool = False) -> tuple[Tensor, Tensor]:
    """Per-sample losses and (B, K) probabilities for a single-logit or K-logit head;
    ``sigmoid_pair``: the two log-sigmoids of a :class:`~medtransfer.sigmoid_pair.SigmoidPairLinear`
    (mean binary cross-entropy on one-hot labels)."""
    cols = logits.shape[1] if logits.ndim == 2 else None
    if sigmoid_pair and cols == num_classes == 2:
        losses = sigmoid_pair_loss(logits, y)
    elif sigmoid_pair:
        raise ConfigError(f"model output has shape {tuple(logits.shape)} for num_classes={num_classes}; "
                          "a sigmoid pair is (batch, 2) for two classes")
    elif cols == 1 and num_classes == 2:
        z = logits[:, 0]
        losses = F.binary_cross_entropy_with_logits(z, y.to(z.dtype), reduction="none")
    elif cols == num_classes:
        losses = F.cross_entropy(logits, y, reduction="none")
    else:
        allowed = f"1 (single logit) or {num_classes}" if num_classes == 2 else str(num_classes)
        raise ConfigError(
            f"model output has shape {tuple(logits.shape)}; for num_classes={num_classes} "
            f"expected (batch, {allowed})"
        )
    return losses, logits_to_proba(logits)


def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    input_norm: InputNorm | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> np.ndarray:
    """(N, K) class probabilities; a single-logit head gives K=2 as ``[1 - p, p]``.

    Runs in eval mode without gradients and leaves the model in eval mode; ``precision`` as
    ``TrainConfig.precision`` (bf16/fp16 forward under autocast, probabilities in float32);
    ``channels_last``: the forward pass in NHWC layout (the model is given back in NCHW).
    """

    if batch_size < 1:
        raise ConfigError(f"batch_size: got {batch_size!r}; allowed: an integer >= 1")
    images = check_images("images", images)
    dev = torch.device(device)
    amp = resolve_precision(precision, dev)
    mean, std = input_norm_tensors(input_norm, images.shape[1], dev)
    model.to(dev)
    model.eval()
    out = []
    with torch.no_grad(), nhwc(model, channels_last) as layout:
        for _, xb in batches(images, np.arange(len(images)), batch_size, dev):
            with amp.autocast():
                logits = model(((xb - mean) / std).contiguous(memory_format=layout))
            out.append(logits_to_proba(logits.float()).cpu().numpy())
    return np.concatenate(out)


@contextmanager
def nhwc(model: nn.Module, on: bool) -> Iterator[torch.memory_format]:
    """With ``on``, the model's 4-D weights in channels-last layout for the block (NCHW again
    after it); yields the layout its 4-D inputs should have."""
    if not on:
        yield torch.contiguous_format
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield torch.channels_last
    finally:
        model.to(memory_format=torch.contiguous_format)
