"""The ``search`` section of a study: which keys to tune, how, and for which arms.

A search tunes each arm of the study on its own by default (``per: arm``): every variant × source
× target × strategy gets its own trials and its own best point, as seeds 001 and 004 compare
choices after tuning each one. ``per: study`` tunes one setting shared by every arm. ``final``
and ``final_by_arm`` set keys for the tuned arms' run on the test sets alone (seed 001 stopped its
final ImageNet run early on the validation loss, not its trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from medtransfer.config import check_choice, check_seed
from medtransfer.errors import ConfigError

__all__ = ["PER", "PRUNERS", "SAMPLERS", "SECTIONS", "ObjectiveConfig", "PrunerConfig", "SearchConfig",
           "nested", "overlap"]

SECTIONS = ("model", "pretrain", "transfer", "strategies")
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
PER = ("arm", "study")
# Validation metrics fit logs every epoch (what a pruner can watch), without the ``val_`` prefix.
EPOCH_METRICS = ("loss", "accuracy", "precision", "recall", "auc", "f1")


@dataclass(frozen=True)
class ObjectiveConfig:
    """A validation metric of the transfer stage (``auc``, ``f1``, ``accuracy``, ``loss``, …)."""

    metric: str = "auc"  # the validation metric trials are ranked by (any of results.csv's metrics)
    direction: Literal["maximize", "minimize"] = "maximize"  # the better direction of that metric

    def __post_init__(self) -> None:
        check_choice("search.objective.direction", self.direction, ("maximize", "minimize"))
        natural = "minimize" if self.metric in ("loss", "brier", "ece") else "maximize"
        if self.direction != natural:
            raise ConfigError(f"'search.objective.direction': got {self.direction!r} for metric "
                              f"{self.metric!r}; set {natural} (the better direction of that metric)")


@dataclass(frozen=True)
class PrunerConfig:
    """Stopping unpromising trials early (Optuna's pruners), fed the objective's validation value
    after every epoch."""

    # none, median (stop a trial whose value is below the median of earlier trials at the same
    # epoch) or hyperband (successive halving over epochs)
    name: Literal["none", "median", "hyperband"] = "none"
    startup_trials: int = 2  # median: trials of an arm that run in full before any is pruned
    warmup_epochs: int = 1  # median: epochs a trial runs before it may be pruned
    min_epochs: int = 1  # hyperband: the fewest epochs a trial runs before it may be stopped
    reduction_factor: int = 3  # hyperband: 1/this of the trials go on at each rung

    def __post_init__(self) -> None:
        check_choice("search.pruner.name", self.name, PRUNERS)
        for key in ("startup_trials", "warmup_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'search.pruner.{key}': got {getattr(self, key)}; "
                                  "allowed: an integer >= 0")
        if self.min_epochs < 1:
            raise ConfigError(f"'search.pruner.min_epochs': got {self.min_epochs}; allowed: an integer >= 1")
        if self.reduction_factor < 2:
            raise ConfigError(f"'search.pruner.reduction_factor': got {self.reduction_factor}; "
                              "allowed: an integer >= 2")


@dataclass(frozen=True)
class SearchConfig:
    """A hyperparameter search: trials scored on validation, the best of each arm run once on
    the tests."""

    # dotted keys of model, pretrain, transfer or strategies → a list (grid values, or choices
    # for random/tpe) or a range {low, high, log, step} (random/tpe)
    space: dict[str, Any]
    sampler: Literal["grid", "random", "tpe"] = "grid"  # Optuna's grid, random or TPE sampler, seeded
    trials: int | None = None  # trials per arm (the budget); grid: every combination when left out
    # arm: each variant × source × target × strategy tuned on its own (its own trials and best
    # point); study: one setting for every arm, scored on the mean over the arms
    per: Literal["arm", "study"] = "arm"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # what trials are ranked by
    pruner: PrunerConfig = field(default_factory=PrunerConfig)  # stop unpromising trials early
    top_k: int = 5  # trials listed in search.md's top table of each arm
    seed: int = 0  # the sampler's seed (with the study seed, the trials proposed)
    # dotted keys (as in space) → the value every tuned arm's final run on the test sets uses;
    # the trials keep the study's (e.g. strategies.head.train.restore_best: false); a mapping is
    # laid over the key's own, as a variant's overrides are
    final: dict[str, Any] = field(default_factory=dict)
    # per: arm: an arm's label (as search.md shows it, e.g. imagenet.head) → dotted keys and values
    # for that arm's final run alone, beside final's
    final_by_arm: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("search.sampler", self.sampler, SAMPLERS)
        check_choice("search.per", self.per, PER)
        if not self.space:
            raise ConfigError("'search.space': empty; give at least one key, e.g. "
                              "transfer.train.optimizer.lr: [1.0e-4, 1.0e-3]")
        for key, spec in self.space.items():
            where = f"search.space.{key}"
            _check_path(where, key)
            if isinstance(spec, dict):
                if self.sampler == "grid":
                    raise ConfigError(f"'{where}': a range needs sampler random or tpe; grid takes a list")
                unknown = set(spec) - {"low", "high", "log", "step"}
                if unknown or not {"low", "high"} <= set(spec):
                    raise ConfigError(f"'{where}': a range is {{low, high[, log][, step]}}; got {spec!r}")
            elif not isinstance(spec, list) or not spec:
                raise ConfigError(f"'{where}': expected a non-empty list of values or a range "
                                  f"{{low, high}}, got {spec!r}")
            else:
                odd = [v for v in spec if v is not None and not isinstance(v, bool | int | float | str)]
                if odd:
                    raise ConfigError(f"'{where}': list values must be numbers, strings, booleans or null "
                                      f"(search a nested key instead, e.g. {key}.<key>); got {odd[0]!r}")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"'search.trials': got {self.trials}; allowed: an integer >= 1")
        if self.sampler != "grid" and self.trials is None:
            raise ConfigError(f"'search.trials': sampler {self.sampler} needs a budget (trials: N)")
        if self.top_k < 1:
            raise ConfigError(f"'search.top_k': got {self.top_k}; allowed: an integer >= 1")
        check_seed("search.seed", self.seed)
        self._check_final()
        if self.pruner.name != "none" and self.objective.metric not in EPOCH_METRICS:
            raise ConfigError(f"'search.pruner.name': {self.pruner.name} watches the objective after "
                              f"every epoch, but 'search.objective.metric' {self.objective.metric!r} is "
                              f"computed only at the end; use one of {', '.join(EPOCH_METRICS)}, or "
                              "pruner none")

    def _check_final(self) -> None:
        if not isinstance(self.final, dict):
            raise ConfigError(f"'search.final': expected a mapping of dotted keys to values, "
                              f"got {self.final!r}")
        self._check_final_keys("search.final", self.final)
        if not isinstance(self.final_by_arm, dict):
            raise ConfigError(f"'search.final_by_arm': expected a mapping of arm labels to mappings of "
                              f"dotted keys to values, got {self.final_by_arm!r}")
        if self.final_by_arm and self.per != "arm":
            raise ConfigError("'search.final_by_arm': per: study tunes one setting for every arm and runs "
                              "it once; set its final keys in search.final (or use per: arm)")
        for label, keys in self.final_by_arm.items():
            where = f"search.final_by_arm.{label}"
            if not isinstance(keys, dict) or not keys:
                raise ConfigError(f"'{where}': expected a non-empty mapping of dotted keys to values, "
                                  f"got {keys!r}")
            self._check_final_keys(where, keys)
            for key in keys:
                common = next((k for k in self.final if overlap(key, k)), None)
                if common is not None:
                    raise ConfigError(f"'{where}.{key}': 'search.final.{common}' sets it for every arm; "
                                      "set it in one place")

    def _check_final_keys(self, where: str, keys: dict[str, Any]) -> None:
        for key in keys:
            _check_path(f"{where}.{key}", key)
            searched = next((s for s in self.space if overlap(key, s)), None)
            if searched is not None:
                raise ConfigError(f"'{where}.{key}': 'search.space.{searched}' searches it, and the "
                                  "final run would silently replace the tuned value; remove one of them")

    def n_trials(self) -> int:
        """Trials per arm."""
        if self.sampler != "grid":
            assert self.trials is not None
            return self.trials
        size = math.prod(len(v) for v in self.space.values())
        return size if self.trials is None else min(size, self.trials)


def _check_path(where: str, key: Any) -> None:
    if not isinstance(key, str) or key.split(".", 1)[0] not in SECTIONS or "." not in key:
        raise ConfigError(f"'{where}': keys are dotted paths into {', '.join(SECTIONS)} "
                          "(e.g. transfer.train.optimizer.lr, model.name)")


def overlap(a: str, b: str) -> bool:
    """Whether dotted keys ``a`` and ``b`` name the same setting or one holds the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def nested(params: dict[str, Any]) -> dict[str, Any]:
    """``{"transfer.train.batch_size": 16}`` → ``{"transfer": {"train": {"batch_size": 16}}}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
