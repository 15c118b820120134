"""``conv_dropout`` for architectures built as stages of blocks (ResNet, DenseNet, VGG,
MobileNet, EfficientNet, Inception, any ``timm:`` model): dropout on the feature map at the end
of every stage, where its convolutions end and before the next downsampling (a max-pool, a
transition or a strided conv) — "dropout between the convolutional and max
pooling layers of each block", placed without renaming a single pretrained tensor.

The sites are the class's ``dropout_sites()``, else timm's ``feature_info`` (the output of each
reduction stage). Each site's dropout is a module of ``model.block_dropout`` (so train/eval
mode, freezing and the cached-activation checks see it) applied to the site's output by a
forward hook; a site that is an ``nn.Sequential`` hooks its last block, so the model's forward
chain (which runs a Sequential's children one by one) applies it too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medtransfer.errors import ConfigError

__all__ = ["add_block_dropout", "dropout_sites"]


def dropout_sites(model: nn.Module) -> list[str]:
    """Module names whose outputs end a stage; ConfigError when the model names none."""
    own = getattr(model, "dropout_sites", None)
    if callable(own):
        return list(own())
    info = getattr(model, "feature_info", None)
    modules = getattr(info, "module_name", None)  # timm's FeatureInfo
    if callable(modules):
        return list(modules())
    if isinstance(info, list) and all(isinstance(i, dict) and "module" in i for i in info):
        return [str(i["module"]) for i in info]
    name = getattr(model, "external_name", None) or type(model).__name__
    raise ConfigError(f"'model.conv_dropout': model '{name}' does not say where its stages end; "
                      "use a registered model or timm:<arch> (torchvision models: not supported)")


def _leaf(model: nn.Module, name: str) -> str:
    """``name``, or its last block when it is an ``nn.Sequential`` (recursively)."""
    module = model.get_submodule(name)
    while isinstance(module, nn.Sequential) and len(module):
        child, module = list(module.named_children())[-1]
        name = f"{name}.{child}"
    return name


class DropoutAfter:
    """Forward hook: the site's output through its dropout module."""

    def __init__(self, drop: nn.Module) -> None:
        self.drop = drop

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return self.drop(output)


def add_block_dropout(model: nn.Module, rate: float) -> list[str]:
    """Dropout of ``rate`` after every stage of ``model`` (see the module docstring); returns
    the module names it follows."""
    sites = [_leaf(model, s) for s in dropout_sites(model)]
    model.block_dropout = nn.ModuleDict()
    for site in sites:
        drop = nn.Dropout(rate)
        model.block_dropout[site.replace(".", "_")] = drop
        model.get_submodule(site).register_forward_hook(DropoutAfter(drop))
    return sites
