"""A classification head given as data (``model.head``), replacing an architecture's own.

:class:`HeadConfig` says pool → flatten → hidden dense layers (activation, dropout) → output
layer, as timm's ``ClassifierHead`` / ``NormMlpClassifierHead`` and the seeds' Keras heads do:
Keras's common ``AveragePooling2D(4×4) → Flatten → Dense 64 relu → Dropout 0.5 → Dense 2`` is
``{pool: avg, pool_size: 4, hidden: [64], dropout: 0.5}``. :func:`install_head` removes the
model's own head (pooling, dropout, output layer) and puts a :class:`ClassifierHead` named
``head`` behind ``forward_features``; the model keeps the head API (``forward_head(x,
pre_logits=...)``, ``get_classifier`` = ``head.fc``, ``reset_classifier``) and its forward chain
(the head's dense layers are steps and weight layers like any other).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from medtransfer.config import from_dict
from medtransfer.errors import ConfigError
from medtransfer.models.chain import Step, feature_chain, module_steps
from medtransfer.models.external import TorchvisionHead, set_module

__all__ = ["ClassifierHead", "HeadConfig", "HeadedModel", "head_from", "install_head", "own_head_modules"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
# timm names for a model's own head modules (besides its classifier, from pretrained_cfg)
_TIMM_HEAD_PARTS = ("global_pool", "head_drop", "fc_norm")


@dataclass(frozen=True)
class HeadConfig:
    """The classification head: ``pool`` the feature map (``pool_size``: a k×k window of stride
    k, then flatten, as Keras' ``AveragePooling2D(pool_size=(k, k))`` → ``Flatten``; unset:
    global), then the ``hidden`` dense layers, each followed by ``activation`` and ``dropout``
    (with no hidden layer, ``dropout`` sits between pooling and the output layer), then the
    output layer. Its input is the model's ``forward_features``; its ``pre_logits`` are the
    output layer's input."""

    # avg or max (global unless pool_size), or flatten (the whole feature map, as Keras Flatten)
    pool: Literal["avg", "max", "flatten"] = "avg"
    # k: pool k×k windows with stride k (Keras AveragePooling2D(pool_size=(k, k)), valid
    # padding), then flatten; null: global pooling
    pool_size: int | None = None
    hidden: tuple[int, ...] = ()  # widths of the dense layers before the output layer, e.g. [64]
    # the activation after each hidden layer
    activation: Literal["relu", "gelu", "silu", "tanh", "elu", "leaky_relu"] = "relu"
    # dropout rate after each hidden layer (none: between pooling and the output layer)
    dropout: float = 0.0
    # initialisation of the head's dense layers: torch (PyTorch's default) or keras
    # (Glorot-uniform weights, zero biases, as the seeds' Keras Dense layers)
    init: Literal["torch", "keras"] = "torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"'model.head.dropout': got {self.dropout}; expected a rate in [0, 1)")
        bad = [w for w in self.hidden if not isinstance(w, int) or isinstance(w, bool) or w < 1]
        if bad:
            raise ConfigError(f"'model.head.hidden': got {list(self.hidden)}; expected layer "
                              "widths >= 1, e.g. [64]")
        if self.pool_size is not None:
            if self.pool == "flatten":
                raise ConfigError("'model.head.pool_size': got a window with pool 'flatten'; "
                                  "use pool avg or max with pool_size, or drop pool_size")
            if self.pool_size < 1:
                raise ConfigError(f"'model.head.pool_size': got {self.pool_size}; expected an "
                                  "integer >= 1, or null for global pooling")


def _keras_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class ClassifierHead(nn.Module):
    """``pool`` → ``flatten`` → ``pre_logits`` (hidden Linear → activation → Dropout, ...) →
    ``fc`` (the output layer). Input: a (B, C, H, W) feature map, or (B, D) features of a
    model that pools inside its own forward (torchvision models)."""

    def __init__(self, cfg: HeadConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.pool: nn.Module = _pool(cfg) if len(in_shape) == 3 else nn.Identity()
        self.flatten = nn.Flatten(1)
        width = _pooled_width(cfg, in_shape)
        self.in_features = width
        layers: list[nn.Module] = []
        for units in cfg.hidden:
            layers += [nn.Linear(width, units), _ACTIVATIONS[cfg.activation](), nn.Dropout(cfg.dropout)]
            width = units
        if not cfg.hidden:
            layers.append(nn.Dropout(cfg.dropout))
        self.pre_logits = nn.Sequential(*layers)
        self.num_features = width  # the output layer's input
        self.fc = nn.Linear(width, num_classes)
        if cfg.init == "keras":
            self.apply(_keras_init)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.flatten(self.pool(x)))
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes: int) -> None:
        """A new output layer for ``num_classes`` logits (the hidden layers are kept)."""
        self.fc = nn.Linear(self.num_features, num_classes)
        if self.cfg.init == "keras":
            _keras_init(self.fc)


def _pool(cfg: HeadConfig) -> nn.Module:
    if cfg.pool == "flatten":
        return nn.Identity()
    if cfg.pool_size is None:
        return nn.AdaptiveAvgPool2d(1) if cfg.pool == "avg" else nn.AdaptiveMaxPool2d(1)
    k = cfg.pool_size
    return nn.AvgPool2d(k, k) if cfg.pool == "avg" else nn.MaxPool2d(k, k)


def _pooled_width(cfg: HeadConfig, shape: tuple[int, ...]) -> int:
    if len(shape) == 1:
        return shape[0]
    c, h, w = shape
    if cfg.pool == "flatten":
        return c * h * w
    if cfg.pool_size is None:
        return c
    return c * (h // cfg.pool_size) * (w // cfg.pool_size)


class HeadedModel(nn.Module):
    """Mixed in ahead of a model's class by :func:`install_head`: the head API over ``head``."""

    head: ClassifierHead
    replaced_head_keys: tuple[str, ...]  # the state-dict keys of the model's own head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[operator]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        self.head.reset(num_classes)

    def forward_chain(self) -> list[Step]:
        return [*feature_chain(self),
                *module_steps(self, ["head.pool", "head.flatten", "head.pre_logits", "head.fc"])]


_HEADED: dict[type, type] = {}


def _headed_class(cls: type) -> type:
    """``cls`` with :class:`HeadedModel` mixed in; named in this module so it pickles."""
    if issubclass(cls, HeadedModel):
        return cls
    if cls not in _HEADED:
        name = f"Headed{cls.__name__}"
        new = type(name, (HeadedModel, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = new
        _HEADED[cls] = new
    return _HEADED[cls]


def own_head_modules(model: nn.Module) -> list[str]:
    """Names of the modules that make up ``model``'s own head (pooling, dropout, output layer):
    the class's ``head_modules``, a torchvision model's output layer, or a timm model's
    classifier with its pooling, head dropout and head norm."""
    own = getattr(model, "head_modules", None)
    if own is not None:
        return list(own)
    if isinstance(model, TorchvisionHead):
        return [model.head_name]
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("classifier"):
        children = dict(model.named_children())
        top = str(cfg["classifier"]).split(".")[0]
        return [n for n in (*_TIMM_HEAD_PARTS, top) if n in children]
    raise ConfigError(f"'model.head': medtransfer does not know the head of {type(model).__name__}; "
                      "use a registered model, timm:<arch> or torchvision:<arch>")


def _feature_shape(model: nn.Module, in_chans: int, img_size: int) -> tuple[int, ...]:
    """Shape of ``forward_features`` for one image (built on the meta device: no compute)."""
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    try:
        with torch.no_grad():
            out = model.forward_features(torch.zeros(1, in_chans, img_size, img_size, device=device))  # type: ignore[operator]
    finally:
        model.train(was_training)
    return tuple(int(s) for s in out.shape[1:])


def install_head(model: nn.Module, cfg: HeadConfig, *, num_classes: int, in_chans: int,
                 img_size: int, name: str | None = None) -> nn.Module:
    """Replace ``model``'s own head by ``cfg``'s (in place; returns ``model``). ConfigError when
    the model's features cannot take that head (a window larger than the feature map, token
    features, pooling inside a torchvision model's forward)."""
    name = name or getattr(model, "external_name", None) or type(model).__name__
    removed = own_head_modules(model)
    keys = [f"{n}.{k}" for n in removed for k in model.get_submodule(n).state_dict()]
    for n in removed:
        if isinstance(model, TorchvisionHead):
            set_module(model, n, nn.Identity())  # torchvision's forward still calls it
        else:
            delattr(model, n)
    model.__class__ = _headed_class(type(model))
    shape = _feature_shape(model, in_chans, img_size)
    if len(shape) == 1 and (cfg.pool != "avg" or cfg.pool_size is not None):
        raise ConfigError(f"'model.head.pool': model '{name}' pools inside its own forward "
                          f"({shape[0]} features), so only pool avg without pool_size applies; "
                          "use the registered model or timm:<arch> for other pooling")
    if len(shape) not in (1, 3):
        raise ConfigError(f"'model.head': model '{name}' gives features of shape {list(shape)} "
                          "per image, not a (channels, height, width) map; model.head needs a "
                          "convolutional model")
    k = cfg.pool_size
    if k is not None and (k > shape[1] or k > shape[2]):
        raise ConfigError(f"'model.head.pool_size': got {k}, larger than the {shape[1]}×{shape[2]} "
                          f"feature map of '{name}' at {img_size} px; use a smaller window or "
                          "larger images (preprocess.size)")
    model.head = ClassifierHead(cfg, shape, num_classes)
    model.replaced_head_keys = tuple(keys)  # type: ignore[assignment]
    return model


def head_from(value: HeadConfig | Mapping[str, Any] | None) -> HeadConfig | None:
    """A :class:`HeadConfig` from itself or a mapping of its keys (strictly)."""
    if value is None or isinstance(value, HeadConfig):
        return value
    return from_dict(HeadConfig, value, "model.head")
