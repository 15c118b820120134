"""Where and how a training runs: everything besides the model, the data and its TrainConfig."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medtransfer.config import InputNorm
from medtransfer.data import ImageCache
from medtransfer.errors import ConfigError
from medtransfer.train.callbacks import Callback

__all__ = ["TrainEnv"]


@dataclass(frozen=True)
class TrainEnv:
    """One training's surroundings, shared by ``fit``, ``train_stage`` and ``run_strategy``.

    ``seed`` draws shuffling, augmentation and dropout; ``out_dir`` gets history and
    checkpoints; ``input_norm`` normalises images (``(x - mean) / std``) and is recorded in
    checkpoints with ``num_classes`` and ``seed``; ``callbacks`` (e.g. tracking) join the
    built-in ones; ``checkpoint_config`` is the config checkpoints record (default: the
    TrainConfig); ``cache`` keeps features and frozen-prefix activations between runs
    (strategies only: ``fit`` does not read it).
    """

    seed: int
    out_dir: Path
    num_classes: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    input_norm: InputNorm | None = None
    callbacks: tuple[Callback, ...] = ()
    checkpoint_config: dict[str, Any] | None = None
    cache: ImageCache | None = None

    def __init__(
        self,
        seed: int,
        out_dir: str | Path,
        num_classes: int,
        device: str | torch.device = "cpu",
        input_norm: InputNorm | None = None,
        callbacks: Sequence[Callback] = (),
        checkpoint_config: dict[str, Any] | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: got {seed!r}; allowed: an integer >= 0")
        if num_classes < 2:
            raise ConfigError(f"num_classes: got {num_classes!r}; allowed: an integer >= 2")
        # A hand-written __init__ so callers may pass a str path/device and any sequence.
        for key, value in (("seed", seed), ("out_dir", Path(out_dir)), ("num_classes", num_classes),
                           ("device", torch.device(device)), ("input_norm", input_norm),
                           ("callbacks", tuple(callbacks)),
                           ("checkpoint_config", checkpoint_config), ("cache", cache)):
            object.__setattr__(self, key, value)

    def replace(self, **changes: Any) -> TrainEnv:
        """A copy with ``changes`` (e.g. another ``out_dir`` or ``seed`` for a second stage)."""
        return dataclasses.replace(self, **changes)
