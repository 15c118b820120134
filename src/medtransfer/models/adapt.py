"""Grayscale images into RGB models (the in-channels policy), and where a model's input conv is."""

from __future__ import annotations

import enum

import torch
from torch import nn


class InChansPolicy(enum.StrEnum):
    """How grayscale images meet a model: ``native`` builds it for the images' channel count;
    ``repeat`` builds a 3-channel model and repeats the grey channel ×3 at its first conv;
    ``sum`` builds a 1-channel model whose first conv gets RGB weights summed over channels."""

    NATIVE = "native"
    REPEAT = "repeat"
    SUM = "sum"


def first_conv_name(model: nn.Module) -> str:
    """Name of the module that sees the input: the class's ``first_conv`` attribute, timm's
    ``pretrained_cfg['first_conv']``, else the first Conv2d registered."""
    name = getattr(model, "first_conv", None)
    if name is None:
        name = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if name is None:
        name = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if name is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d; cannot find its input conv")
    return str(name)


def input_conv(model: nn.Module) -> nn.Module:
    return model.get_submodule(first_conv_name(model))


class RepeatGray:
    """Forward pre-hook for the input conv: a (B, 1, H, W) batch is repeated to 3 channels.

    A hook rather than a wrapper module, so the model's parameter names stay those of its
    pretrained weights and every entry point (``forward``, ``forward_features``) sees it.
    """

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x, *args[1:])


def apply_in_chans_policy(model: nn.Module, policy: InChansPolicy) -> None:
    """Record ``policy`` on the model and, for ``repeat``, install :class:`RepeatGray`."""
    model.in_chans_policy = policy.value  # type: ignore[assignment]
    if policy is InChansPolicy.REPEAT:
        input_conv(model).register_forward_pre_hook(RepeatGray())
