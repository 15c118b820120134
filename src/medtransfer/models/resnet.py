"""ResNets: torchvision's ResNet-18/50/152 (its module names, so its ImageNet weights load as
they are) and the N-layer ResNet of the Keras CIFAR example, the "ResNet v1" whose depth is 6n + 2.

ResNet-50/152 take ``layout``: ``torchvision`` (v1.5: a block's stride in its 3×3 conv, convs
without biases) or ``keras`` (``keras.applications.ResNet50`` / ``ResNet152``, v1: the stride
in the block's first 1×1 conv, every conv with a bias), so Keras-application weights load
(``model.weights: keras:PATH``).

Both add the timm head API and an optional dropout before the output layer (``dense_dropout``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.models import resnet as tv

from medtransfer.errors import ConfigError
from medtransfer.models.chain import Step, module_steps
from medtransfer.models.registry import register_model


class _ResNetHead:
    """Head API shared by both ResNets: global average pool → dropout → ``fc``."""

    avgpool: nn.Module
    head_drop: nn.Module
    fc: nn.Linear
    num_features: int
    head_modules = ("avgpool", "head_drop", "fc")  # what model.head replaces
    stages: tuple[str, ...]

    def body_chain(self) -> list[Step]:
        raise NotImplementedError

    def forward_chain(self) -> list[Step]:
        return [*self.body_chain(), *module_steps(self, ["avgpool"]), Step("flatten", nn.Flatten()),  # type: ignore[arg-type]
                *module_steps(self, ["head_drop", "fc"])]  # type: ignore[arg-type]

    def dropout_sites(self) -> list[str]:
        """Where ``conv_dropout`` goes: the end of every residual stage (and of the stem, before
        its max-pool, where it has one)."""
        return [*(["relu"] if hasattr(self, "maxpool") else []), *self.stages]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


def _insert_head_drop(model: nn.Module, rate: float) -> None:
    """Register ``head_drop`` just before ``fc``, keeping registration order = forward order."""
    model.head_drop = nn.Dropout(rate)
    model._modules["fc"] = model._modules.pop("fc")


class ResNet(_ResNetHead, tv.ResNet):
    """torchvision's ResNet with a configurable input conv and the timm head API."""

    first_conv = "conv1"
    stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, block: type[tv.BasicBlock | tv.Bottleneck], layers: list[int], *,
                 num_classes: int, in_chans: int, dense_dropout: float = 0.0) -> None:
        super().__init__(block, layers, num_classes=num_classes)
        if in_chans != 3:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.num_features = self.fc.in_features
        _insert_head_drop(self, dense_dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def body_chain(self) -> list[Step]:
        return module_steps(self, ["conv1", "bn1", "relu", "maxpool", *self.stages])

    def keras_order(self) -> list[str]:
        """Module names in Keras's layer order: a block's shortcut conv comes before its last
        conv, its shortcut BN before its last BN (registration order otherwise)."""
        names = [n for n, _ in self.named_modules()]
        for stage in self.stages:
            for i, block in enumerate(self.get_submodule(stage)):
                if getattr(block, "downsample", None) is None:
                    continue
                p = f"{stage}.{i}"
                for name in (f"{p}.downsample.0", f"{p}.downsample.1"):
                    names.remove(name)
                names.insert(names.index(f"{p}.conv3"), f"{p}.downsample.0")
                names.insert(names.index(f"{p}.bn3"), f"{p}.downsample.1")
        return names


def _biased(conv: nn.Conv2d, stride: int | tuple[int, ...] | None = None,
            padding: int | None = None) -> nn.Conv2d:
    """``conv`` rebuilt with a bias (and another stride / padding)."""
    s = conv.stride if stride is None else stride
    p = conv.padding if padding is None else padding
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=s, padding=p,  # type: ignore[arg-type]
                     bias=True)


def _keras_layout(model: ResNet) -> ResNet:
    """Keras's ResNet v1 (see the module docstring), in place."""
    model.conv1 = _biased(model.conv1)
    for stage in model.stages:
        for block in model.get_submodule(stage):
            assert isinstance(block, tv.Bottleneck)
            stride = block.conv2.stride
            block.conv1 = _biased(block.conv1, stride=stride)
            block.conv2 = _biased(block.conv2, stride=1, padding=1)
            block.conv3 = _biased(block.conv3)
            if block.downsample is not None:
                block.downsample[0] = _biased(block.downsample[0])
    return model


Layout = Literal["torchvision", "keras"]


@register_model(family="resnet")
def resnet18(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
             dense_dropout: float = 0.0) -> ResNet:
    """ResNet-18 (torchvision)."""
    return ResNet(tv.BasicBlock, [2, 2, 2, 2], num_classes=num_classes, in_chans=in_chans,
                  dense_dropout=dense_dropout)


@register_model(family="resnet")
def resnet50(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
             dense_dropout: float = 0.0, layout: Layout = "torchvision") -> ResNet:
    """ResNet-50 (torchvision v1.5, or Keras's v1 with ``layout: keras``)."""
    model = ResNet(tv.Bottleneck, [3, 4, 6, 3], num_classes=num_classes, in_chans=in_chans,
                   dense_dropout=dense_dropout)
    return _keras_layout(model) if _layout(layout) == "keras" else model


@register_model(family="resnet")
def resnet152(*, num_classes: int, in_chans: int = 3, img_size: int = 224,
              dense_dropout: float = 0.0, layout: Layout = "torchvision") -> ResNet:
    """ResNet-152 (torchvision v1.5, or Keras's v1 with ``layout: keras``)."""
    model = ResNet(tv.Bottleneck, [3, 8, 36, 3], num_classes=num_classes, in_chans=in_chans,
                   dense_dropout=dense_dropout)
    return _keras_layout(model) if _layout(layout) == "keras" else model


def _layout(layout: str) -> str:
    if layout not in ("torchvision", "keras"):
        raise ConfigError(f"'model.options.layout': got {layout!r}; allowed: torchvision, keras")
    return layout


class CifarResNet(_ResNetHead, nn.Module):
    """Keras' CIFAR ResNet v1: 3×3 stem, three stages of n basic blocks at widths
    base·(1, 2, 4) (strides 1, 2, 2), global average pool, output layer."""

    first_conv = "conv1"
    stages = ("layer1", "layer2", "layer3")

    def __init__(self, depth: int, *, base: int, num_classes: int, in_chans: int,
                 dense_dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(
                f"'model.options.depth': got {depth!r}; allowed: 6n + 2 for n >= 1 "
                "(8, 14, 20, 32, 44, 56, 110)"
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, base, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(base, base, n, 1)
        self.layer2 = self._stage(base, 2 * base, n, 2)
        self.layer3 = self._stage(2 * base, 4 * base, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dense_dropout)
        self.num_features = 4 * base
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(tv.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [tv.BasicBlock(inplanes, planes, stride, down)]
        layers += [tv.BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def body_chain(self) -> list[Step]:
        return module_steps(self, ["conv1", "bn1", "relu", *self.stages])


@register_model(family="resnet")
def resnet_cifar(*, num_classes: int, in_chans: int = 1, img_size: int = 128, depth: int = 20,
                   base: int = 16, dense_dropout: float = 0.0) -> CifarResNet:
    """The CIFAR N-layer ResNet: ``depth`` = 6n + 2 (ResNet-20 by default), widths from ``base``."""
    return CifarResNet(depth, base=base, num_classes=num_classes, in_chans=in_chans,
                       dense_dropout=dense_dropout)
