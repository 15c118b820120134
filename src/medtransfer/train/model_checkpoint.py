"""The callback that writes ``best.pt`` / ``last.pt`` (the files: :mod:`.checkpoint`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from medtransfer.config import check_choice
from medtransfer.train.callbacks import Callback, Mode, StopReason, TrainState, improved, require_metric
from medtransfer.train.checkpoint import copy_state, load_checkpoint, save_checkpoint
from medtransfer.train.resume import RESUME_VERSION, digest

__all__ = ["ModelCheckpoint"]


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

    ``defer_last`` (set by ``fit``): ``on_epoch_end`` only notes the epoch's ``last.pt``, and fit
    writes it with :meth:`flush_last` once the epoch is over (callbacks and scheduler step done),
    with the state a resume needs. A fit that resumes (``state.epoch > 0`` at fit start) keeps
    the ``best.pt`` and ``last.pt`` it resumes from.
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
        self.defer_last = False
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
        if not self.write_files or state.epoch > 0:  # resumed: its files are those it resumes from
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
        if self.save_last and self.every == "epoch" and not self.defer_last:
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

    def flush_last(self, state: TrainState, resume: dict[str, Any]) -> None:
        """Write the ``last.pt`` noted at the epoch's end (``defer_last``), its optimizer state
        as the epoch trained, with ``resume`` (and its digest) in ``extra.resume``."""
        if not (self.defer_last and self.write_files and self._last_row is not None):
            return
        epoch, metrics, optimizer_state = self._last_row
        self._last_row = None
        model_state = state.model.state_dict()
        resume = {**resume, "version": RESUME_VERSION}
        resume["digest"] = digest(model_state, optimizer_state, resume)
        save_checkpoint(
            self.last_path, model_state=model_state, config=state.checkpoint_config, epoch=epoch,
            metrics=metrics, optimizer_state=optimizer_state,
            extra={**state.checkpoint_extra, "resume": resume},
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
        # best.pt lives in dirpath: a run folder moved since still finds it
        self.best_path = None if path is None else self.dirpath / Path(path).name
