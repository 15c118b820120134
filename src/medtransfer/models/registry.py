"""Model registry: ``@register_model`` builders and ``create_model(name, ...)`` (timm-style).

Every registered model exposes the timm head API: ``forward_features``, ``forward_head(x,
pre_logits=False)``, ``get_classifier``, ``reset_classifier(num_classes)`` and ``num_features``.
Names ``timm:<arch>`` and ``torchvision:<arch>`` build any architecture of those libraries with
the same API (:mod:`medtransfer.models.external`); :func:`import_modules` imports user modules
whose ``@register_model`` builders a study names.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from torch import nn

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError
from medtransfer.models.adapt import apply_in_chans_policy
from medtransfer.models.blocks import add_block_dropout
from medtransfer.models.config import ModelConfig, canonical_name
from medtransfer.models.external import build_external, check_arch, external_names, split_name
from medtransfer.models.head import HeadConfig, head_from, install_head
from medtransfer.models.keras import apply_keras
from medtransfer.sigmoid_pair import use_sigmoid_pair

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
    """Registry entry of ``name`` (a ``timm:``/``torchvision:`` name gets one made for it);
    unknown names are a ConfigError suggesting the closest."""
    split = split_name(name)
    if split is not None:
        check_arch(*split)
        return ModelInfo(name, functools.partial(build_external, name), 1, split[0])
    name = canonical_name(name)
    if name not in _REGISTRY:
        also = [f"{lib}:{name}" for lib in ("timm", "torchvision") if name in external_names(lib)]
        if also:
            raise ConfigError(f"'model.name': got {name!r}, which is not registered; "
                              f"{' or '.join(also)} builds that architecture")
    check_choice("model.name", name, list_models())
    return _REGISTRY[name]


def import_modules(modules: Sequence[str], where: str = "imports") -> None:
    """Import each module (from ``sys.path`` or the current folder) so the models it registers
    with ``@register_model`` can be named; a module that fails is a ConfigError naming it."""
    for name in modules:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"'{where}': got {name!r}; expected module names, e.g. my_pkg.models")
        added = "" not in sys.path
        if added:
            sys.path.append("")  # the current folder, as `python -m` has it
        try:
            importlib.import_module(name)
        except Exception as exc:  # whatever the module raises while it runs
            raise ConfigError(f"'{where}': cannot import module {name!r} "
                              f"({type(exc).__name__}: {exc}); it must be importable from "
                              "the current folder, PYTHONPATH or an installed package") from exc
        finally:
            if added:
                sys.path.remove("")


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
    name: str, *, num_classes: int, in_chans: int = 1, img_size: int = 224,
    head: HeadConfig | Mapping[str, Any] | None = None, **kwargs: Any
) -> nn.Module:
    """Build model ``name`` (registered, ``timm:<arch>`` or ``torchvision:<arch>``); options it
    does not take are an error naming them. ``head`` (a :class:`HeadConfig` or its keys)
    replaces the architecture's own classification head."""
    info = model_info(name)
    params = inspect.signature(info.builder).parameters
    any_key = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [] if any_key else [k for k in kwargs if k not in params]
    if unknown:
        takes = sorted(p for p in params if p not in ("num_classes", "in_chans", "img_size"))
        raise ConfigError(
            f"model '{name}' does not take option(s) {', '.join(unknown)}; it takes: {', '.join(takes)}"
        )
    check_img_size(name, img_size, info.min_img_size)
    model = info.builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    head_cfg = head_from(head)
    if head_cfg is not None:
        install_head(model, head_cfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                     name=name)
    return model


def build_model(cfg: ModelConfig, *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """The architecture ``cfg`` describes, randomly initialised, for images of ``in_chans``
    channels (the in-channels policy applied); weights are loaded by
    :func:`medtransfer.models.build_pretrained`. Regularization flags a builder lacks are an
    error if switched on, except ``conv_dropout``: dropout after every stage of the
    architecture (:mod:`medtransfer.models.blocks`). ``cfg.head`` replaces its own head;
    ``cfg.compat: keras`` gives it Keras's initialisation and batch norm
    (:mod:`medtransfer.models.keras`); ``cfg.binary_output: sigmoid_pair`` makes its output layer
    a :class:`~medtransfer.sigmoid_pair.SigmoidPairLinear`."""
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
        elif value and key != "conv_dropout":
            raise ConfigError(f"'model.{key}': model '{cfg.name}' has no {key} option")
    block_dropout = 0.0 if "conv_dropout" in kwargs else cfg.conv_dropout
    reserved = sorted({"num_classes", "in_chans", "img_size"} & set(cfg.options))
    if reserved:
        raise ConfigError(f"'model.options.{reserved[0]}': set by medtransfer (from the data and "
                          "preprocess.size); remove it")
    kwargs.update(cfg.options)
    model = create_model(
        cfg.name, num_classes=cfg.outputs(num_classes), in_chans=cfg.model_in_chans(in_chans),
        img_size=img_size, **kwargs,
    )
    if block_dropout:
        add_block_dropout(model, block_dropout)
    if cfg.head is not None:
        install_head(model, cfg.head, num_classes=cfg.outputs(num_classes),
                     in_chans=cfg.model_in_chans(in_chans), img_size=img_size, name=cfg.name)
    if cfg.binary_output == "sigmoid_pair":
        use_sigmoid_pair(model)
    if cfg.compat == "keras":
        apply_keras(model, cfg.name)
    apply_in_chans_policy(model, cfg.in_chans_policy)
    return model
