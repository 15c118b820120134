"""Training callbacks: small hooks the loop calls at fixed points, in the style of Lightning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from medtransfer.config import check_choice, closest
from medtransfer.csvfile import append_csv_row
from medtransfer.errors import ConfigError

__all__ = [
    "ALL_METRICS",
    "TRAIN_METRICS",
    "VAL_METRICS",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "ProgressBar",
    "StopReason",
    "TrainState",
    "check_monitor",
    "require_metric",
]

Mode = Literal["min", "max"]

# ``f1``: of the positive class (binary, threshold 0.5) or macro over classes (multiclass).
TRAIN_METRICS: tuple[str, ...] = ("loss", "accuracy", "precision", "recall", "auc", "f1")
VAL_METRICS: tuple[str, ...] = tuple(f"val_{m}" for m in TRAIN_METRICS)
ALL_METRICS: tuple[str, ...] = ("lr", *TRAIN_METRICS, *VAL_METRICS)


class StopReason(StrEnum):
    completed = "completed"
    early_stopping = "early_stopping"
    non_finite_loss = "non_finite_loss"
    interrupted = "interrupted"


def check_monitor(key: str, monitor: str, mode: str, mode_key: str) -> None:
    """Static check of a monitor setting: a metric fit logs, watched in its natural direction."""
    if monitor not in ALL_METRICS:
        hint = closest(monitor, ALL_METRICS)
        extra = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(
            f"'{key}': got {monitor!r}{extra} Allowed: {', '.join(ALL_METRICS)}"
        )
    check_choice(mode_key, mode, ("min", "max"))
    # Selecting the *worst* epoch by a typo'd mode is silent and ruins a study, so refuse it.
    natural = "min" if monitor.endswith("loss") else None if monitor == "lr" else "max"
    if natural is not None and mode != natural:
        raise ConfigError(
            f"'{mode_key}': got {mode!r} for {key} {monitor!r}, but "
            f"{'lower' if natural == 'min' else 'higher'} is better; set {mode_key}: {natural}"
        )


def require_metric(key: str, monitor: str, metrics: dict[str, float]) -> float:
    """``metrics[monitor]``, or a ConfigError naming the setting and the logged metrics."""
    if monitor not in metrics:
        raise ConfigError(
            f"{key} {monitor!r} is not a logged metric; available: {', '.join(metrics)}"
        )
    return metrics[monitor]


def improved(current: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``current`` beats ``best`` by more than ``min_delta``; NaN never improves."""
    if math.isnan(current):
        return False
    if math.isnan(best):
        return True
    return current < best - min_delta if mode == "min" else current > best + min_delta


@dataclass
class TrainState:
    """What callbacks see of a running fit. ``epoch`` counts from 1 (0 before the first)."""

    model: nn.Module
    optimizer: Optimizer
    out_dir: Path
    max_epochs: int
    batches_per_epoch: int = 0
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    should_stop: bool = False
    stop_reason: StopReason = StopReason.completed
    checkpoint_config: dict[str, Any] = field(default_factory=dict)
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class; override the hooks you need. Hooks run in the order callbacks are given."""

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first epoch; when fit resumes from ``last.pt``, ``state.epoch`` and
        ``state.history`` are those of the epoch it resumes after, and :meth:`load_state_dict`
        follows with the state this callback had then."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before each training epoch (``state.epoch`` already advanced)."""

    def on_train_batch_end(self, state: TrainState, loss: float, batch_size: int) -> None:
        """After each optimizer step, with that batch's (weighted mean) loss."""

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After validation; ``metrics`` is the epoch's history row (without ``epoch``)."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last epoch, early/non-finite stop or interruption (not on other errors)."""

    def teardown(self, state: TrainState) -> None:
        """Always last, even when fit raises: release files, progress bars."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop after ``patience`` epochs in which ``monitor`` did not improve by over ``min_delta``."""

    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"  # whether lower (min) or higher (max) monitor is better
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check_monitor("early_stopping.monitor", self.monitor, self.mode, "early_stopping.mode")
        if self.patience < 0:
            raise ConfigError(f"'early_stopping.patience': got {self.patience!r}; allowed: >= 0")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ConfigError(
                f"'early_stopping.min_delta': got {self.min_delta!r}; allowed: a number >= 0"
            )


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Mode = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        *,
        key: str = "early_stopping.monitor",
    ) -> None:
        check_choice("early_stopping.mode", mode, ("min", "max"))
        if patience < 0:
            raise ConfigError(f"'early_stopping.patience': got {patience!r}; allowed: >= 0")
        if not min_delta >= 0:
            raise ConfigError(f"'early_stopping.min_delta': got {min_delta!r}; allowed: >= 0")
        self.monitor, self.mode, self.patience, self.min_delta, self.key = (
            monitor, mode, patience, min_delta, key,
        )
        self.best = math.nan
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch = 0

    @classmethod
    def from_config(cls, cfg: EarlyStoppingConfig) -> EarlyStopping:
        return cls(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta)

    def on_fit_start(self, state: TrainState) -> None:
        self.best, self.best_epoch, self.wait, self.stopped_epoch = math.nan, 0, 0, 0

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        current = require_metric(self.key, self.monitor, metrics)
        if improved(current, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = current, state.epoch, 0
            return
        self.wait += 1
        # Exhausting patience on the final epoch is an ordinary completion, not an early stop.
        if self.wait >= self.patience and state.epoch < state.max_epochs:
            self.stopped_epoch = state.epoch
            state.should_stop = True
            state.stop_reason = StopReason.early_stopping

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("best", "best_epoch", "wait", "stopped_epoch")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for k in ("best", "best_epoch", "wait", "stopped_epoch"):
            setattr(self, k, state_dict[k])


class CSVLogger(Callback):
    """One CSV row per epoch (``epoch`` then the metrics), flushed as it is written.

    The columns are those of the first epoch; a later row with a new metric is an error rather
    than a silently dropped value. A resumed fit's file is rewritten from its history.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")
        self.columns = None
        for epoch, metrics in enumerate(state.history, start=1):
            self._write({"epoch": epoch, **metrics})

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._write({"epoch": state.epoch, **metrics})

    def _write(self, row: dict[str, float | int]) -> None:
        write_header = self.columns is None
        if self.columns is None:
            self.columns = list(row)
        new = [k for k in row if k not in self.columns]
        if new:
            raise ValueError(
                f"{self.path}: metric(s) {', '.join(new)} appeared after the first epoch; "
                f"columns are fixed to {', '.join(self.columns)}"
            )
        # Reopening per row keeps no handle open across epochs and flushes on close.
        append_csv_row(self.path, row, self.columns, header=write_header)


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running training loss; off when not a TTY or disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._loss_sum = 0.0
        self._count = 0

    def on_epoch_start(self, state: TrainState) -> None:
        self._close()
        self._loss_sum, self._count = 0.0, 0
        self._bar = tqdm(
            total=state.batches_per_epoch,
            desc=f"epoch {state.epoch}/{state.max_epochs}",
            unit="batch",
            disable=None if self.enabled else True,  # None: tqdm disables itself off a TTY
            dynamic_ncols=True,
        )

    def on_train_batch_end(self, state: TrainState, loss: float, batch_size: int) -> None:
        self._loss_sum += loss * batch_size
        self._count += batch_size
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{self._loss_sum / self._count:.4f}", refresh=False)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self._bar is not None:
            shown = {k: f"{v:.4f}" for k, v in metrics.items() if k in ("loss", "val_loss")}
            self._bar.set_postfix(shown)
        self._close()

    def teardown(self, state: TrainState) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
