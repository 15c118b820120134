"""Inception-v3 and Inception-ResNet-v2 from timm; both need at least 75×75 px input."""

from __future__ import annotations

from torch import nn

from medtransfer.models.registry import register_model
from medtransfer.models.timm_base import timm_model


@register_model(min_img_size=75, family="inception")
def inception_v3(*, num_classes: int, in_chans: int = 3, img_size: int = 299,
                 dense_dropout: float = 0.0) -> nn.Module:
    """Inception-v3 (timm, without the auxiliary classifier)."""
    return timm_model("inception_v3", num_classes, in_chans, drop_rate=dense_dropout)


@register_model(min_img_size=75, family="inception")
def inception_resnet_v2(*, num_classes: int, in_chans: int = 3, img_size: int = 299,
                        dense_dropout: float = 0.0) -> nn.Module:
    """Inception-ResNet-v2 (timm)."""
    return timm_model("inception_resnet_v2", num_classes, in_chans, drop_rate=dense_dropout)
