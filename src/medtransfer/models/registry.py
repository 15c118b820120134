"""Model registry: ``@register_model`` builders and ``create_model(name, ...)`` (timm-style).

Every registered model exposes the timm head API: ``forward_features``, ``forward_head(x,
pre_logits=False)``, ``get_classifier``, ``reset_classifier(num_classes)`` and ``num_features``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from torch import nn

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError
from medtransfer.models.adapt import apply_in_chans_policy
from medtransfer.models.config import ModelConfig

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a builder besides its signature."""

    name: str
    builder: Builder
    min_img_size: int = 1
    family: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


@overload
def register_model(fn: Builder) -> Builder: ...


@overload
def register_model(*, min_img_size: int = 1, family: str = "") -> Callable[[Builder], Builder]: ...


def register_model(
    fn: Builder | None = None, *, min_img_size: int = 1, family: str = ""
) -> Builder | Callable[[Builder], Builder]:
    """Register a builder under its function name: ``@register_model`` or
    ``@register_model(min_img_size=75)`` (the smallest square input the architecture accepts)."""

    def add(builder: Builder) -> Builder:
        if builder.__name__ in _REGISTRY:
            raise ValueError(f"model '{builder.__name__}' is registered twice")
        _REGISTRY[builder.__name__] = ModelInfo(builder.__name__, builder, min_img_size, family)
        return builder

    return add(fn) if fn is not None else add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``; unknown names are a ConfigError suggesting the closest."""
    check_choice("model.name", name, list_models())
    return _REGISTRY[name]


def _builder(name: str) -> Builder:
    return model_info(name).builder


def check_img_size(name: str, img_size: int, minimum: int) -> None:
    """ConfigError naming the model, the size received and the minimum it needs."""
    if img_size < minimum:
        raise ConfigError(
            f"'preprocess.size': model '{name}' needs images of at least {minimum}×{minimum} px, "
            f"got {img_size}; set preprocess.size to {minimum} or more"
        )


def create_model(
    name: str, *, num_classes: int, in_chans: int = 1, img_size: int = 224, **kwargs: Any
) -> nn.Module:
    """Build registered model ``name``; options it does not take are an error naming them."""
    info = model_info(name)
    params = inspect.signature(info.builder).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        takes = sorted(p for p in params if p not in ("num_classes", "in_chans", "img_size"))
        raise ConfigError(
            f"model '{name}' does not take option(s) {', '.join(unknown)}; it takes: {', '.join(takes)}"
        )
    check_img_size(name, img_size, info.min_img_size)
    return info.builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


def build_model(cfg: ModelConfig, *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """The architecture ``cfg`` describes, randomly initialised, for images of ``in_chans``
    channels (the in-channels policy applied); weights are loaded by
    :func:`medtransfer.models.build_pretrained`. Regularization flags a builder lacks are an
    error if switched on."""
    params = inspect.signature(_builder(cfg.name)).parameters
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
    model = create_model(
        cfg.name, num_classes=cfg.outputs(num_classes), in_chans=cfg.model_in_chans(in_chans),
        img_size=img_size, **kwargs,
    )
    apply_in_chans_policy(model, cfg.in_chans_policy)
    return model
