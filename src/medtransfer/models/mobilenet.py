"""MobileNet-V2 (torchvision, its module names) with the timm head API."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv

from medtransfer.models.chain import Step, module_steps
from medtransfer.models.registry import register_model


class MobileNetV2(tv.MobileNetV2):
    """torchvision's MobileNet-V2; ``classifier`` = [Dropout, Linear] as torchvision has it."""

    first_conv = "features.0.0"
    head_modules = ("global_pool", "classifier")  # what model.head replaces

    def __init__(self, *, num_classes: int, in_chans: int, dense_dropout: float = 0.2,
                 width_mult: float = 1.0) -> None:
        super().__init__(num_classes=num_classes, width_mult=width_mult, dropout=dense_dropout)
        if in_chans != 3:
            old = self.features[0][0]
            conv = nn.Conv2d(in_chans, old.out_channels, 3, 2, 1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            self.features[0][0] = conv
        self.num_features: int = self.last_channel
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self._modules["classifier"] = self._modules.pop("classifier")  # keep forward order

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[0](torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.classifier[1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def body_chain(self) -> list[Step]:
        return module_steps(self, ["features"])

    def forward_chain(self) -> list[Step]:
        return [*module_steps(self, ["features", "global_pool"]), Step("flatten", nn.Flatten()),
                *module_steps(self, ["classifier"])]

    def dropout_sites(self) -> list[str]:
        """Where ``conv_dropout`` goes: the last block at each resolution (before every
        stride-2 block) and the last feature layer."""
        blocks = list(self.features)
        ends = [i for i in range(len(blocks) - 1) if _stride(blocks[i + 1]) > 1]
        return [f"features.{i}" for i in [*ends, len(blocks) - 1]]

    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def reset_classifier(self, num_classes: int) -> None:
        layer = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(layer.weight, 0, 0.01)
        nn.init.zeros_(layer.bias)
        self.classifier[1] = layer


def _stride(block: nn.Module) -> int:
    """A block's downsampling: its ``stride`` (torchvision's inverted residual), else its first conv's."""
    own = getattr(block, "stride", None)
    if isinstance(own, int):
        return own
    conv = next((m for m in block.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.stride[0]) if conv is not None else 1


@register_model(family="mobilenet")
def mobilenet_v2(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
                 dense_dropout: float = 0.2, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNet-V2 (torchvision)."""
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, dense_dropout=dense_dropout,
                       width_mult=width_mult)
