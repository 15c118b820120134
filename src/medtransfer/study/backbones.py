"""Strategies whose backbone is another strategy's trained model (``backbone_from``, e.g. a
linear SVM on the fine-tuned network's fc7 features): the check made when a config is read.

A ``features`` strategy with ``backbone_from: ft`` takes, in each cell, the model that strategy
``ft`` trained in the cell of the same variant, source, target, repeat and fold; the plan makes
that cell run first (:mod:`medtransfer.study.plan`). Only ``finetune`` and ``freeze`` strategies
train a transferred network to take features from: a ``features`` strategy trains none (so no
chain, and no cycle, can form), and a ``scratch`` strategy's cells have no source, where they are
the reference every transfer is compared with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medtransfer.config import closest
from medtransfer.errors import ConfigError

__all__ = ["UPSTREAM_KINDS", "backbone_from", "check_backbones"]

UPSTREAM_KINDS = ("finetune", "freeze")


def backbone_from(strategy: Any) -> str | None:
    """The strategy whose trained model ``strategy`` starts from, or None."""
    name = getattr(strategy, "backbone_from", None)
    return str(name) if name is not None else None


def check_backbones(strategies: Mapping[str, Any], where: str = "strategies") -> None:
    """Every ``backbone_from`` names another strategy of the study that trains a transferred
    network (finetune or freeze); errors name the key, the value and the strategies allowed."""
    usable = [n for n, s in strategies.items() if getattr(s, "kind", None) in UPSTREAM_KINDS]
    for name, strategy in strategies.items():
        upstream = backbone_from(strategy)
        if upstream is None:
            continue
        key = f"'{where}.{name}.backbone_from'"
        allowed = ", ".join(usable) or "none in this study"
        if upstream == name:
            raise ConfigError(f"{key}: got {upstream!r}, the strategy itself; name the finetune or "
                              f"freeze strategy whose trained model it takes features from: {allowed}")
        if upstream not in strategies:
            hint = closest(upstream, strategies)
            extra = f"; did you mean '{hint}'?" if hint else ""
            raise ConfigError(f"{key}: got {upstream!r}{extra} Allowed: the study's finetune or "
                              f"freeze strategies: {allowed}")
        kind = getattr(strategies[upstream], "kind", None)
        if kind not in UPSTREAM_KINDS:
            why = ("trains no network (and cannot itself be chained)" if kind == "features" else
                   "has no source (it is the reference of every transfer)")
            raise ConfigError(f"{key}: got {upstream!r}, a {kind} strategy, which {why}; name a "
                              f"finetune or freeze strategy: {allowed}")
