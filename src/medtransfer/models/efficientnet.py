"""EfficientNet-B0 and EfficientNet-Lite0 from timm.

Lite0 defaults to TensorFlow "same" padding and BN eps 1e-3 (timm's ``tf_efficientnet_lite0``),
the layout of Google's published weights; ``tf_padding: false`` gives timm's PyTorch-native
variant (symmetric padding).
"""

from __future__ import annotations

from timm.models.efficientnet import EfficientNet
from torch import nn

from medtransfer.models.chain import Step, module_steps, register_body
from medtransfer.models.registry import register_model
from medtransfer.models.timm_base import timm_model


def _efficientnet_body(model: nn.Module) -> list[Step]:
    return module_steps(model, ["conv_stem", "bn1", "blocks", "conv_head", "bn2"])


register_body(EfficientNet, _efficientnet_body)


@register_model(family="efficientnet")
def efficientnet_b0(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
                    dense_dropout: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    """EfficientNet-B0 (timm)."""
    return timm_model("efficientnet_b0", num_classes, in_chans, drop_rate=dense_dropout,
                      drop_path_rate=drop_path_rate)


@register_model(family="efficientnet")
def efficientnet_lite0(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
                       dense_dropout: float = 0.0, drop_path_rate: float = 0.0,
                       tf_padding: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (timm): no squeeze-excite, ReLU6, fixed stem and head."""
    arch = "tf_efficientnet_lite0" if tf_padding else "efficientnet_lite0"
    return timm_model(arch, num_classes, in_chans, drop_rate=dense_dropout, drop_path_rate=drop_path_rate)
