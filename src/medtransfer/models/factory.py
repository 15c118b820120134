"""``create_model(name, pretrained=..., ...)``, as timm's: an architecture by name, randomly
initialised or with its default pretrained weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models import registry
from medtransfer.models.adapt import InChansPolicy
from medtransfer.models.config import ModelConfig
from medtransfer.models.external import split_name
from medtransfer.models.head import HeadConfig, head_from
from medtransfer.models.pretrained import build_pretrained
from medtransfer.models.weights import imagenet_weights

__all__ = ["create_model"]


def create_model(
    name: str, pretrained: bool = False, *, num_classes: int, in_chans: int = 1, img_size: int = 224,
    head: HeadConfig | Mapping[str, Any] | None = None, **kwargs: Any
) -> nn.Module:
    """Build model ``name`` (registered, ``timm:<arch>`` or ``torchvision:<arch>``); options it
    does not take are an error naming them. ``head`` (a :class:`HeadConfig` or its keys)
    replaces the architecture's own classification head.

    ``pretrained=True`` starts from the architecture's default weights (ImageNet), as timm does:
    the classifier made anew for ``num_classes``, and for ``in_chans=1`` the first convolution
    summed over RGB. The weights object (source, licence, mean/std to normalise inputs with) is
    the model's ``pretrained_weights``; an architecture without default weights is an error
    naming those that have them.
    """
    if not pretrained:
        return registry.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                                     head=head, **kwargs)
    if split_name(name) is None and name not in {w.arch for w in imagenet_weights()}:
        registry.model_info(name)  # an unknown name: the registry's error, with the closest name
        have = ", ".join(sorted({w.arch for w in imagenet_weights()}))
        raise ConfigError(f"'pretrained': got True, but model {name!r} has no default pretrained "
                          f"weights; models with ImageNet weights: {have}, and timm:/torchvision: "
                          "architectures (their libraries' weights)")
    grey = InChansPolicy.SUM if in_chans == 1 else InChansPolicy.NATIVE
    cfg = ModelConfig(name=name, options=dict(kwargs), head=head_from(head), weights="imagenet",
                      binary_output="pair", in_chans_policy=grey)
    built = build_pretrained(cfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    model = built.model
    model.pretrained_weights = built.weights  # type: ignore[assignment]  # as timm's pretrained_cfg
    return model
