"""Training callbacks: small hooks the loop calls at fixed points, in the style of Lightning."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from medtransfer.config import check_choice, closest
from medtransfer.errors import ConfigError
from medtransfer.train.checkpoint import copy_state, load_checkpoint, save_checkpoint

__all__ = [
    "ALL_METRICS",
    "TRAIN_METRICS",
    "VAL_METRICS",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "ModelCheckpoint",
    "ProgressBar",
    "StopReason",
    "TrainState",
    "check_monitor",
    "require_metric",
]

Mode = Literal["min", "max"]

TRAIN_METRICS: tuple[str, ...] = ("loss", "accuracy", "precision", "recall", "auc")
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
        """Before the first epoch."""

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
    mode: Literal["min", "max"] = "min"
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


class ModelCheckpoint(Callback):
    """Write ``best.pt`` (weights only) when ``monitor`` improves and ``last.pt`` (weights and
    optimizer) after every epoch, or with ``every="end"`` both once when fit ends.

    ``every="epoch"``: ``last.pt`` is first written at fit start (epoch 0, the initial weights),
    so it exists even if the first epoch fails. ``every="end"`` keeps a CPU copy of the best
    weights in memory instead and writes the same two files when fit ends (``best.pt`` also when
    fit raises); after a non-finite loss ``last.pt`` then holds the weights as training stopped
    (``extra.partial_epoch``) rather than those of the last completed epoch. A ``best.pt`` left
    from an earlier run in ``dirpath`` is removed at fit start (and ``last.pt`` too with "end").
    ``write_files=False`` (the other processes of a DDP run) tracks the best epoch, writes nothing.
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = "val_loss",
        mode: Mode = "min",
        save_last: bool = True,
        *,
        key: str = "checkpoint_monitor",
        every: Literal["epoch", "end"] = "epoch",
        write_files: bool = True,
    ) -> None:
        check_choice("checkpoint_mode", mode, ("min", "max"))
        check_choice("checkpoint_every", every, ("epoch", "end"))
        self.dirpath = Path(dirpath)
        self.monitor, self.mode, self.save_last, self.key = monitor, mode, save_last, key
        self.every, self.write_files = every, write_files
        self.best = math.nan
        self.best_epoch = 0
        self.best_path: Path | None = None
        self._best_state: dict[str, Any] | None = None  # "end": weights of the best epoch, on CPU
        self._best_row: tuple[int, dict[str, float]] | None = None  # "end": not yet written
        self._last_row: tuple[int, dict[str, float], dict[str, Any]] | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.pt"

    def on_fit_start(self, state: TrainState) -> None:
        self.best, self.best_epoch, self.best_path = math.nan, 0, None
        self._best_row = self._last_row = None
        if not self.write_files:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / "best.pt").unlink(missing_ok=True)
        if self.every == "end":
            self.last_path.unlink(missing_ok=True)
        elif self.save_last:
            self.write_last(state, {})

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        current = require_metric(self.key, self.monitor, metrics)
        if improved(current, self.best, self.mode):
            self.best, self.best_epoch = current, state.epoch
            self.best_path = self.dirpath / "best.pt"
            if self.write_files and self.every == "epoch":
                self._write_best(state, state.model.state_dict(), state.epoch, metrics)
            elif self.write_files:
                self._best_state = copy_state(state.model.state_dict(), self._best_state)
                self._best_row = (state.epoch, dict(metrics))
        if self.save_last and self.every == "epoch":
            self.write_last(state, metrics)
        elif self.save_last and self.write_files:
            # Shallow: the tensors are the live ones, unchanged until the next step; what the
            # scheduler changes after this epoch (the learning rate) is captured as of now.
            self._last_row = (state.epoch, metrics, state.optimizer.state_dict())

    def on_fit_end(self, state: TrainState) -> None:
        if not self.write_files or self.every == "epoch":
            return
        self._flush_best(state)
        # On Ctrl-C fit has already written last.pt (partial epoch) itself.
        if not self.save_last or state.stop_reason is StopReason.interrupted:
            return
        if state.stop_reason is StopReason.non_finite_loss or self._last_row is None:
            # Steps of the unrecorded epoch have moved the weights past the last history row.
            self.write_last(state, state.history[-1] if state.history else {},
                            extra={"stop_reason": state.stop_reason.value, "partial_epoch": True},
                            epoch=len(state.history))
            return
        epoch, metrics, optimizer_state = self._last_row
        save_checkpoint(
            self.last_path, model_state=state.model.state_dict(), config=state.checkpoint_config,
            epoch=epoch, metrics=metrics, optimizer_state=optimizer_state,
            extra=state.checkpoint_extra,
        )

    def teardown(self, state: TrainState) -> None:
        if self.write_files:
            self._flush_best(state)  # when fit raised: keep the best weights seen so far

    def best_model_state(self) -> dict[str, Any]:
        """The best epoch's weights: the in-memory copy ("end"), else read from ``best.pt``."""
        if self._best_state is not None and self.best_epoch > 0:
            return self._best_state
        if self.best_path is None:
            raise ValueError("ModelCheckpoint: no epoch has improved the monitor yet")
        return load_checkpoint(self.best_path)["model_state"]

    def write_last(
        self,
        state: TrainState,
        metrics: dict[str, float],
        extra: dict[str, Any] | None = None,
        epoch: int | None = None,
    ) -> Path:
        """Save the current weights and optimizer state as ``last.pt`` (``epoch`` defaults to
        ``state.epoch``); without ``write_files``, only return the path."""
        if not self.write_files:
            return self.last_path
        return save_checkpoint(
            self.last_path,
            model_state=state.model.state_dict(),
            config=state.checkpoint_config,
            epoch=state.epoch if epoch is None else epoch,
            metrics=metrics,
            optimizer_state=state.optimizer.state_dict(),
            extra={**state.checkpoint_extra, **(extra or {})},
        )

    def _write_best(
        self, state: TrainState, model_state: Mapping[str, Any], epoch: int, metrics: dict[str, float]
    ) -> None:
        save_checkpoint(
            self.dirpath / "best.pt",
            model_state=model_state,
            config=state.checkpoint_config,
            epoch=epoch,
            metrics=metrics,
            extra={**state.checkpoint_extra, "monitor": self.monitor, "mode": self.mode},
        )

    def _flush_best(self, state: TrainState) -> None:
        if self._best_row is not None and self._best_state is not None:
            self._write_best(state, self._best_state, *self._best_row)
            self._best_row = None

    def state_dict(self) -> dict[str, Any]:
        path = None if self.best_path is None else str(self.best_path)
        return {"best": self.best, "best_epoch": self.best_epoch, "best_path": path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict["best"], state_dict["best_epoch"]
        path = state_dict["best_path"]
        self.best_path = None if path is None else Path(path)


class CSVLogger(Callback):
    """One CSV row per epoch (``epoch`` then the metrics), flushed as it is written.

    The columns are those of the first epoch; a later row with a new metric is an error rather
    than a silently dropped value.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")
        self.columns = None

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        row: dict[str, float | int] = {"epoch": state.epoch, **metrics}
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
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, restval="")
            if write_header:
                writer.writeheader()
            writer.writerow(row)


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
