"""The trials of a search, asked of Optuna and told back, batch after batch.

Each arm has its own Optuna study in the run folder's journal (``search.journal``), named by the
arm and a fingerprint of everything that decides a trial's result, so a rerun continues it: every
finished trial is kept, a trial that was running when the search was killed is evaluated again
with the parameters it was given, and the sampler is seeded per trial from the search seed and the
trial's number — a resumed search proposes what an uninterrupted one would. A batch holds up to
``workers`` trials, spread over the arms, and runs on the study's executor session; a grid or
random search proposes the same trials however many run at once (TPE with more than one worker
uses Optuna's constant-liar strategy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from medtransfer.config import to_dict
from medtransfer.errors import ConfigError
from medtransfer.search.arms import SearchArm, trial_specs
from medtransfer.study import CellJob, Runner, StudyConfig, VariantSpec
from medtransfer.study.pruning import PruneTarget, make_pruner, open_storage
from medtransfer.study.rundir.unit_result import CellResult
from medtransfer.study.search_config import SearchConfig
from medtransfer.study.store import stable_hash

__all__ = ["JOURNAL", "JournalCount", "TrialRecord", "budget", "journal_counts", "optimize"]

JOURNAL = "search.journal"
# What decides a trial's result; the budget (trials), top_k and the final run's keys do not, so
# raising the budget or changing final continues the same Optuna studies.
_DECIDING = ("seed", "preprocess", "model", "pretrain", "transfer", "source", "target", "sources",
             "targets", "strategies", "repeats", "resample_splits", "repeat_pretraining", "variants")
_NOT_DECIDING = ("trials", "top_k", "final", "final_by_arm")


@dataclass
class TrialRecord:
    """One trial of one arm, as trials.csv lists it."""

    arm: str  # the arm's label
    trial: str  # trial-001, numbered per arm
    params: dict[str, Any]
    value: float | None  # the objective on validation (None: pruned or failed)
    state: str  # complete | pruned after epoch k | failed: why
    best_epoch: int | None = None
    epochs: int = 0  # epochs trained by the trial's cells (a pruned trial's are fewer)
    rank: int = 0  # within its arm, by value


@dataclass
class _Arm:
    arm: SearchArm
    index: int
    study: Any
    budget: int


@dataclass
class _Pending:
    """A trial asked and not yet told."""

    state: _Arm
    trial: Any
    params: dict[str, Any]
    specs: list[VariantSpec] = field(default_factory=list)


def fingerprint(cfg: StudyConfig, search: SearchConfig) -> str:
    data = {k: v for k, v in to_dict(cfg).items() if k in _DECIDING}
    data["search"] = {k: v for k, v in to_dict(search).items() if k not in _NOT_DECIDING}
    return stable_hash(data, 12)


def _study_name(cfg: StudyConfig, arm: SearchArm, tag: str) -> str:
    return f"{cfg.name}.{arm.name}.{tag}"


@dataclass(frozen=True)
class JournalCount:
    """An arm's trials in a run folder's journal: finished (kept by a rerun) and left running
    by a killed search (run again with their parameters)."""

    finished: int = 0
    running: int = 0


def journal_counts(out: Path, cfg: StudyConfig, search: SearchConfig,
                   arms: list[SearchArm]) -> dict[str, JournalCount]:
    """Each arm's (by label) trials that a search into ``out`` would find in its journal; the
    folder is only read (no journal: none)."""
    path = out / JOURNAL
    if not path.is_file():
        return {a.label: JournalCount() for a in arms}
    storage = open_storage(str(path))
    tag = fingerprint(cfg, search)
    counts = {}
    for a in arms:
        try:
            trials = storage.get_all_trials(storage.get_study_id_from_name(_study_name(cfg, a, tag)),
                                            deepcopy=False)
        except KeyError:  # no study of this arm (another config, or not started)
            trials = []
        counts[a.label] = JournalCount(sum(t.state.is_finished() for t in trials),
                                       sum(t.state == optuna.trial.TrialState.RUNNING for t in trials))
    return counts


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    low, high = spec["low"], spec["high"]
    if isinstance(low, int) and isinstance(high, int) and not spec.get("log"):
        return trial.suggest_int(key, low, high, step=spec.get("step", 1))
    return trial.suggest_float(key, float(low), float(high), log=bool(spec.get("log", False)),
                               step=spec.get("step"))


def _sampler(search: SearchConfig, arm: _Arm, number: int, parallel: bool) -> Any:
    """The sampler that proposes trial ``number`` of ``arm``, seeded by the search seed, the arm
    and the number (a resumed search proposes what an uninterrupted one would)."""
    import optuna

    if search.sampler == "grid":  # its seed orders the grid: one order for the whole search
        seed = int(np.random.SeedSequence([search.seed, arm.index]).generate_state(1)[0])
        return _Grid({k: search.space[k] for k in arm.arm.space}, seed=seed)
    seed = int(np.random.SeedSequence([search.seed, arm.index, number]).generate_state(1)[0])
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, asked and told: the search counts its trials itself (Optuna's own
    stop at the end of the grid works only inside ``Study.optimize``)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def budget(search: SearchConfig, arm: SearchArm) -> int:
    """Trials ``arm`` runs in all: its grid (capped by ``trials``) or ``trials``."""
    if not arm.space:
        return 0
    if search.sampler != "grid":
        return search.n_trials()
    size = math.prod(len(search.space[k]) for k in arm.space)
    return size if search.trials is None else min(size, search.trials)


def _epochs(result: CellResult) -> int:
    """Epochs a cell trained: its stages' (a pruned cell's: until it was stopped)."""
    if result.pruned_at:
        return result.pruned_at
    return sum(int(s.epochs_run or 0) for s in (result.strategy.stages if result.strategy else ()))


def _trial_name(number: int) -> str:
    return f"trial-{number + 1:03d}"


class _Search:
    """Asks, runs and tells the trials of every arm."""

    def __init__(self, runner: Runner, search: SearchConfig, arms: list[SearchArm], out: Path,
                 workers: int, echo: Callable[[str], None]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.runner, self.search, self.workers, self.echo = runner, search, workers, echo
        self.cfg = runner.cfg
        self.journal = str(out / JOURNAL)
        storage = open_storage(self.journal)
        tag = fingerprint(self.cfg, search)
        self.arms = [_Arm(arm, i, optuna.create_study(
            study_name=_study_name(self.cfg, arm, tag), storage=storage, load_if_exists=True,
            direction=search.objective.direction, pruner=make_pruner(search.pruner)), budget(search, arm))
            for i, arm in enumerate(arms)]

    def run(self) -> None:
        stale = {id(a): self._stale(a) for a in self.arms}
        if any(stale.values()):
            self.echo(f"search: resuming {sum(map(len, stale.values()))} trial(s) that were running "
                      "when the search stopped")
        for a in self.arms:
            if not a.arm.space:
                self.echo(f"search: no searched key applies to arm {a.arm.label}; it runs as configured")
        while True:
            batch = self._fill(stale)
            if not batch:
                return
            self._evaluate(batch)

    def _stale(self, a: _Arm) -> list[_Pending]:
        """Trials left running by a killed search (this search holds the run lock: none is live)."""
        import optuna

        out = []
        for frozen in a.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            a.study.sampler = _sampler(self.search, a, frozen.number, self.workers > 1)
            pending = self._prepare(a, optuna.trial.Trial(a.study, frozen._trial_id))
            if pending is not None:
                out.append(pending)
        return out

    def _fill(self, stale: dict[int, list[_Pending]]) -> list[_Pending]:
        """Up to ``workers`` trials, taken round-robin from the arms with trials left."""
        batch: list[_Pending] = []
        open_arms = [a for a in self.arms if stale[id(a)] or len(a.study.trials) < a.budget]
        if not open_arms:
            return batch
        cap = -(-self.workers // len(open_arms))
        taken = dict.fromkeys((id(a) for a in open_arms), 0)
        progress = True
        while len(batch) < self.workers and progress:
            progress = False
            for a in open_arms:
                if len(batch) >= self.workers or taken[id(a)] >= cap:
                    continue
                pending = stale[id(a)].pop(0) if stale[id(a)] else self._ask(a)
                if pending is not None:
                    batch.append(pending)
                    taken[id(a)] += 1
                    progress = True
        return batch

    def _ask(self, a: _Arm) -> _Pending | None:
        """A new trial of ``a``, or None when its budget is spent (failed configurations are told
        at once and the next is asked)."""
        while len(a.study.trials) < a.budget:
            a.study.sampler = _sampler(self.search, a, len(a.study.trials), self.workers > 1)
            pending = self._prepare(a, a.study.ask())
            if pending is not None:
                return pending
        return None

    def _prepare(self, a: _Arm, trial: Any) -> _Pending | None:
        """The trial's parameters and variants; an impossible combination is told as failed."""
        import optuna

        params = {k: _suggest(trial, k, self.search.space[k]) for k in a.arm.space}
        name = _trial_name(trial.number)
        trial.set_user_attr("name", name)
        try:
            specs = trial_specs(self.cfg, a.arm, name, params)
        except ConfigError as exc:
            trial.set_user_attr("state", f"failed: {exc}")
            a.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.echo(f"[{a.arm.label} {name}] failed: {exc}")
            return None
        return _Pending(a, trial, params, specs)

    def _evaluate(self, batch: list[_Pending]) -> None:
        """Run the batch's trials on the runner's session, then tell each its outcome."""
        owner = {s.name: p for p in batch for s in p.specs}
        reporting: set[int] = set()

        def prune(cell: CellJob) -> PruneTarget | None:
            p = owner[cell.variant]
            if self.search.pruner.name == "none":
                return None
            first = id(p) not in reporting
            reporting.add(id(p))
            return PruneTarget(self.journal, p.state.study.study_name, p.trial._trial_id,
                               f"val_{self.search.objective.metric}", self.search.pruner, first)

        results = self.runner.run_variants([s for p in batch for s in p.specs], prune=prune)
        for p in batch:
            self._tell(p, [r for c, r in results.items() if c.variant in {s.name for s in p.specs}])

    def _tell(self, p: _Pending, results: list[CellResult]) -> None:
        import optuna

        metric, label = self.search.objective.metric, f"{p.state.arm.label} {_trial_name(p.trial.number)}"
        epochs = sum(_epochs(r) for r in results)
        p.trial.set_user_attr("epochs", epochs)
        pruned = [r.pruned_at for r in results if r.pruned_at]
        if pruned:
            p.trial.set_user_attr("state", f"pruned after epoch {min(pruned)}")
            p.state.study.tell(p.trial, state=optuna.trial.TrialState.PRUNED)
            self.echo(f"[{label}] {p.params} → pruned after epoch {min(pruned)}")
            return
        values = []
        for r in results:
            if metric not in r.val:
                raise ConfigError(f"'search.objective.metric': got {metric!r}; validation metrics: "
                                  f"{', '.join(sorted(r.val))}")
            values.append(float(r.val[metric]))
        value = sum(values) / len(values)
        if results[0].best_epoch is not None:
            p.trial.set_user_attr("best_epoch", int(results[0].best_epoch))
        if not math.isfinite(value):
            p.trial.set_user_attr("state", f"failed: validation {metric} is not finite")
            p.state.study.tell(p.trial, state=optuna.trial.TrialState.FAIL)
        else:
            p.trial.set_user_attr("state", "complete")
            p.state.study.tell(p.trial, value)
        self.echo(f"[{label}] {p.params} → val {metric} {value:.4f}")

    def records(self) -> list[TrialRecord]:
        """Every finished trial of every arm, each arm's ranked by value (failed and pruned last)."""
        out = []
        sign = -1.0 if self.search.objective.direction == "maximize" else 1.0
        for a in self.arms:
            rows = []
            for t in a.study.get_trials(deepcopy=False):
                if not t.state.is_finished():
                    continue
                value = t.value if t.state.name == "COMPLETE" else None
                rows.append(TrialRecord(a.arm.label, _trial_name(t.number), dict(t.params), value,
                                        str(t.user_attrs.get("state", t.state.name.lower())),
                                        t.user_attrs.get("best_epoch"), int(t.user_attrs.get("epochs", 0))))
            rows.sort(key=lambda r: (r.value is None, sign * r.value if r.value is not None else 0.0,
                                     r.trial))
            for rank, r in enumerate(rows, 1):
                r.rank = rank
            out += rows
        return out


def optimize(runner: Runner, search: SearchConfig, arms: list[SearchArm], out: Path, *, workers: int = 1,
             echo: Callable[[str], None] = print) -> list[TrialRecord]:
    """Run every arm's trials (up to ``workers`` at once, on ``runner``'s open session) and
    return them all, each arm's ranked."""
    driver = _Search(runner, search, arms, out, workers, echo)
    driver.run()
    return driver.records()
