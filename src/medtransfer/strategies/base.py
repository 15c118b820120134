"""What strategies share: the data they transfer to, a stage's settings and results, a
strategy's result, and the protocol of a strategy's runner (registered in
:mod:`medtransfer.strategies.registry`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from torch import nn

from medtransfer.freezing import FreezeConfig, FreezeReport
from medtransfer.strategies.config import CacheConfig
from medtransfer.train import Arrays, Augment, FitResult, TrainConfig, TrainEnv
from medtransfer.train.checkpoint import to_plain

__all__ = [
    "Stage",
    "StageResult",
    "Strategy",
    "StrategyResult",
    "TransferData",
]


@dataclass(frozen=True)
class TransferData:
    """What a strategy trains and evaluates on: ``train``, ``val`` (optional) and named test
    sets, each (uint8/uint16 (N, C, H, W) images, integer labels); ``augment`` is applied to
    training batches (and turns off activation caching)."""

    train: Arrays
    val: Arrays | None = None
    tests: Mapping[str, Arrays] = field(default_factory=dict)
    augment: Augment | None = None

    def evaluated(self) -> dict[str, Arrays]:
        """The sets probabilities are reported for: ``val`` when non-empty, then every test."""
        val = self.val
        return {**({"val": val} if val is not None and len(val[1]) else {}), **self.tests}


@dataclass(frozen=True)
class Stage:
    """A stage's settings: what stays frozen, how to train, and whether to cache activations."""

    name: str
    freeze: FreezeConfig
    train: TrainConfig
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass
class StageResult:
    """One training stage: ``path`` is ``cached`` (tail on cached activations), ``full`` or
    ``sklearn``; ``reason`` says why (e.g. why caching did not apply)."""

    name: str
    path: str
    reason: str
    freeze: FreezeReport | None = None
    fit: FitResult | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "path": self.path, "reason": self.reason}
        if self.freeze is not None:
            out.update(trainable_params=self.freeze.trainable_params,
                       frozen_params=self.freeze.frozen_params)
        if self.fit is not None:
            out.update(best_epoch=self.fit.best_epoch, epochs_run=len(self.fit.history),
                       stop_reason=self.fit.stop_reason.value, seconds=self.fit.seconds,
                       images_per_second=self.fit.images_per_second, precision=self.fit.precision)
        return out


@dataclass
class StrategyResult:
    """Probabilities per evaluated set (``val`` when given, then every test set), the epoch
    history of all stages (rows carry ``stage``), the stages, and the trained model/estimator."""

    kind: str
    probabilities: dict[str, np.ndarray]
    history: list[dict[str, Any]]
    stages: list[StageResult]
    model: nn.Module
    estimator: Any | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        return [f"{s.name}: {s.path} — {s.reason}" for s in self.stages]

    def summary(self) -> dict[str, Any]:
        """Plain data for result.json."""
        return to_plain({"kind": self.kind, "seconds": self.seconds,
                         "stages": [s.summary() for s in self.stages], **self.extra})


class Strategy(Protocol):
    """Transfers a built, initialised model to ``data`` in ``env``."""

    def run(self, model: nn.Module, data: TransferData, env: TrainEnv) -> StrategyResult: ...
