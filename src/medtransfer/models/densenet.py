"""DenseNet-121 (torchvision, its module names) with the timm head API; loads torchvision's
files and CheXNet's published checkpoint (``module.densenet121.features…``, old-style
``norm.1`` names, a ``classifier.0`` of 14 outputs) by mapping their key names."""

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
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
# CheXNet (arnoweng/CheXNet): DataParallel("module.") around a wrapper whose "densenet121" is
# torchvision's model with classifier = Sequential(Linear(1024, 14), Sigmoid())
_WRAPPERS = ("module.", "densenet121.")
_SEQ_CLASSIFIER = re.compile(r"^classifier\.0\.(weight|bias)$")


class DenseNet(tv.DenseNet):
    """torchvision's DenseNet; ``forward_features`` ends with the final ReLU, as its forward."""

    first_conv = "features.conv0"
    head_modules = ("global_pool", "head_drop", "classifier")  # what model.head replaces

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
        """Published DenseNet files in torchvision's names: old-style ``norm.1`` → ``norm1``
        (torchvision's fix), and CheXNet's ``module.densenet121.`` prefix stripped and its
        ``classifier.0`` (Linear before a Sigmoid) read as the output layer ``classifier``."""
        for prefix in _WRAPPERS:
            if state and all(k.startswith(prefix) for k in state):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
        out = {}
        for key, value in state.items():
            match = _OLD_KEY.match(key)
            key = match.group(1) + match.group(2) if match else key
            out[_SEQ_CLASSIFIER.sub(r"classifier.\1", key)] = value
        return out

    def dropout_sites(self) -> list[str]:
        """Where ``conv_dropout`` goes: after the stem (before its max-pool) and every dense
        block (before its transition)."""
        return [f"features.{n}" for n, _ in self.features.named_children()
                if n == "relu0" or n.startswith("denseblock")]

    def body_chain(self) -> list[Step]:
        return module_steps(self, ["features", "final_act"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_chain(self) -> list[Step]:
        return [*self.body_chain(), *module_steps(self, ["global_pool"]),
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
