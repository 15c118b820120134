"""The one registry of transfer strategies: each ``kind`` with its config class and its runner.

``@register_strategy("kind", config=KindConfig)`` on a runner class (called with the config, with
one ``run`` method) makes ``kind`` both configurable — ``strategies: {name: {kind: kind, ...}}``
is built strictly into ``KindConfig`` — and runnable. The built-in kinds (scratch, features,
freeze, finetune) register themselves in :mod:`medtransfer.strategies.run`; a plug-in module named
in a study's ``imports`` registers its own the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from medtransfer.config import check_choice, from_dict
from medtransfer.errors import ConfigError
from medtransfer.strategies.config import FreezeStrategy, StrategyConfig

__all__ = ["STRATEGIES", "STRATEGY_RUNNERS", "register_strategy", "strategy_for", "strategy_from_dict"]

R = TypeVar("R", bound=Callable[[Any], Any])

STRATEGIES: dict[str, type[Any]] = {}  # kind → its config class
STRATEGY_RUNNERS: dict[str, Callable[[Any], Any]] = {}  # kind → its runner


def register_strategy(kind: str, config: type[Any]) -> Callable[[R], R]:
    """Register a runner (called with a ``config`` instance) for strategy ``kind``, configured by
    dataclass ``config``, whose ``kind`` field defaults to ``kind``."""
    fields = {f.name: f for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else {}
    if fields.get("kind") is None or fields["kind"].default != kind:
        raise ValueError(f"strategy '{kind}': its config {config.__name__} must be a dataclass whose "
                         f"'kind' field defaults to {kind!r}")

    def add(runner: R) -> R:
        if kind in STRATEGY_RUNNERS:
            raise ValueError(f"strategy '{kind}' is registered twice")
        STRATEGIES[kind] = config
        STRATEGY_RUNNERS[kind] = runner
        return runner

    return add


def strategy_for(cfg: Any) -> Any:
    """The runner of strategy config ``cfg``; an unknown ``kind`` is a ConfigError naming the
    kind and the registered ones."""
    kind = getattr(cfg, "kind", None)
    check_choice("strategy.kind", kind, sorted(STRATEGY_RUNNERS))
    return STRATEGY_RUNNERS[str(kind)](cfg)


def strategy_from_dict(data: Mapping[str, Any], where: str = "strategy") -> StrategyConfig:
    """The strategy config ``data["kind"]`` names, built strictly (errors name ``where.key``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{where}': expected a mapping with a 'kind', got {data!r}")
    if "kind" not in data:
        raise ConfigError(f"missing required key '{where}.kind'; allowed: {', '.join(STRATEGIES)}")
    check_choice(f"{where}.kind", data["kind"], STRATEGIES)
    cfg: StrategyConfig = from_dict(STRATEGIES[data["kind"]], data, where)
    if isinstance(cfg, FreezeStrategy) and cfg.freeze.trains_everything:
        raise ConfigError(
            f"'{where}.freeze': freezes nothing; set trainable_layers, train_from or "
            "trainable_blocks (or use kind: scratch or finetune)"
        )
    return cfg
