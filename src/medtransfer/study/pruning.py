"""Pruning a search trial from inside its cells: each epoch's validation value goes to the trial's
Optuna study (stored in the run folder, so worker processes and Ray actors reach it too), and a
cell stops as soon as the pruner says so.

The trial's first cell (repeat 0, first fold) reports and asks the pruner; the trial's other cells
follow its decision, read from the same storage after each of their epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medtransfer.study.search_config import PrunerConfig
from medtransfer.train import Callback, TrainState

__all__ = ["PruneTarget", "TrialPruned", "TrialPruning", "make_pruner", "open_storage"]

PRUNED_AT = "pruned_at"  # the trial's user attribute: the epoch its first cell was pruned after


class TrialPruned(Exception):
    """Raised by :class:`TrialPruning` to stop a pruned trial's cell at once."""

    def __init__(self, epoch: int, value: float | None) -> None:
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch, self.value = epoch, value


@dataclass(frozen=True)
class PruneTarget:
    """Where a trial's cell reports: the journal file, the Optuna study and trial, the epoch
    metric watched (``val_auc``, …) and the pruner; ``reports``: this cell reports and decides."""

    storage: str
    study: str
    trial_id: int
    metric: str
    pruner: PrunerConfig
    reports: bool

    def key(self) -> dict[str, Any]:
        """What enters the unit key: a pruned cell's result depends on the pruner and on the
        other trials of its study."""
        return {"study": self.study, "pruner": self.pruner.name, "metric": self.metric,
                "startup_trials": self.pruner.startup_trials, "warmup_epochs": self.pruner.warmup_epochs,
                "min_epochs": self.pruner.min_epochs, "reduction_factor": self.pruner.reduction_factor}


def open_storage(path: str) -> Any:
    """Optuna's journal storage in file ``path`` (file-locked: several processes may share it)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


def make_pruner(cfg: PrunerConfig) -> Any:
    """Optuna's pruner for ``cfg`` (NopPruner for ``none``)."""
    import optuna

    if cfg.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials,
                                           n_warmup_steps=cfg.warmup_epochs)
    if cfg.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg.min_epochs, max_resource="auto",
                                              reduction_factor=cfg.reduction_factor)
    return optuna.pruners.NopPruner()


class TrialPruning(Callback):
    """Reports the watched metric after every epoch of every stage (steps counted over the
    cell's stages) and raises :class:`TrialPruned` when the trial is to stop."""

    def __init__(self, target: PruneTarget) -> None:
        self.target = target
        self.step = 0
        self._trial: Any = None

    def _open(self) -> Any:
        if self._trial is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.ERROR)  # a resumed cell re-reports its steps
            study = optuna.load_study(study_name=self.target.study, storage=open_storage(self.target.storage),
                                      pruner=make_pruner(self.target.pruner))
            self._trial = optuna.trial.Trial(study, self.target.trial_id)
        return self._trial

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.step += 1
        trial = self._open()
        if not self.target.reports:
            pruned = trial.storage.get_trial(self.target.trial_id).user_attrs.get(PRUNED_AT)
            if pruned is not None:
                raise TrialPruned(self.step, None)
            return
        value = metrics.get(self.target.metric)
        if value is None:
            return
        trial.report(float(value), self.step)
        if trial.should_prune():
            trial.storage.set_trial_user_attr(self.target.trial_id, PRUNED_AT, self.step)
            raise TrialPruned(self.step, float(value))

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
