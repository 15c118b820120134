"""Where ``fit`` takes its batches from: image arrays (converted, augmented and normalised per
batch) or precomputed tensors (e.g. cached activations of a frozen prefix), both behind one
small :class:`BatchSource` protocol so that one epoch loop trains on either."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from medtransfer.config import InputNorm
from medtransfer.errors import DataError
from medtransfer.train.batches import check_labels, check_split, input_norm_tensors, unit_float

__all__ = ["Arrays", "Augment", "BatchSource", "ImageBatches", "TensorBatches"]

# (uint8/uint16 (N, C, H, W) images, integer labels).
Arrays = tuple[np.ndarray, np.ndarray]
# ``augment(batch, generator)``: [0, 1] floats and a generator, both on the training device.
Augment = Callable[[Tensor, torch.Generator], Tensor]


class BatchSource(Protocol):
    """Samples with int64 ``labels``, handed out as model input on ``device`` by index."""

    labels: np.ndarray
    device: torch.device

    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    def train_batch(self, batch: np.ndarray, rows: slice, gen: torch.Generator) -> Tensor:
        """Model input for ``batch[rows]`` (``batch``: the global batch's sample indices; with
        DDP each process takes its ``rows``), augmented with ``gen`` where the source augments."""
        ...

    def eval_batch(self, idx: np.ndarray) -> Tensor:
        """Model input for samples ``idx``, never augmented."""
        ...


class ImageBatches:
    """Image arrays: each batch goes to ``device``, to [0, 1] floats, through ``augment`` (training
    only) and is normalised by ``input_norm``."""

    def __init__(self, name: str, data: Arrays, num_classes: int, device: torch.device, *,
                 augment: Augment | None = None, input_norm: InputNorm | None = None) -> None:
        self.images, self.labels = check_split(name, data, num_classes)
        self.device = device
        self.augment = augment
        self.mean, self.std = input_norm_tensors(input_norm, self.images.shape[1], device)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def train_batch(self, batch: np.ndarray, rows: slice, gen: torch.Generator) -> Tensor:
        if self.augment is None:
            return (unit_float(self.images[batch[rows]], self.device) - self.mean) / self.std
        # The whole (global) batch: with DDP each image gets the augmentation one process gives it.
        return (self.augment(unit_float(self.images[batch], self.device), gen)[rows] - self.mean) / self.std

    def eval_batch(self, idx: np.ndarray) -> Tensor:
        return (unit_float(self.images[idx], self.device) - self.mean) / self.std


class TensorBatches:
    """Precomputed model input (one row per sample), moved to ``device`` once; no augmentation."""

    def __init__(self, name: str, inputs: Tensor, labels: np.ndarray, num_classes: int,
                 device: torch.device) -> None:
        self.labels = check_labels(name, labels, num_classes)
        if len(inputs) != len(self.labels):
            raise DataError(f"{name}: {len(inputs)} samples but {len(self.labels)} labels")
        self.inputs = inputs.to(device)
        self.device = device

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])

    def train_batch(self, batch: np.ndarray, rows: slice, gen: torch.Generator) -> Tensor:
        return self.eval_batch(batch[rows])

    def eval_batch(self, idx: np.ndarray) -> Tensor:
        return self.inputs[torch.from_numpy(np.ascontiguousarray(idx)).to(self.device)]
