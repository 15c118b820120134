"""Model registry: ``@register_model`` builders and ``create_model(name, ...)`` (timm-style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from medtransfer.config import closest
from medtransfer.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        hint = closest(name, _REGISTRY)
        extra = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(
            f"'model.name': unknown model '{name}'{extra} Available: {', '.join(list_models())}"
        )
    return _REGISTRY[name]


def create_model(
    name: str, *, num_classes: int, in_chans: int = 1, img_size: int = 224, **kwargs: Any
) -> nn.Module:
    """Build registered model ``name``; options it does not take are an error naming them."""
    fn = _builder(name)
    params = inspect.signature(fn).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        takes = sorted(p for p in params if p not in ("num_classes", "in_chans", "img_size"))
        raise ConfigError(
            f"model '{name}' does not take option(s) {', '.join(unknown)}; it takes: {', '.join(takes)}"
        )
    return fn(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture, and its regularization as flags (0 / False = off)."""

    name: str = "alexnet_seed000"
    batch_norm: bool = False
    conv_dropout: float = 0.0
    spatial_dropout: float = 0.0
    dense_dropout: float = 0.0
    binary_output: Literal["single", "pair"] = "single"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("conv_dropout", "spatial_dropout", "dense_dropout"):
            rate = getattr(self, key)
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"'model.{key}': got {rate}; expected a rate in [0, 1)")

    def outputs(self, num_classes: int) -> int:
        """Logit count: binary tasks use one sigmoid logit unless ``binary_output: pair``."""
        return 1 if num_classes == 2 and self.binary_output == "single" else num_classes


def build_model(cfg: ModelConfig, *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """A model from its config; regularization flags a builder lacks are an error if switched on."""
    fn = _builder(cfg.name)
    params = inspect.signature(fn).parameters
    flags = {
        "batch_norm": cfg.batch_norm,
        "conv_dropout": cfg.conv_dropout,
        "spatial_dropout": cfg.spatial_dropout,
        "dense_dropout": cfg.dense_dropout,
    }
    kwargs: dict[str, Any] = {}
    for key, value in flags.items():
        if key in params:
            kwargs[key] = value
        elif value:
            raise ConfigError(f"'model.{key}': model '{cfg.name}' has no {key} option")
    kwargs.update(cfg.options)
    return create_model(
        cfg.name, num_classes=cfg.outputs(num_classes), in_chans=in_chans, img_size=img_size, **kwargs
    )
