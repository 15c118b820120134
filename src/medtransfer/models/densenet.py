"""DenseNet-121 (torchvision, its module names) with the timm head API."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models import densenet as tv

from medtransfer.models.chain import Step, module_steps
from medtransfer.models.registry import register_model

# torchvision's published DenseNet files name layers "norm.1"; its code loads them as "norm1".
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class DenseNet(tv.DenseNet):
    """torchvision's DenseNet; ``forward_features`` ends with the final ReLU, as its forward."""

    first_conv = "features.conv0"

    def __init__(self, *, num_classes: int, in_chans: int, dense_dropout: float = 0.0,
                 growth_rate: int = 32, block_config: tuple[int, int, int, int] = (6, 12, 24, 16),
                 num_init_features: int = 64) -> None:
        super().__init__(growth_rate, block_config, num_init_features, num_classes=num_classes)
        if in_chans != 3:
            conv = nn.Conv2d(in_chans, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            self.features.conv0 = conv
        linear = self._modules["classifier"]
        assert isinstance(linear, nn.Linear)
        self.num_features: int = linear.in_features
        self.final_act = nn.ReLU(inplace=False)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dense_dropout)
        # The classifier moves behind the new head modules: registration order = forward order.
        self._modules["classifier"] = self._modules.pop("classifier")

    @staticmethod
    def checkpoint_filter(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's checkpoint key fix (``norm.1`` → ``norm1``)."""
        out = {}
        for key, value in state.items():
            match = _OLD_KEY.match(key)
            out[match.group(1) + match.group(2) if match else key] = value
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_chain(self) -> list[Step]:
        return [*module_steps(self, ["features", "final_act", "global_pool"]),
                Step("flatten", nn.Flatten()), *module_steps(self, ["head_drop", "classifier"])]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)
        nn.init.zeros_(self.classifier.bias)


@register_model(min_img_size=29, family="densenet")
def densenet121(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
                dense_dropout: float = 0.0) -> DenseNet:
    """DenseNet-121 (torchvision): growth 32, blocks 6-12-24-16."""
    return DenseNet(num_classes=num_classes, in_chans=in_chans, dense_dropout=dense_dropout)
