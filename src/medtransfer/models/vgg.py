"""VGG as data (torchvision's ``cfgs``: conv widths and ``"M"`` for max-pool), with the same
module layout as torchvision so its ImageNet weights load by name.

``vgg16``: configuration D, 3×3 convs (+ BN with ``batch_norm``: VGG16-BN), adaptive 7×7
average pool (``layout: keras``: none, the feature map flattened as in ``keras.applications.VGG16``;
the same at 224 px), dense 4096-4096 with dropout (``dense_dropout``, 0 unless set: Keras's
VGG16 has none), then the output layer.
``vgg_small``: a small VGG — configuration D at widths ``base``·(1, 2, 4, 8, 8),
flattened conv maps, three dense layers of 64 with dropout 0.4, then the output layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.alexnet import keras_init
from medtransfer.models.chain import Step, module_steps
from medtransfer.models.registry import register_model

Layout = list[int | Literal["M"]]

cfgs: dict[str, Layout] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def scaled(layout: Layout, base: int) -> Layout:
    """``layout`` with every width scaled so the first conv has ``base`` channels."""
    first = next(v for v in layout if v != "M")
    return [v if v == "M" else max(1, v * base // int(first)) for v in layout]


def make_layers(layout: Layout, in_chans: int, batch_norm: bool) -> nn.Sequential:
    """torchvision's VGG feature stack: conv 3×3 (pad 1) → [BN] → ReLU, ``"M"`` = pool 2/2."""
    layers: list[nn.Module] = []
    ch = in_chans
    for v in layout:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(ch, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        ch = v
    return nn.Sequential(*layers)


def _torch_init(module: nn.Module) -> None:
    """torchvision's VGG initialisation."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0, 0.01)
        nn.init.zeros_(module.bias)


class VGG(nn.Module):
    """Features (``features.N``) → pool → ``classifier`` = dense layers, each Linear → ReLU →
    Dropout (kept at p=0 so indices match torchvision's), then the output Linear."""

    first_conv = "features.0"
    head_modules = ("avgpool", "classifier")  # what model.head replaces

    def __init__(
        self,
        layout: Layout,
        *,
        num_classes: int,
        in_chans: int,
        img_size: int,
        batch_norm: bool = False,
        dense: tuple[int, ...] = (4096, 4096),
        dense_dropout: float = 0.5,
        pool_size: int | None = 7,
        init: Literal["torch", "keras"] = "torch",
    ) -> None:
        super().__init__()
        self.features = make_layers(layout, in_chans, batch_norm)
        self.avgpool: nn.Module = nn.AdaptiveAvgPool2d(pool_size) if pool_size else nn.Identity()
        channels = [v for v in layout if v != "M"][-1]
        if pool_size:
            width = int(channels) * pool_size * pool_size
        else:
            with torch.no_grad():
                width = self.features(torch.zeros(1, in_chans, img_size, img_size)).numel()
        hidden: list[nn.Module] = []
        for units in dense:
            hidden += [nn.Linear(width, units), nn.ReLU(inplace=True), nn.Dropout(dense_dropout)]
            width = units
        self.classifier = nn.Sequential(*hidden, nn.Linear(width, num_classes))
        self.num_features = width
        self.num_classes = num_classes
        self.init = init
        self.apply(keras_init if init == "keras" else _torch_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def body_chain(self) -> list[Step]:
        return module_steps(self, ["features"])

    def forward_chain(self) -> list[Step]:
        return [*module_steps(self, ["features", "avgpool"]), Step("flatten", nn.Flatten()),
                *module_steps(self, ["classifier"])]

    def dropout_sites(self) -> list[str]:
        """Where ``conv_dropout`` goes: between each block's last conv (its activation) and
        the block's max-pool."""
        return [f"features.{i - 1}" for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = nn.Linear(self.num_features, num_classes)
        (keras_init if self.init == "keras" else _torch_init)(self.classifier[-1])


@register_model(min_img_size=32, family="vgg")
def vgg16(
    *,
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 224,
    batch_norm: bool = False,
    dense_dropout: float = 0.5,
    dense: tuple[int, ...] = (4096, 4096),
    layout: Literal["torchvision", "keras"] = "torchvision",
) -> VGG:
    """VGG16 (configuration D) as torchvision builds it; ``batch_norm`` gives VGG16-BN;
    ``layout: keras`` flattens the feature map without torchvision's adaptive 7×7 pool."""
    if layout not in ("torchvision", "keras"):
        raise ConfigError(f"'model.options.layout': got {layout!r}; allowed: torchvision, keras")
    return VGG(cfgs["D"], num_classes=num_classes, in_chans=in_chans, img_size=img_size,
               batch_norm=batch_norm, dense=dense, dense_dropout=dense_dropout,
               pool_size=None if layout == "keras" else 7)


@register_model(min_img_size=32, family="vgg")
def vgg_small(
    *,
    num_classes: int,
    in_chans: int = 1,
    img_size: int = 128,
    base: int = 8,
    batch_norm: bool = False,
    dense_dropout: float = 0.4,
    dense: tuple[int, ...] = (64, 64, 64),
    init: Literal["torch", "keras"] = "keras",
) -> VGG:
    """A small VGG: configuration D scaled to ``base`` channels, flatten, dense 64-64-64."""
    return VGG(scaled(cfgs["D"], base), num_classes=num_classes, in_chans=in_chans,
               img_size=img_size, batch_norm=batch_norm, dense=dense, dense_dropout=dense_dropout,
               pool_size=None, init=init)
